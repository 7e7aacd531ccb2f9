"""What a video file holds, read without decoding: its video stream, frame count, frame timestamps,
keyframes, and whether it was cut short. Also the PyAV entry point and FFmpeg's error wording."""

from __future__ import annotations

from dataclasses import dataclass

from vidcap.errors import DECODE, SHORT, VidcapError

SEEK_FORMATS = ("mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm")
PTS_UNTRUSTED = ("avi",)
INDEXED_FORMATS = ("mov,mp4,m4a,3gp,3g2,mj2",)  # their frame count (stream.frames) is exact
# Frames may end this much before the header's duration before we call the file truncated.
TRUNCATION_TOLERANCE = 0.05


def av_module():
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


def open_input(path):
    """A PyAV container for a local path, an open binary file (read from its start) or a URL (see remote.py;
    the container then owns the remote reader and closes it)."""
    from vidcap.frames.remote import RemoteFile, is_url

    if is_url(path):
        source = RemoteFile(path)
        try:
            return _Owning(_open(source), source)
        except BaseException:
            source.close()
            raise
    if hasattr(path, "read"):
        path.seek(0)
    return _open(path)


class _Owning:
    """A container that closes the file it reads when it is closed."""

    def __init__(self, container, source):
        self._container, self._source = container, source

    def __getattr__(self, name):
        return getattr(self._container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        try:
            self._container.close()
        finally:
            self._source.close()


def _open(path):
    av = av_module()
    name = path if isinstance(path, str) else None
    try:
        try:
            return av.open(path, metadata_errors="ignore")
        except TypeError:  # PyAV 19 dropped the option (and no longer fails on bad metadata)
            return av.open(path)
    except av.error.FFmpegError as e:
        raise VidcapError(DECODE, ffmpeg_message(e, name)) from None
    except (OSError, UnicodeDecodeError) as e:
        raise VidcapError(DECODE, getattr(e, "strerror", None) or str(e)) from None


def video_stream(container):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams})
        extra = f" ({', '.join(kinds)} only)" if kinds else ""
        raise VidcapError(DECODE, f"no video stream{extra}")
    return container.streams.video[0]


@dataclass
class Scan:
    total: int
    pts: list  # pts of frame i (ascending) when pts_ok; else demux order, unused
    key_index: list[int]  # positions in `pts` of keyframes, ascending (empty unless pts_ok)
    fps: float
    pts_ok: bool  # timestamps identify frames: decode maps frames to indices by pts
    seekable: bool


def scan(container, stream, index_keys: bool = False) -> Scan:
    """Count frames by demuxing (no decoding) and locate keyframes; detect truncated files.

    index_keys: take keyframes from the container's index (MP4's sync-sample table) instead of the packets,
    for a scan whose packet data was not read (see decode._index_scan): FFmpeg's parser would judge zeros.
    """
    av = av_module()
    keys = {e.timestamp for e in stream.index_entries if e.flags & 1} if index_keys else None
    packets, durations, error = [], [], None  # packets: (pts, is_keyframe) in decode order
    raw, corrupt_tail = 0, 0
    try:
        for pkt in container.demux(stream):
            if pkt.size == 0:
                continue
            raw += 1
            if pkt.is_discard:
                continue
            packets.append((pkt.pts, pkt.is_keyframe if keys is None else pkt.dts in keys))
            durations.append(pkt.duration or 0)
            corrupt_tail = corrupt_tail + 1 if pkt.is_corrupt else 0
    except av.error.FFmpegError as e:
        error = e
    if error is not None and packets and not corrupt_tail:
        corrupt_tail = 1  # the packet before a read error is likely cut short
    if corrupt_tail:  # a file cut mid-packet: the demuxer flags what it could not read in full
        del packets[len(packets) - corrupt_tail :]
        raw -= corrupt_tail
    check_frame_count(container.format.name, raw, stream.frames)
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
    _check_truncated(container, stream, None if None in stamps else stamps, durations, len(order), fps, error)
    seekable = pts_ok and bool(key_index) and container.format.name in SEEK_FORMATS
    return Scan(len(order), order, key_index, fps, pts_ok, seekable)


def check_frame_count(format_name: str, present: int, claimed: int | None) -> None:
    """The one frame-count rule every stage applies (caption's scan, motion's reader): a container with an
    index (MP4/MOV/MKV...) that holds fewer frames than its header lists was cut short, and the clip fails as
    `short` rather than being read as a shorter clip. `present`: the frames (packets) the file really holds."""
    if format_name in INDEXED_FORMATS and claimed and 0 < present < claimed:
        raise VidcapError(SHORT, f"truncated file: {present} of {claimed} frames present")


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
