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
import stat
from bisect import bisect_right
from dataclasses import dataclass
from typing import Any

import numpy as np

from vidcap.errors import DECODE, EMPTY_PATH, GROWING, MISSING, NOT_A_FILE, SHORT, UsageError, VidcapError
from vidcap.frames.container import INDEXED_FORMATS, Scan, av_module, ffmpeg_message, open_input, video_stream
from vidcap.frames.container import scan as scan_container
from vidcap.frames.images import IMAGE_DEMUXERS, is_image_file, load_image, sniff_image
from vidcap.frames.positions import check_rule, frame_indices, time_indices
from vidcap.frames.remote import (
    BLOCK,
    ISO_BLOCK,
    LOCAL,
    RemoteFile,
    check_url,
    head,
    is_iso_media,
    is_url,
    protocol,
    row_error,
)
from vidcap.frames.span import Window, scan_window, seek_window

# A seek costs about this many decoded frames (flush + decoder delay); below that, decode on.
SEEK_COST_FRAMES = 8
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


def sample_frames(
    path,
    num_frames: int,
    positions: str = "segments",
    resize_short: int | None = None,
    max_side: int | None = None,
    *,
    strategy: str = "auto",
    rate: float | None = None,
    span: tuple[float, float] | None = None,
) -> Frames:
    """K frames of `path` (a video, or a still image which gives exactly one frame).

    resize_short: downscale so the short side is at most this; max_side: cap the long side.
    rate: frames by time instead (`rate` per second of the clip, `positions.time_indices`); `num_frames`
    is then the most frames a clip gives.
    strategy: "auto" (default), or force "seek" / "sequential" (tests and benchmarks; "sequential" reads a range
    from the file's start).
    span: (start, end) seconds, end exclusive: the frames are sampled inside that range only, as if it were the
    clip (indices and num_frames count from the range's first frame); an image ignores it.
    Raises VidcapError (missing, empty_path, not_a_file, decode, short, range) for a bad file or range.
    """
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown decode strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    check_rule(num_frames, positions)  # a bad K or rule is the user's mistake: say so first
    path = check_path(path)
    pick = _picker(int(num_frames), positions, rate)
    if is_url(path):
        return _sample_url(path, pick, resize_short, max_side, strategy, span)
    if is_image_file(path):
        img, source = load_image(path, None if max_side else resize_short)
        return _image_result(img, source, resize_short, max_side)
    before = _identity(path)
    frames = _sample_video(path, pick, resize_short, max_side, strategy, span)
    if _identity(path) != before:  # e.g. an MPEG-TS recording still being written decodes "fine" but short
        raise VidcapError(
            GROWING,
            "the file changed while it was read (is it still being written?); it is read again when the run is resumed",
        )
    return frames


def _picker(k: int, positions: str, rate: float | None):
    """(frames in the clip, its fps) -> the indices to decode."""
    if rate:
        return lambda total, fps: time_indices(total, fps, float(rate), k)
    return lambda total, fps: frame_indices(total, k, positions)


def _sample_url(url, pick, resize_short, max_side, strategy, span) -> Frames:
    """A remote clip through one RemoteFile (each byte fetched once). A network failure met while FFmpeg
    was reading wins over whatever FFmpeg made of the missing bytes."""
    first = head(url, 64)  # one small request decides the reader: ISO media gets small blocks
    source = RemoteFile(url, ISO_BLOCK if is_iso_media(first) else BLOCK)
    try:
        with source:
            if sniff_image(first[:32]) is not None:
                img, size = load_image(source, None if max_side else resize_short)
                return _image_result(img, size, resize_short, max_side)
            return _sample_video(source, pick, resize_short, max_side, strategy, span)
    except VidcapError as exc:
        raise (source.error or exc) from None
    except Exception as exc:  # noqa: BLE001 - a network failure PyAV passed on from the read callback
        raise source.error or row_error(exc) from None


