"""sample_frames(): K frame-exact RGB frames of a video (or the one frame of an image) via PyAV.

How a clip is read:
1. Demux once without decoding: the packets' presentation timestamps (pts) give the frame count T,
   the pts of frame i (the i-th smallest) and where the keyframes are. Cheap next to decoding.
   Packets no decoder can show (before the first keyframe) are not counted.
2. Pick indices with the position rule, then decode only up to the last one. Per target we either keep
   decoding forward or seek to the nearest keyframe before it, whichever decodes fewer frames
   (so short clips and long-GOP clips are read sequentially), and match frames by pts, which also
   makes variable-frame-rate clips exact. Only MP4/MOV/Matroska/WebM are seeked; other containers
   (MPEG-TS, AVI, GIF...) are decoded sequentially, and the seek path falls back to that on any
   timestamp surprise. AVI timestamps count packets, not display order: there frames are counted.
3. Every target must be found, else VidcapError("short"); a file whose frames end well before the
   duration its header claims (a cut download) raises "short" too, never a silently shorter clip.
"""

from __future__ import annotations

import math
import os
from bisect import bisect_right
from dataclasses import dataclass

import numpy as np

from vidcap.errors import DECODE, EMPTY_PATH, MISSING, NOT_A_FILE, SHORT, UsageError, VidcapError
from vidcap.frames.images import IMAGE_DEMUXERS, is_image_file, load_image
from vidcap.frames.positions import frame_indices

SEEK_FORMATS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm")
PTS_UNTRUSTED = ("avi",)
INDEXED_FORMATS = ("mov,mp4,m4a,3gp,3g2,mj2",)  # their frame count (stream.frames) is exact
# A seek costs about this many decoded frames (flush + decoder delay); below that, decode on.
SEEK_COST_FRAMES = 8
# Frames may end this much before the header's duration before we call the file truncated.
TRUNCATION_TOLERANCE = 0.05
STRATEGIES = ("auto", "seek", "sequential")


@dataclass
class Frames:
    frames: np.ndarray  # uint8 [K,H,W,3] RGB (K=1 for an image)
    indices: list[int]  # sampled frame indices, ascending; repeats when the clip has < K frames
    num_frames: int  # frames in the clip (1 for an image)
    fps: float  # average frame rate (0.0 for an image)
    width: int  # source size as displayed (rotation applied), before any resize
    height: int
    is_image: bool = False

    @property
    def repeated(self) -> bool:
        """True when the clip had too few frames and some indices repeat."""
        return len(set(self.indices)) < len(self.indices)


class _SeekFailed(Exception):
    """Timestamps did not behave; redo the clip sequentially."""


