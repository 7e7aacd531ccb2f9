"""A dense, cheap frame reader for motion: sequential decode, luma plane only, downscaled.

Motion needs many closely spaced frames (fast pans are split into short steps), not a few sharp
RGB ones, so this reads every frame in order (no seeking), keeps at most `max_frames` evenly
spaced ones plus the last, and uses the decoder's luma plane directly (no colour conversion).
With `lazy`, a small frame is kept at its coded size and scaled down to the working width only when
the estimator first reads it (`WorkFrames`): it reads about a quarter of a short clip's frames, and the
downscale (INTER_AREA at a fractional ratio) cost more than the decode.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidcap import errors
from vidcap.errors import VidcapError
from vidcap.frames.container import PTS_UNTRUSTED, av_module, check_frame_count, ffmpeg_message
from vidcap.frames.span import BACKOFF_S, EPS_S, check_span, clock, counted

# 8-bit formats whose first plane is the luma image
_LUMA8 = frozenset(
    {
        "yuv420p",
        "yuvj420p",
        "yuv422p",
        "yuvj422p",
        "yuv444p",
        "yuvj444p",
        "yuv440p",
        "yuvj440p",
        "yuv411p",
        "yuv410p",
        "nv12",
        "nv21",
        "gray",
    }
)


LAZY_PIXELS = 640 * 480  # frames up to this size are kept at coded size with `lazy` (64 of them: 20 MB)
COARSE = 8  # `WorkFrames.coarse_std` averages blocks of this many coded pixels a side


class WorkFrames:
    """[T,h,w] uint8 luma frames at the working width, each scaled down when first read and then kept.

    `frames[k]` is frame k (the same pixels `_luma` gives), `frames[list]` the frames named (sharing
    what was scaled), `np.asarray(frames)` all of them stacked; `shape`, `dtype` and `len` as an array's."""

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, planes: list[tuple[np.ndarray, tuple[int, int] | None, int]], done: list | None = None):
        self._planes = planes  # (luma at coded size, its working size or None when it needs no scaling, rotation)
        self._done: list[np.ndarray | None] = done if done is not None else [None] * len(planes)
        shapes = {_shape(*p) for p in planes}
        if len(shapes) > 1:  # as np.stack says of frames that change size mid-stream
            raise ValueError("all input arrays must have the same shape")
        self.shape = (len(planes), *(shapes.pop() if shapes else (0, 0)))

    def __len__(self) -> int:
        return len(self._planes)

    def __getitem__(self, k):
        if isinstance(k, (int, np.integer)):
            k = int(k)
            frame = self._done[k]
            if frame is None:
                frame = self._done[k] = _finish(*self._planes[k])
            return frame
        keep = [int(i) for i in k]
        return WorkFrames([self._planes[i] for i in keep], [self._done[i] for i in keep])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = np.stack([self[k] for k in range(len(self))]) if len(self) else np.zeros(self.shape, np.uint8)
        return out if dtype is None else out.astype(dtype)

    def coded(self, k: int) -> tuple[np.ndarray, float]:
        """(frame k's luma plane as decoded: coded size, not rotated; the factor that scales it to the working
        width, 1.0 when it needs none). For `dense.block_ratio`: the codec's block grid lies on the coded pixels."""
        luma, size, _ = self._planes[k]
        return luma, 1.0 if size is None else size[0] / luma.shape[1]

    def coarse_std(self, k: int) -> float | None:
        """Spread of frame k averaged over COARSE x COARSE blocks of its coded pixels (no scaling to the working
        size needed); None when the frame is not kept at coded size, or too small. Block averages this
        coarse vary less than the working frame's quarter-size ones (`dense.has_picture`): a frame whose
        coarse spread is well above that test's floor shows a picture."""
        luma, size, _ = self._planes[k]
        h, w = luma.shape[0] // COARSE, luma.shape[1] // COARSE
        if size is None or h < 2 or w < 2:
            return None
        import cv2

        small = cv2.resize(luma[: h * COARSE, : w * COARSE], (w, h), interpolation=cv2.INTER_AREA)
        return float(cv2.meanStdDev(small)[1][0, 0])


