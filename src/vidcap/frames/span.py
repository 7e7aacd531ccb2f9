"""The frames of a time range [start, end) of a file, found without reading the file from its start.

A range row (`start_time`/`end_time`, docs/ranges.md) stands for part of a long video. Its frames are found by
seeking the demuxer to the range (to a keyframe at or before its start) and demuxing, not decoding, up to its
end: the packets' timestamps give the range's frames and keyframes, as `container.scan` gives them for a whole
file. Seeking is trusted only as far as the timestamps confirm it: the first keyframe read must lie at or
before the range's start (MPEG-TS seeks by byte position and lands anywhere), else the seek is retried further
back, and a file whose timestamps do not identify frames (AVI) is scanned whole. A frame's time is its pts
less the stream's start, so time 0 is the first frame whatever the container's clock starts at.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass

from vidcap.errors import RANGE, VidcapError
from vidcap.frames.container import PTS_UNTRUSTED, Scan

BACKOFF_S = (0.0, 2.0, 10.0, 60.0)  # how far before the range each seek lands, tried in turn
PAST_END_S = 1.0  # a range may end this far past the last frame (a duration rounded up, an audio tail)
EPS_S = 1e-6  # a frame this close before a range edge counts as on it (times written as floats)


@dataclass
class Window:
    """A range located in a file: `scan` covers the frames from a keyframe at or before the range to its end
    (pts ascending, keyframe positions), the range is `scan.pts[lo:hi]`; `seek_pts` re-reads it from there."""

    scan: Scan
    lo: int
    hi: int
    seek_pts: int | None  # None: the scan is the whole file (read from its start)
    ends_on_key: bool = False  # the first frame after the range is a keyframe, or there is none (cut.py copies)

    @property
    def total(self) -> int:
        return self.hi - self.lo


def clock(stream) -> tuple[float, int]:
    """(seconds per pts tick, the pts of time 0) of a stream."""
    tb = float(stream.time_base or 0) or 1 / 90000
    return tb, int(stream.start_time or 0)


def seek_window(container, stream, span: tuple[float, float]) -> Window | None:
    """The range's frames by seeking; None when the timestamps do not allow it (the caller scans the file)."""
    if container.format.name in PTS_UNTRUSTED:
        return None
    tb, t0 = clock(stream)
    lo_pts, hi_pts = t0 + (span[0] - EPS_S) / tb, t0 + (span[1] - EPS_S) / tb
    fps = float(stream.average_rate or stream.guessed_rate or 0)
    for back in BACKOFF_S:
        seek_pts = int(lo_pts - back / tb)
        from_start = seek_pts <= t0
        if from_start:  # well before the first frame: an MPEG-TS seek to exactly its pts lands frames after it
            seek_pts = max(0, t0 - int(1 / tb))
        try:
            container.seek(seek_pts, stream=stream, backward=True, any_frame=False)
        except Exception:  # noqa: BLE001 - a container that cannot seek: scanned whole instead
            return None
        try:
            packets, at_end, next_key = _demux_until(container, stream, hi_pts)
        except _NoPts:
            return None
        first = next((i for i, (_, key) in enumerate(packets) if key), None)
        if first is None or (packets[first][0] > lo_pts and not from_start):
            continue  # landed inside the range (or past it): seek further back
        start = packets[first][0]
        pts = sorted(p for p, _ in packets[first:] if p >= start)
        if len(set(pts)) != len(pts):
            return None
        keys = {p for p, key in packets[first:] if key and p >= start}
        scan = Scan(len(pts), pts, [i for i, p in enumerate(pts) if p in keys], fps, True, True)
        lo, hi = bisect_left(pts, lo_pts), bisect_left(pts, hi_pts)
        check_span(span, (pts[-1] - t0) * tb + (1 / fps if fps else 0), hi - lo, at_end)
        return Window(scan, lo, hi, seek_pts, _ends_on_key(packets[first:], pts, hi, at_end or next_key))
    return None


def _ends_on_key(packets: list[tuple[int, bool]], pts: list[int], hi: int, next_key: bool) -> bool:
    """Whether the frame after the range is a keyframe (or the range ends where the demux stopped, on a
    keyframe or the file's end) that no frame of the range is decoded after: nothing in it refers past it."""
    if hi == len(pts):
        return next_key
    key = pts[hi]
    order = [p for p, _ in packets]
    if key not in {p for p, k in packets if k}:
        return False
    return all(p >= key for p in order[order.index(key) :])


def _demux_until(container, stream, hi_pts: float) -> tuple[list[tuple[int, bool]], bool, bool]:
    """(pts, is_keyframe) of the packets from the current position until one decoded after the range's end (its
    dts is past it, so every later frame is too); whether the file ended first; whether that packet is a
    keyframe."""
    packets: list[tuple[int, bool]] = []
    for pkt in container.demux(stream):
        if pkt.size == 0 or pkt.is_discard:
            continue
        if pkt.dts is not None and pkt.dts >= hi_pts:
            return packets, False, bool(pkt.is_keyframe)
        if pkt.pts is None:
            raise _NoPts
        packets.append((pkt.pts, bool(pkt.is_keyframe)))
    return packets, True, False


class _NoPts(Exception):
    pass


def scan_window(scan: Scan, stream, span: tuple[float, float]) -> Window:
    """The range within a whole-file scan (the fallback): by pts where they identify frames, else by count."""
    tb, t0 = clock(stream)
    frame = 1 / scan.fps if scan.fps else 0
    if scan.pts_ok:
        base = t0 if stream.start_time is not None else scan.pts[0]
        lo = bisect_left(scan.pts, base + (span[0] - EPS_S) / tb)
        hi = bisect_left(scan.pts, base + (span[1] - EPS_S) / tb)
        end = (scan.pts[-1] - base) * tb + frame
    else:
        rate = scan.fps or 25.0
        lo, hi = (min(scan.total, i) for i in counted(span, rate))
        end = scan.total / rate
    check_span(span, end, hi - lo, True)
    return Window(scan, lo, hi, None, hi >= scan.total or hi in set(scan.key_index))


def counted(span: tuple[float, float], rate: float) -> tuple[int, int]:
    """Frames [lo, hi) of a range where frames are counted, not timed (AVI): frame i is [i/rate, (i+1)/rate).
    The edges are moved back EPS_S seconds, so a time written to 6 decimals takes no frame of a neighbour."""
    return max(0, math.ceil((span[0] - EPS_S) * rate)), max(0, math.ceil((span[1] - EPS_S) * rate))


def check_span(span: tuple[float, float], video_end: float, frames: int, at_end: bool) -> None:
    """VidcapError `range` for a range past the video's end or holding no frame."""
    if at_end and span[0] >= video_end - EPS_S:
        raise VidcapError(RANGE, f"the range {_fmt(span)} starts after the video ends (at {video_end:.3f} s)")
    if at_end and span[1] > video_end + PAST_END_S:
        raise VidcapError(
            RANGE, f"the range {_fmt(span)} ends more than {PAST_END_S:g} s after the video does (at {video_end:.3f} s)"
        )
    if frames <= 0:
        raise VidcapError(RANGE, f"no frame of the video lies in the range {_fmt(span)}")


def _fmt(span: tuple[float, float]) -> str:
    return f"{span[0]!r}-{span[1]!r} s"