def sample_frames(path, num_frames: int, positions: str = "segments", resize_short: int | None = None,
                  max_side: int | None = None, *, strategy: str = "auto") -> Frames:
    """K frames of `path` (a video, or a still image which gives exactly one frame).

    resize_short: downscale so the short side is at most this; max_side: cap the long side.
    strategy: "auto" (default), or force "seek" / "sequential" (tests and benchmarks).
    Raises VidcapError (missing, empty_path, not_a_file, decode, short) for a bad file.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown decode strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    path = check_path(path)
    if int(num_frames) < 1:
        raise UsageError(f"the number of frames must be at least 1, got {num_frames}")
    if is_image_file(path):
        img = load_image(path)
        return _image_result(img, resize_short, max_side)
    return _sample_video(path, int(num_frames), positions, resize_short, max_side, strategy)


def check_path(path) -> str:
    """The path as a string, or VidcapError for an empty, missing or non-file path."""
    if path is None or (isinstance(path, float) and math.isnan(path)):
        raise VidcapError(EMPTY_PATH, "no path given")
    path = os.fspath(path) if not isinstance(path, str) else path
    if not path.strip():
        raise VidcapError(EMPTY_PATH, "no path given")
    if os.path.isdir(path):
        raise VidcapError(NOT_A_FILE, "path is a directory")
    if not os.path.exists(path):
        raise VidcapError(MISSING, "no such file")
    if not os.path.isfile(path):
        raise VidcapError(NOT_A_FILE, "not a regular file")
    try:
        if os.path.getsize(path) == 0:
            raise VidcapError(DECODE, "empty file (0 bytes)")
    except OSError as e:
        raise VidcapError(DECODE, e.strerror or str(e)) from None
    return path


def _image_result(img: np.ndarray, resize_short, max_side) -> Frames:
    h, w = img.shape[:2]
    th, tw = target_size(h, w, resize_short, max_side)
    if (th, tw) != (h, w):
        img = _resize(img, th, tw)
    return Frames(np.ascontiguousarray(img)[None], [0], 1, 0.0, w, h, True)


def _sample_video(path, k, positions, resize_short, max_side, strategy) -> Frames:
    with _open(path) as container:
        stream = _video_stream(container)
        if container.format.name in IMAGE_DEMUXERS:  # a still that the magic bytes did not catch
            frame = next(_decode(container, stream), None)
            if frame is None:
                raise VidcapError(DECODE, "image has no decodable picture")
            return _image_result(_convert(frame, None, None)[0], resize_short, max_side)
        scan = _scan(container, stream)
        indices = frame_indices(scan.total, k, positions)
        wanted = sorted(set(indices))
        use_seek = strategy == "seek" or (strategy == "auto" and _seek_pays(container, scan, wanted))
        got = None
        if use_seek and scan.seekable:
            try:
                got = _decode_by_seek(container, stream, scan, wanted, resize_short, max_side)
            except _SeekFailed:
                got = None
    if got is None:
        with _open(path) as container:
            got = _decode_sequential(container, _video_stream(container), scan, wanted, resize_short,
                                     max_side)
    arrays, (width, height) = got
    frames = np.stack([arrays[i] for i in indices])
    return Frames(frames, indices, scan.total, scan.fps, width, height, False)


# ---- opening and scanning ----


def _av():
    import av

    if av.logging.get_level() is None:
        # Errors then carry FFmpeg's own reason ("moov atom not found"); keep the log itself quiet.
        import logging

        av.logging.set_level(av.logging.ERROR)
        logger = logging.getLogger("libav")
        if not logger.handlers:
            logger.addHandler(logging.NullHandler())
            logger.propagate = False
    return av


def ffmpeg_message(e: Exception, path: str | None = None) -> str:
    """FFmpeg's short reason for an error, without the file name."""
    log = getattr(e, "log", None)
    detail = ""
    if isinstance(log, tuple) and len(log) > 2 and log[2]:
        detail = str(log[2]).split(" (repeated")[0].strip()
    msg = detail or getattr(e, "strerror", None) or str(e)
    if path:
        msg = msg.replace(f": '{path}'", "").replace(path, "")
    return " ".join(msg.split()) or type(e).__name__