def _identity(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return (-1, -1)
    return st.st_size, st.st_mtime_ns


def check_path(path) -> str:
    """The path as a string, or VidcapError for an empty, missing or non-file path."""
    if path is None or (isinstance(path, float) and math.isnan(path)):
        raise VidcapError(EMPTY_PATH, "no path given")
    path = os.fspath(path) if not isinstance(path, str) else path
    if not path.strip():
        raise VidcapError(EMPTY_PATH, "no path given")
    if is_url(path):
        return check_url(path)
    if "://" in path and protocol(path) in LOCAL:  # file:///clips/a.mp4
        path = path.split("://", 1)[1]
    try:  # one stat answers every question below (a manifest of missing files costs one syscall a row)
        st = os.stat(path)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        raise VidcapError(MISSING, "no such file") from None
    if stat.S_ISDIR(st.st_mode):
        raise VidcapError(NOT_A_FILE, "path is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise VidcapError(NOT_A_FILE, "not a regular file")
    if st.st_size == 0:
        raise VidcapError(DECODE, "empty file (0 bytes)")
    return path


def _image_result(img: np.ndarray, source: tuple[int, int], resize_short, max_side) -> Frames:
    """One frame; `source` is the full picture's displayed (width, height)."""
    w, h = source
    th, tw = target_size(h, w, resize_short, max_side)
    if (th, tw) != img.shape[:2]:
        img = _resize(img, th, tw)
    return Frames(np.ascontiguousarray(img)[None], [0], 1, 0.0, w, h, True)


def _sample_video(path, pick, resize_short, max_side, strategy, span=None) -> Frames:
    av = av_module()
    try:
        if span is not None:
            return _read_span(path, pick, resize_short, max_side, strategy, span)
        return _read_video(path, pick, resize_short, max_side, strategy)
    except av.error.FFmpegError as e:  # anything the finer handlers did not word already
        raise VidcapError(DECODE, ffmpeg_message(e, path if isinstance(path, str) else None)) from None


def _index_scan(source) -> Scan | None:
    """The scan of a remote MP4/MOV without fetching its frames: when the index (moov) lists every frame, the
    demuxer's timestamps, sizes and the index's keyframes are all the scan needs, so packet reads are answered
    with zeros. Then only the frames decoded are fetched. None when that does not apply or anything looks off
    (the full scan then decides, and words any damage)."""
    if not isinstance(source, RemoteFile):
        return None
    av = av_module()
    try:
        with open_input(source) as container:
            stream = video_stream(container)
            if (
                container.format.name not in INDEXED_FORMATS
                or not stream.frames
                or len(stream.index_entries) != stream.frames
            ):
                return None
            source.skip_payload = True
            try:
                return scan_container(container, stream, index_keys=True)
            finally:
                source.skip_payload = False
    except (VidcapError, av.error.FFmpegError):
        return None


def _read_video(path, pick, resize_short, max_side, strategy) -> Frames:
    av = av_module()
    pre = _index_scan(path)
    with open_input(path) as container:
        stream = video_stream(container)
        if container.format.name in IMAGE_DEMUXERS:  # a still that the magic bytes did not catch
            frame = next(_decode(container, stream), None)
            if frame is None:
                raise VidcapError(DECODE, "image has no decodable picture")
            img, source = _convert(frame, None, None)
            return _image_result(img, source, resize_short, max_side)
        scan = pre or scan_container(container, stream)
        indices = pick(scan.total, scan.fps)
        wanted = sorted(set(indices))
        use_seek = strategy == "seek" or (strategy == "auto" and _seek_pays(scan, wanted))
        got = None
        if use_seek and scan.seekable:
            try:
                got = _decode_by_seek(container, stream, scan, wanted, resize_short, max_side)
            except (_SeekFailed, av.error.FFmpegError, VidcapError):
                got = None  # timestamps or seeking misbehaved: the sequential read decides
    if got is None:
        with open_input(path) as container:
            got = _decode_sequential(container, video_stream(container), scan, wanted, resize_short, max_side)
    arrays, (width, height) = got
    frames = np.stack([arrays[i] for i in indices])
    return Frames(frames, indices, scan.total, scan.fps, width, height, False)


def _read_span(path, pick, resize_short, max_side, strategy, span) -> Frames:
    """The frames of a time range: located by seeking (span.py) and decoded from a keyframe before each target,
    each matched by pts; where the container's seeking or timestamps cannot be trusted, the whole file is
    scanned and read from its start, as a whole clip is."""
    av = av_module()
    got = None
    with open_input(path) as container:
        stream = video_stream(container)
        if container.format.name in IMAGE_DEMUXERS:
            return _read_video(path, pick, resize_short, max_side, strategy)
        window = None if strategy == "sequential" else seek_window(container, stream, span)
        if window is not None:
            indices = pick(window.total, window.scan.fps)
            try:
                got = _decode_window(container, stream, window, _targets(window, indices), resize_short, max_side)
            except (_SeekFailed, av.error.FFmpegError):
                got = None
    if window is None or got is None:
        with open_input(path) as container:
            stream = video_stream(container)
            window = scan_window(scan_container(container, stream), stream, span)
        indices = pick(window.total, window.scan.fps)
        with open_input(path) as container:
            stream = video_stream(container)
            got = _decode_sequential(container, stream, window.scan, _targets(window, indices), resize_short, max_side)
    arrays, (width, height) = got
    frames = np.stack([arrays[window.lo + i] for i in indices])
    return Frames(frames, list(indices), window.total, window.scan.fps, width, height, False)


def _targets(window: Window, indices: list[int]) -> list[int]:
    """The scan positions of a range's sampled frames (indices count from the range's first frame)."""
    return sorted({window.lo + i for i in indices})


def _decode_window(container, stream, window: Window, wanted, resize_short, max_side):
    """Decode a located range's targets: seeking from keyframe to keyframe where that pays, else (and when a
    seek lands after its target) forward from where the range was demuxed, every frame matched by pts."""
    if _seek_pays(window.scan, wanted):
        try:
            return _decode_by_seek(container, stream, window.scan, wanted, resize_short, max_side)
        except _SeekFailed:
            pass
    container.seek(window.seek_pts, stream=stream, backward=True, any_frame=False)
    index = {p: i for i, p in enumerate(window.scan.pts)}
    out, size, last = {}, None, wanted[-1]
    want = set(wanted)
    for frame in _decode(container, stream):
        i = index.get(frame.pts, -1) if frame.pts is not None else -1
        if i in want and i not in out:
            out[i], size = _take(frame, i, resize_short, max_side)
        if frame.pts is not None and frame.pts >= window.scan.pts[last]:
            break
    if want - set(out):
        raise _SeekFailed
    return out, size


# ---- decoding ----


def _seek_pays(scan: Scan, wanted: list[int]) -> bool:
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
    av = av_module()
    try:
        for pkt in container.demux(stream):
            yield from pkt.decode()
    except av.error.FFmpegError as e:
        raise VidcapError(DECODE, ffmpeg_message(e)) from None


def _decode_sequential(container, stream, scan: Scan, wanted, resize_short, max_side):
    """Decode from the start up to the last target. Frames are matched by pts where pts are
    trusted (a frame the decoder drops then cannot shift the others), else by counting."""
    index = {p: i for i, p in enumerate(scan.pts)} if scan.pts_ok else None
    out, size, want, last = {}, None, set(wanted), wanted[-1]
    for n, frame in enumerate(_decode(container, stream)):
        i = n if index is None or frame.pts is None else index.get(frame.pts, -1)
        if i in want and i not in out:
            out[i], size = _take(frame, i, resize_short, max_side)
        if i >= last:
            break
    missing = sorted(want - set(out))
    if missing:
        raise VidcapError(
            SHORT,
            f"frame {missing[0]} of {scan.total} could not be decoded "
            f"({len(missing)} of {len(want)} sampled frames missing)",
        )
    return out, size


def _decode_by_seek(container, stream, scan: Scan, wanted, resize_short, max_side):
    pos: Any  # an int once frames is set
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
