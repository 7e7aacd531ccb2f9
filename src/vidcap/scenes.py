"""Scenes of a video: shot boundaries found by PySceneDetect's detectors, or fixed windows.

A video's frames are numbered as `vidcap.frames.container.scan` numbers them (frame i is the i-th smallest
timestamp of the decodable packets; AVI and other files whose timestamps count packets: demux order). Time is
the frame's pts less the stream's start, as `vidcap.frames.span` reads a range row (frame 0 is at 0.0 s but
for a file whose first packets cannot be shown; counted frames: i / fps), so a scene [start_time, end_time) holds exactly the
frames [start_frame, end_frame), the range-row contract every stage reads (docs/scenes.md).

Detection decodes every frame once with PyAV, scaled down by FFmpeg's scaler to DETECT_WIDTH pixels wide (the
detectors' scores barely change with size, the time they take does), and hands the frames to PySceneDetect's
`ContentDetector` or `AdaptiveDetector` directly: its own `SceneManager` would decode at full size first.
Window mode reads no picture at all: the frame timestamps from the demuxer are enough.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from .errors import DECODE, RANGE, SHORT, UsageError, VidcapError
from .frames.container import av_module, ffmpeg_message, open_input, video_stream
from .frames.container import scan as scan_container
from .frames.span import clock

DETECTORS = ("content", "adaptive")
# Chosen on the development half of docs/scenes.md's evaluation set (the other half reports the figures):
# adaptive at 2.0 had the best F1 there (content keeps PySceneDetect's 27, its best threshold there too).
DEFAULT_DETECTOR = "adaptive"
DEFAULT_THRESHOLDS = {"content": 27.0, "adaptive": 2.0}
DETECT_WIDTH = 160  # pixels; measured in docs/scenes.md (speed and recall against the width)
DEFAULT_MIN_SCENE = 0.6  # seconds: PySceneDetect's own default (15 frames at 25 fps)
ASSUMED_FPS = 25.0  # a stream that states no frame rate
MISSING_FRAMES_OK = 0.01  # frames the decoder may drop (damage) before the video counts as `short`
SCENE_FIELDS = {  # one scene's fields and their SQL types: the output columns of `vidcap scenes`
    "scene": "BIGINT",
    "start_time": "DOUBLE",
    "end_time": "DOUBLE",
    "start_frame": "BIGINT",
    "end_frame": "BIGINT",
    "duration": "DOUBLE",
}


@dataclass
class Timeline:
    """When each frame of a video starts: `times[i]` for frame i, then `times[n]` = the end of the last frame
    (seconds from frame 0); `fps` is the stream's average rate."""

    times: np.ndarray
    fps: float

    @property
    def frames(self) -> int:
        return len(self.times) - 1

    @property
    def duration(self) -> float:
        return float(self.times[-1])


@dataclass(frozen=True)
class SceneOptions:
    """How a video is split: `window` seconds (fixed windows; 0: detect shots with `detector`), the
    detector's `threshold` (None: its default), `min_len` and `max_len` seconds (0: no limit)."""

    detector: str = DEFAULT_DETECTOR
    threshold: float | None = None
    min_len: float = DEFAULT_MIN_SCENE
    max_len: float = 0.0
    window: float = 0.0
    width: int = DETECT_WIDTH

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise UsageError(f"--detector must be one of {', '.join(DETECTORS)}, not '{self.detector}'.")
        for name, value in (("--min-scene-len", self.min_len), ("--max-scene-len", self.max_len)):
            if not (math.isfinite(value) and value >= 0):
                raise UsageError(f"{name} must be 0 or more seconds, not {value}.")
        if not (math.isfinite(self.window) and self.window >= 0):
            raise UsageError(f"--window must be 0 or more seconds, not {self.window}.")
        if self.max_len and self.max_len < 2 * self.min_len:
            raise UsageError(
                f"--max-scene-len {self.max_len} is under twice --min-scene-len {self.min_len}: the even split "
                "of a long scene would give pieces under the minimum; raise it or lower --min-scene-len."
            )
        if self.window and self.window < self.min_len:
            raise UsageError(f"--window {self.window} is shorter than --min-scene-len {self.min_len}.")
        if self.threshold is not None and not (math.isfinite(self.threshold) and self.threshold > 0):
            raise UsageError(f"--threshold must be above 0, not {self.threshold}.")
        if self.width < 16:
            raise UsageError(f"the detection width must be at least 16 pixels, not {self.width}.")

    @property
    def cut_threshold(self) -> float:
        return DEFAULT_THRESHOLDS[self.detector] if self.threshold is None else float(self.threshold)