def _open(path):
    av = _av()
    try:
        return av.open(path, metadata_errors="ignore")
    except av.FFmpegError as e:
        raise VidcapError(DECODE, ffmpeg_message(e, path)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise VidcapError(DECODE, getattr(e, "strerror", None) or str(e)) from None


def _video_stream(container):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        extra = f" ({', '.join(kinds)} only)" if kinds else ""
        raise VidcapError(DECODE, f"no video stream{extra}")
    return container.streams.video[0]


@dataclass
class _Scan:
    total: int
    pts: list  # pts of frame i (ascending) when pts_ok; else demux order, unused
    key_index: list[int]  # positions in `pts` of keyframes, ascending (empty unless pts_ok)
    fps: float
    pts_ok: bool  # timestamps identify frames: decode maps frames to indices by pts
    seekable: bool


def _scan(container, stream) -> _Scan:
    """Count frames by demuxing (no decoding) and locate keyframes; detect truncated files."""
    av = _av()
    packets, durations, error = [], [], None  # packets: (pts, is_keyframe) in decode order
    raw, corrupt_tail = 0, 0
    try:
        for pkt in container.demux(stream):
            if pkt.size == 0:
                continue
            raw += 1
            if pkt.is_discard:
                continue
            packets.append((pkt.pts, pkt.is_keyframe))
            durations.append(pkt.duration or 0)
            corrupt_tail = corrupt_tail + 1 if pkt.is_corrupt else 0
    except av.FFmpegError as e:
        error = e
    if error is not None and packets and not corrupt_tail:
        corrupt_tail = 1  # the packet before a read error is likely cut short
    if corrupt_tail:  # a file cut mid-packet: the demuxer flags what it could not read in full
        del packets[len(packets) - corrupt_tail:]
        raw -= corrupt_tail
    if container.format.name in INDEXED_FORMATS and 0 < raw < stream.frames:
        raise VidcapError(SHORT, f"truncated file: {raw} of {stream.frames} frames present")
    if not packets:
        if error is not None:
            raise VidcapError(DECODE, ffmpeg_message(error))
        raise VidcapError(DECODE, "video stream has no frames")
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    pts_ok = _pts_trusted(container, packets)
    if pts_ok:
        packets = _decodable(packets)
    order = sorted(p for p, _ in packets) if pts_ok else [p for p, _ in packets]
    key_index = []
    if pts_ok:
        pos = {p: i for i, p in enumerate(order)}
        key_index = sorted(pos[p] for p, key in packets if key)
    stamps = [p for p, _ in packets]
    _check_truncated(container, stream, None if None in stamps else stamps, durations, len(order), fps,
                     error)
    seekable = pts_ok and bool(key_index) and container.format.name in SEEK_FORMATS
    return _Scan(len(order), order, key_index, fps, pts_ok, seekable)


def _pts_trusted(container, packets) -> bool:
    """Whether packet timestamps are real presentation times, unique per frame."""
    if container.format.name in PTS_UNTRUSTED:
        return False  # AVI "pts" count packets; with packed B-frames they are not display order
    pts = [p for p, _ in packets]
    if None in pts or len(set(pts)) != len(pts):
        return False
    return max(pts) - min(pts) < 2**32  # an MPEG-TS clock wrap (2**33) breaks the ordering


def _decodable(packets):
    """Drop packets no decoder can show: before the first keyframe (decode order) and leading
    frames that precede it in time (open GOP at the start of a cut stream)."""
    first = next((i for i, (_, key) in enumerate(packets) if key), None)
    if first is None:
        return packets
    start = packets[first][0]
    return [(p, key) for p, key in packets[first:] if p >= start]


def _check_truncated(container, stream, pts, durations, count, fps, error) -> None:
    claimed = _claimed_seconds(container, stream, fps)
    if claimed is None or claimed <= 0:
        return
    tb = float(stream.time_base or 0)
    if pts is not None and tb > 0:
        last = max(durations) if durations else 0
        start = stream.start_time if stream.start_time is not None else min(pts)
        seen = (max(pts) + (last or (1 / fps / tb if fps else 0)) - start) * tb
    elif fps > 0:
        seen = count / fps
    else:
        return
    gap = claimed - seen
    frame = 1 / fps if fps else 0
    # A read error means damage: any gap counts. Without one, allow for loose header durations.
    allowed = 1.5 * frame if error is not None else max(TRUNCATION_TOLERANCE * claimed, 3 * frame)
    if gap > allowed:
        why = f" ({ffmpeg_message(error)})" if error is not None else ""
        raise VidcapError(SHORT, f"truncated file: frames end at {seen:.2f}s of {claimed:.2f}s{why}")


def _claimed_seconds(container, stream, fps: float) -> float | None:
    """The video duration the header claims, when the container states one for this stream."""
    claims = []
    if stream.duration and stream.time_base:
        claims.append(float(stream.duration * stream.time_base))
    if stream.frames and fps:  # AVI: header frame count (FFmpeg's duration is what it could index)
        claims.append(stream.frames / fps)
    tag = (stream.metadata or {}).get("DURATION") or (stream.metadata or {}).get("duration")
    if tag and not claims:  # Matroska: per-track "HH:MM:SS.nnnnnnnnn"
        try:
            h, m, s = tag.split(":")
            claims.append(int(h) * 3600 + int(m) * 60 + float(s))
        except ValueError:
            pass
    return max(claims) if claims else None


# ---- decoding ----


def _seek_pays(container, scan: _Scan, wanted: list[int]) -> bool:
    """True when seeking to keyframes skips enough decoding to be worth it."""
    if not scan.seekable:
        return False
    saved, pos = 0, 0
    for i in wanted:
        kf = scan.key_index[max(bisect_right(scan.key_index, i) - 1, 0)]
        if kf > pos + SEEK_COST_FRAMES:
            saved += kf - pos - SEEK_COST_FRAMES
        pos = i + 1
    return saved > SEEK_COST_FRAMES


def _decode(container, stream):
    """Decoded frames in presentation order from the current position, EOF flush included."""
    av = _av()
    try:
        for pkt in container.demux(stream):
            yield from pkt.decode()
    except av.FFmpegError as e:
        raise VidcapError(DECODE, ffmpeg_message(e)) from None


def _decode_sequential(container, stream, scan: _Scan, wanted, resize_short, max_side):
    """Decode from the start up to the last target. Frames are matched by pts where pts are
    trusted (a frame the decoder drops then cannot shift the others), else by counting."""
    index = {p: i for i, p in enumerate(scan.pts)} if scan.pts_ok else None
    out, size, n, want, last = {}, None, 0, set(wanted), wanted[-1]
    for frame in _decode(container, stream):
        i = n if index is None else index.get(frame.pts, -1)
        n += 1
        if i in want and i not in out:
            out[i], size = _take(frame, i, resize_short, max_side)
        if i >= last:
            break
    missing = sorted(want - set(out))
    if missing:
        raise VidcapError(SHORT, f"frame {missing[0]} of {scan.total} could not be decoded "
                                 f"({len(missing)} of {len(want)} sampled frames missing)")
    return out, size


def _decode_by_seek(container, stream, scan: _Scan, wanted, resize_short, max_side):
    out, size, pos, frames = {}, None, None, None
    for i in wanted:
        kf = scan.key_index[max(bisect_right(scan.key_index, i) - 1, 0)]
        if frames is None or pos > i or kf > pos + SEEK_COST_FRAMES:
            container.seek(scan.pts[kf], stream=stream, backward=True, any_frame=False)
            frames = _decode(container, stream)
        target = scan.pts[i]
        for frame in frames:
            if frame.pts is None:
                raise _SeekFailed
            if frame.pts < target:
                continue
            if frame.pts > target:
                raise _SeekFailed
            out[i], size = _take(frame, i, resize_short, max_side)
            break
        else:
            raise _SeekFailed
        pos = i + 1
    return out, size


def _take(frame, i, resize_short, max_side):
    if frame.is_corrupt:
        raise VidcapError(DECODE, f"frame {i} is damaged (the decoder flagged it corrupt)")
    return _convert(frame, resize_short, max_side)


def _convert(frame, resize_short, max_side):
    """RGB array as displayed (rotation applied, resized), and the source display size (w, h)."""
    rot = int(round((getattr(frame, "rotation", 0) or 0) / 90)) % 4
    w, h = (frame.width, frame.height) if rot % 2 == 0 else (frame.height, frame.width)
    th, tw = target_size(h, w, resize_short, max_side)
    cw, ch = (tw, th) if rot % 2 == 0 else (th, tw)
    if (cw, ch) == (frame.width, frame.height):
        arr = frame.to_ndarray(format="rgb24")
    else:
        arr = frame.to_ndarray(width=cw, height=ch, format="rgb24", interpolation="AREA")
    if rot:
        arr = np.ascontiguousarray(np.rot90(arr, k=rot))
    return arr, (w, h)


def target_size(h: int, w: int, resize_short: int | None, max_side: int | None) -> tuple[int, int]:
    """(height, width) after downscaling: short side <= resize_short, long side <= max_side."""
    scale = 1.0
    if resize_short and min(h, w) > resize_short:
        scale = resize_short / min(h, w)
    if max_side and max(h, w) * scale > max_side:
        scale = max_side / max(h, w)
    if scale >= 1.0:
        return h, w
    return max(1, round(h * scale)), max(1, round(w * scale))


def _resize(img: np.ndarray, th: int, tw: int) -> np.ndarray:
    import cv2

    return cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA)