@dataclass
class GrayClip:
    frames: np.ndarray | WorkFrames  # [T,h,w] uint8 luma, downscaled (or scaled when read: `WorkFrames`)
    indices: list[int]  # decoded-frame index of each kept frame
    num_frames: int  # frames decoded in total
    fps: float
    width: int  # coded size before downscaling
    height: int

    @property
    def times(self) -> np.ndarray:
        """Each kept frame's time in seconds (frame index / fps; 25 fps when the file does not say)."""
        return np.asarray(self.indices, float) / (self.fps or 25.0)


def _plane(frame, width: int) -> tuple[np.ndarray, tuple[int, int] | None, int]:
    """(the luma plane at coded size, the size it is scaled to for `width` or None, its rotation in quarter
    turns): `_finish` makes the frame as displayed. The plane is the decoder's buffer: copy it to keep it."""
    plane = frame.planes[0]
    if frame.format.name in _LUMA8:
        y: np.ndarray = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)[:, : frame.width]
    else:  # rgb/palette codecs (rare): convert properly
        y = frame.to_ndarray(format="gray")
    rot = round((getattr(frame, "rotation", 0) or 0) / 90) % 4
    shown_w = frame.width if rot % 2 == 0 else frame.height
    size = None
    if shown_w > width:
        scale = width / shown_w
        size = (max(8, round(frame.width * scale)), max(8, round(frame.height * scale)))
    return y, size, rot


def _finish(y: np.ndarray, size: tuple[int, int] | None, rot: int) -> np.ndarray:
    import cv2

    y = cv2.resize(y, size, interpolation=cv2.INTER_AREA) if size is not None else y.copy()
    return np.ascontiguousarray(np.rot90(y, k=rot)) if rot else y


def _shape(y: np.ndarray, size: tuple[int, int] | None, rot: int) -> tuple[int, int]:
    """The shape `_finish` gives."""
    h, w = (size[1], size[0]) if size is not None else y.shape[:2]
    return (w, h) if rot % 2 else (h, w)


def _luma(frame, width: int) -> np.ndarray:
    """The luma plane as displayed (rotation tag applied), `width` pixels wide (never upscaled)."""
    return _finish(*_plane(frame, width))


def _kept(frame, width: int, lazy: bool) -> tuple[np.ndarray, tuple[int, int] | None, int]:
    """What `read_gray` keeps of a frame, as `_plane` gives it: with `lazy`, a small frame that needs scaling
    at coded size (copied); else the finished frame."""
    if lazy and frame.width * frame.height <= LAZY_PIXELS:
        y, size, rot = _plane(frame, width)
        if size is not None:
            return y.copy(), size, rot
    return _luma(frame, width), None, 0


def _open(path: str):
    from vidcap.frames.container import open_input, video_stream

    container = open_input(path)
    try:
        video_stream(container)
    except VidcapError:
        container.close()
        raise
    return container


def _frame_count(stream) -> int:
    if stream.frames:
        return int(stream.frames)
    if stream.duration and stream.average_rate:
        return int(float(stream.duration * stream.time_base) * float(stream.average_rate))
    return 0


def _decoded(container, stream, skip_until: int):
    """(index, frame) in display order. Before frame `skip_until`, frames no other frame refers
    to (most B-frames) are not decoded at all: motion does not need every frame, and the tail is
    decoded in full so the last frame is there."""

    av = av_module()
    ctx = stream.codec_context
    fps = float(stream.average_rate or stream.guessed_rate or 25)
    tb = float(stream.time_base or 0)
    first_pts = None
    by_count = container.format.name in PTS_UNTRUSTED  # AVI: pts do not identify frames, every frame is counted
    if by_count:
        skip_until = 0
    if skip_until > 0:
        ctx.skip_frame = "NONREF"
    n = 0
    try:
        for packet in container.demux(stream):
            if (
                skip_until > 0
                and packet.dts is not None
                and tb
                and first_pts is not None
                and (packet.dts - first_pts) * tb * fps >= skip_until
            ):
                ctx.skip_frame = "DEFAULT"
                skip_until = 0
            for frame in packet.decode():
                if first_pts is None:
                    first_pts = frame.pts if frame.pts is not None else 0
                if frame.pts is not None and tb and not by_count:
                    index = round((frame.pts - first_pts) * tb * fps)
                else:
                    index = n
                n += 1
                yield index, frame
    except av.FFmpegError as exc:
        if n < 2:
            raise VidcapError(errors.DECODE, ffmpeg_message(exc)) from None
        # a damaged tail: the motion is measured up to the last good frame