# -- where the frames are ---------------------------------------------------------------------------------
def timeline(path) -> tuple[Timeline, object]:
    """The video's frame times from a demux pass (no decoding), and its scan (frame pts, for matching decoded
    frames). VidcapError for a file that is not a readable video or was cut short."""
    av = av_module()
    try:
        with open_input(path) as container:
            stream = video_stream(container)
            scan = scan_container(container, stream)
            tb, origin = clock(stream)
            origin = origin if stream.start_time is not None else scan.pts[0]
    except av.error.FFmpegError as e:
        raise VidcapError(DECODE, ffmpeg_message(e, path if isinstance(path, str) else None)) from None
    fps = scan.fps if scan.fps and scan.fps > 0 else ASSUMED_FPS
    if scan.pts_ok:  # time 0 is the stream's start, as vidcap.frames.span reads a range row
        pts = np.asarray(scan.pts, dtype=np.float64)
        starts = np.maximum((pts - origin) * tb, 0.0)
        step = float(np.median(np.diff(starts))) if len(starts) > 1 else 1.0 / fps
        end = starts[-1] + (step if step > 0 else 1.0 / fps)
    else:
        starts = np.arange(scan.total, dtype=np.float64) / fps
        end = scan.total / fps
    return Timeline(np.append(starts, end), float(fps)), scan


# -- detection -----------------------------------------------------------------------------------------------
def require_detector() -> None:
    """UsageError naming the install line when PySceneDetect is missing (said before any row is read)."""
    try:
        import scenedetect  # noqa: F401
    except ImportError:
        raise UsageError(
            "shot detection needs PySceneDetect; install it with `pip install 'vidcap[scenes]'` "
            "(or `pip install scenedetect-headless`), or use --window SECONDS."
        ) from None


def detector_for(opts: SceneOptions, fps: float):
    """A fresh PySceneDetect detector for one video (they keep per-video state)."""
    require_detector()
    from scenedetect import AdaptiveDetector, ContentDetector

    if opts.detector == "adaptive":
        return AdaptiveDetector(adaptive_threshold=opts.cut_threshold, min_scene_len=float(opts.min_len))
    return ContentDetector(threshold=opts.cut_threshold, min_scene_len=float(opts.min_len))


def detect_cuts(path, opts: SceneOptions, line: Timeline, scan, first: int, stop: int) -> list[int]:
    """The frames of [first, stop) where a new shot starts (ascending, never `first`)."""
    from scenedetect import FrameTimecode

    det = detector_for(opts, line.fps)
    av = av_module()
    level = av.logging.get_level()
    # Frame-threaded decoding with no log callback until every PyAV object of the decode is freed: a decoder
    # thread that logs calls into Python for the GIL, which the thread freeing the codec context holds while
    # it waits for that thread (PyAV's callback): a deadlock seen when a range row stops decoding mid-stream.
    try:
        cuts, seen, last, error = _decode_cuts(path, det, line, scan, first, stop, opts.width)
    finally:
        av.logging.set_level(level)
    if seen == 0:
        raise VidcapError(DECODE, error or "no frame could be decoded")
    want = stop - first
    if want - seen > max(2, MISSING_FRAMES_OK * want):
        raise VidcapError(SHORT, f"only {seen} of {want} frames decoded")
    cuts += det.post_process(FrameTimecode(last, line.fps))
    return sorted({int(c.frame_num) for c in cuts if first < int(c.frame_num) < stop})


def _decode_cuts(path, det, line: Timeline, scan, first: int, stop: int, width: int):
    """(cuts, frames seen, last frame, FFmpeg's error or "") of the detector over [first, stop); every PyAV
    object is freed when this returns (an FFmpeg error is returned as text, so no traceback keeps one)."""
    from scenedetect import FrameTimecode

    av = av_module()
    index = {p: i for i, p in enumerate(scan.pts)} if scan.pts_ok else None
    cuts: list = []
    seen, last, error = 0, -1, ""
    try:
        with open_input(path) as container:
            av.logging.set_level(None)  # after opening: open_input turns FFmpeg's errors back on
            stream = video_stream(container)
            stream.thread_type = "AUTO"
            w, h = _detect_size(stream.width, stream.height, width)
            if first > 0 and scan.seekable:  # a range row: from the keyframe before its first frame
                key = scan.key_index[max(bisect_right(scan.key_index, first) - 1, 0)]
                container.seek(scan.pts[key], stream=stream, backward=True, any_frame=False)
            n, frames = 0, _frames(container, stream)
            try:
                for frame in frames:
                    i = n if index is None else index.get(frame.pts, -1)
                    n += 1
                    if i < first or i <= last:  # before the range (or the first keyframe), or out of order
                        continue
                    if i >= stop:
                        break
                    img = frame.to_ndarray(width=w, height=h, format="bgr24")
                    cuts += det.process_frame(FrameTimecode(i, line.fps), img)
                    seen, last = seen + 1, i
            finally:
                frames.close()
    except av.error.FFmpegError as e:
        error = ffmpeg_message(e, path if isinstance(path, str) else None)
    frame = stream = container = frames = None  # noqa: F841 (freed here, while no log callback is set)
    return cuts, seen, last, error


def _frames(container, stream):
    for packet in container.demux(stream):
        yield from packet.decode()


def _detect_size(width: int, height: int, target: int) -> tuple[int, int]:
    """The frame size detection works at: `target` pixels wide (never wider than the video), even numbers."""
    width, height = max(2, int(width or target)), max(2, int(height or target))
    w = min(width, target)
    h = max(2, round(height * w / width))
    return w - w % 2 or 2, h - h % 2 or 2


# -- scenes from cuts or windows ----------------------------------------------------------------------------
def cut_bounds(frames: int, cuts: list[int]) -> list[tuple[int, int]]:
    """[start, end) frame ranges between cuts, covering every frame."""
    edges = [0, *sorted({c for c in cuts if 0 < c < frames}), frames]
    return list(zip(edges[:-1], edges[1:], strict=False))


def window_bounds(times: np.ndarray, size: float, min_len: float) -> list[tuple[int, int]]:
    """Fixed windows of `size` seconds ([0, size), [size, 2 size), ...) as frame ranges: each window holds
    the frames that start inside it; a window with no frame is dropped, and a last window shorter than
    `min_len` joins the one before it (a video shorter than that is one window)."""
    n = len(times) - 1
    if n <= 0:
        return []
    duration = float(times[-1])
    k = max(1, math.ceil(duration / size - 1e-9))
    edges = np.searchsorted(times[:-1] + 1e-6, np.arange(k) * size, side="left").tolist() + [n]  # 1 us: float times
    bounds = [(a, b) for a, b in zip(edges[:-1], edges[1:], strict=False) if b > a]
    if len(bounds) > 1 and times[bounds[-1][1]] - times[bounds[-1][0]] < min_len:
        bounds[-2:] = [(bounds[-2][0], bounds[-1][1])]
    return bounds


def split_long(bounds: list[tuple[int, int]], times: np.ndarray, max_len: float) -> list[tuple[int, int]]:
    """Each range longer than `max_len` seconds split into the fewest equal pieces (by time, at frame starts)
    that are each at most `max_len` long (as near as frames allow); 0: no limit."""
    if not max_len:
        return list(bounds)
    out = []
    for a, b in bounds:
        length = float(times[b] - times[a])
        pieces = math.ceil(length / max_len - 1e-9)
        if pieces <= 1 or b - a < 2:
            out.append((a, b))
            continue
        marks = times[a] + length * np.arange(1, pieces) / pieces
        inner = np.searchsorted(times[a:b], marks, side="left") + a
        edges = sorted({a, *(int(x) for x in inner if a < x < b), b})
        out += list(zip(edges[:-1], edges[1:], strict=False))
    return out


def scene_rows(line: Timeline, bounds: list[tuple[int, int]]) -> list[dict]:
    """One dict per scene (SCENE_FIELDS): times rounded to microseconds (frames are a millisecond or more
    apart), one range's end_time the next one's start_time."""
    rows = []
    for k, (a, b) in enumerate(bounds):
        start, end = _us(line.times[a]), _us(line.times[b])
        rows.append(
            {
                "scene": k,
                "start_time": start,
                "end_time": end,
                "start_frame": int(a),
                "end_frame": int(b),
                "duration": round(end - start, 6),
            }
        )
    return rows


def _us(t: float) -> float:
    return round(float(t), 6) + 0.0


def scenes(path, opts: SceneOptions, span: tuple[float, float] | None = None) -> tuple[list[dict], float]:
    """The scenes of one video, or of the part `span` (start, end seconds) of it (times stay the file's), as
    a list of SCENE_FIELDS dicts, and the video's frame rate."""
    line, scan = timeline(path)
    first, stop = 0, line.frames
    if span is not None:
        first, stop = (int(x) for x in np.searchsorted(line.times[:-1] + 1e-6, span, side="left"))
        if stop <= first:
            raise VidcapError(RANGE, f"no frame in [{span[0]!r}, {span[1]!r}): the video is {line.duration:.3f} s")
    times = line.times[first : stop + 1] if stop < line.frames else line.times[first:]
    if opts.window:  # windows of the file's time (of a range row: from its start)
        local = window_bounds(np.maximum(times - (span[0] if span else 0.0), 0.0), opts.window, opts.min_len)
        bounds = [(a + first, b + first) for a, b in local]
    else:
        cuts = detect_cuts(path, opts, line, scan, first, stop)
        bounds = [(a + first, b + first) for a, b in cut_bounds(stop - first, [c - first for c in cuts])]
    return scene_rows(line, split_long(bounds, line.times, opts.max_len)), line.fps


def parse_seconds(text: str, flag: str) -> float:
    """`10`, `10s`, `2.5 s`, `1m` or `1.5min` as seconds; UsageError otherwise."""
    t = str(text).strip().lower().replace(" ", "")
    scale = 1.0
    for suffix, mult in (("min", 60.0), ("m", 60.0), ("s", 1.0)):
        if t.endswith(suffix):
            t, scale = t[: -len(suffix)], mult
            break
    try:
        value = float(t) * scale
    except ValueError:
        raise UsageError(f"{flag} '{text}' is not a number of seconds (e.g. 10 or 10s).") from None
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{flag} must be more than 0 seconds, not '{text}'.")
    return value