def _decoded_span(container, stream, span: tuple[float, float]):
    """(index from the range's first frame, frame) of the frames inside [start, end): seeks to a keyframe before
    the range (further back when the first frame read is already inside it, as MPEG-TS seeks can land) and
    decodes forward, each frame placed by its pts. VidcapError `range` for a range past the video's end."""

    av = av_module()
    tb, t0 = clock(stream)
    fps = float(stream.average_rate or stream.guessed_rate or 25)
    start, end = span
    if container.format.name in PTS_UNTRUSTED:  # pts do not identify frames: the range by count, as frames reads it
        lo, hi = counted(span, fps)
        n = 0
        for i, frame in enumerate(container.decode(stream)):
            if i >= hi:
                break
            if i >= lo:
                yield i - lo, frame
                n += 1
        check_span(span, (lo + n) / fps, n, n < hi - lo)
        return
    for back in (*BACKOFF_S, None):
        target = int(t0 + (start - back) / tb) if back is not None else max(0, t0 - int(1 / tb))
        if back is not None and target <= t0:
            continue  # the file's start: the last try
        container.seek(target, stream=stream, backward=True, any_frame=False)
        n, seen, at_end = 0, None, True
        try:
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if frame.pts is None:
                        continue
                    t = (frame.pts - t0) * tb
                    if seen is None and t > start + EPS_S and back is not None:
                        break  # landed inside the range: seek further back
                    seen = t
                    if t < start - EPS_S:
                        continue
                    if t >= end - EPS_S:
                        at_end = False
                        break
                    yield round((t - start) * fps), frame
                    n += 1
                else:
                    continue
                break
        except av.FFmpegError as exc:
            if n < 2:
                raise VidcapError(errors.DECODE, ffmpeg_message(exc)) from None
        if seen is not None or back is None:
            check_span(span, (seen or 0.0) + 1 / fps, n, at_end)
            return


def read_gray(
    path: str,
    max_frames: int = 64,
    width: int = 160,
    skip_nonref: bool = True,
    span: tuple[float, float] | None = None,
    lazy: bool = False,
) -> GrayClip:
    """About `max_frames` evenly spaced frames of the clip (always the first and last) as luma; with `span`
    ((start, end) seconds), of that range only, indices counting from its first frame. `lazy`: frames as
    `WorkFrames` (scaled to `width` when first read; the same pixels), else one array.

    Raises VidcapError: missing, empty_path, not_a_file, decode, short (fewer than 2 frames), range.
    """
    from vidcap.frames.decode import check_path

    container = _open(check_path(path))
    with container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # one process per core does the parallelism
        total = _frame_count(stream)
        if span is not None:
            total = max(2, round((span[1] - span[0]) * float(stream.average_rate or stream.guessed_rate or 25)))
        stride = max(1.0, total / max_frames) if total else 1.0
        skip = total - 12 if skip_nonref and total > max_frames and span is None else 0
        kept, indices, last, next_at = [], [], None, 0.0
        frames_in = _decoded(container, stream, skip) if span is None else _decoded_span(container, stream, span)
        for index, frame in frames_in:
            if index >= next_at:
                kept.append(_kept(frame, width, lazy))
                indices.append(index)
                next_at = index + stride - 0.5
                last = None
            else:
                last = (index, frame)
        if last is not None:
            kept.append(_kept(last[1], width, lazy))
            indices.append(last[0])
        if len(kept) < 2:
            raise VidcapError(errors.SHORT, f"{len(kept)} frame(s) decoded; motion needs at least 2")
        if span is None:
            check_frame_count(container.format.name, indices[-1] + 1, stream.frames)  # caption's rule: cut short
        if len(kept) > 2 * max_frames:  # frame count was unknown: thin out now
            keep = np.unique(np.linspace(0, len(kept) - 1, max_frames).round().astype(int))
            kept, indices = [kept[i] for i in keep], [indices[i] for i in keep]
        frames = WorkFrames(kept) if lazy else np.stack([k[0] for k in kept])
        fps = float(stream.average_rate or 0)
        return GrayClip(frames, indices, indices[-1] + 1, fps, stream.width, stream.height)
