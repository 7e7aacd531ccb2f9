"""Cut time ranges into clip files (`vidcap scenes --cut DIR`, `vidcap export --to opensora` on range rows).

Every stage reads a range row in place (decode seeks to the range); a clip file is for tools that read whole
files (Open-Sora's loader) or a user who wants files. A range that starts on a keyframe and ends where the next
keyframe (or the file) begins is stream-copied: its packets hold exactly its frames and no other frame refers
to them. Any other range is decoded and re-encoded (H.264, CRF 18), so the clip starts exactly at the range's
first frame and holds its frames only, with their timestamps (variable frame rates stay as they are). Clips
hold the video stream only (captioning and training read no audio). Each clip is written under a temporary
name and renamed, so a killed run leaves no half clip, and an existing clip is kept (a rerun resumes).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pandas as pd

from .errors import DECODE, VidcapError
from .frames.container import av_module, ffmpeg_message, open_input, video_stream
from .frames.decode import check_path
from .frames.span import EPS_S, Window, clock, scan_window, seek_window

COPY_CODECS = frozenset({"h264", "hevc", "av1", "vp9", "mpeg4"})  # what an MP4 file takes as it is
CRF = "18"  # visually lossless for training data


@dataclass(frozen=True)
class Clip:
    """One written clip: its file, whether its packets were copied, and what Open-Sora reads of it."""

    path: str
    copied: bool
    num_frames: int
    fps: float
    width: int
    height: int
    kept: bool = False  # the clip was there already (a rerun): not written again


def clip_name(source: str, span: tuple[float, float]) -> str:
    """`<stem>-<8 hex of the source path>_<start ms>-<end ms>.mp4`: one name per range of one file, whatever
    folder two equal names come from."""
    tag = hashlib.sha1(os.path.abspath(source).encode("utf-8", "surrogatepass")).hexdigest()[:8]
    stem = Path(source).stem[:80]
    return f"{stem}-{tag}_{round(span[0] * 1000):09d}-{round(span[1] * 1000):09d}.mp4"


def cut_range(source: str, span: tuple[float, float], dest: str | os.PathLike, copy: bool | None = None) -> Clip:
    """Write `source`'s [start, end) as the clip `dest` (kept when it exists). copy: None (stream copy where
    the range starts and ends on keyframes), False (always re-encode). Raises VidcapError (decode, range...)."""
    dest = Path(dest)
    if dest.exists():
        return probe(str(dest), copied=False, kept=True)
    source = check_path(source)
    av = av_module()
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=".mp4", dir=dest.parent)
    os.close(fd)
    try:
        with open_input(source) as container:
            stream = video_stream(container)
            window = seek_window(container, stream, span)
            if window is None:  # timestamps that cannot be trusted: the range from a whole-file scan
                from .frames.container import scan as scan_container

                with open_input(source) as whole:
                    window = scan_window(scan_container(whole, video_stream(whole)), video_stream(whole), span)
            copied = copy is not False and _copyable(window, stream)
            if copied:
                try:
                    _copy(container, stream, window, span, tmp)
                except (av.error.FFmpegError, _NoDts):  # timestamps the MP4 muxer refuses: encoded instead
                    copied = False
            if not copied:
                _encode(container, stream, window, span, tmp)
        os.replace(tmp, dest)
    except av.error.FFmpegError as exc:
        raise VidcapError(DECODE, ffmpeg_message(exc, source)) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return probe(str(dest), copied)


def _copyable(window: Window, stream) -> bool:
    keys = set(window.scan.key_index)
    return (
        window.seek_pts is not None
        and window.lo in keys
        and window.ends_on_key
        and stream.codec_context.name in COPY_CODECS
    )


def _bounds(stream, span: tuple[float, float]) -> tuple[float, float]:
    tb, t0 = clock(stream)
    return t0 + (span[0] - EPS_S) / tb, t0 + (span[1] - EPS_S) / tb


def _copy(container, stream, window: Window, span, tmp: str) -> None:
    """The range's packets as they are (it starts on a keyframe and the next keyframe ends it)."""
    av = av_module()
    lo_pts, hi_pts = _bounds(stream, span)
    base = window.scan.pts[window.lo]
    container.seek(window.seek_pts, stream=stream, backward=True, any_frame=False)
    with av.open(tmp, "w", format="mp4") as out:
        ost = out.add_stream_from_template(stream)
        for pkt in container.demux(stream):
            if pkt.size == 0 or pkt.pts is None:
                continue
            if pkt.dts is not None and pkt.dts >= hi_pts:
                break
            if not lo_pts <= pkt.pts < hi_pts:
                continue
            if pkt.dts is None:
                raise _NoDts
            pkt.pts -= base
            pkt.dts -= base
            pkt.stream = ost
            out.mux(pkt)


class _NoDts(Exception):
    """A packet without a decode time (Matroska's B-frames): copying would need them."""


def _encode(container, stream, window: Window, span, tmp: str) -> None:
    """The range's frames decoded and encoded again, each at its own time from the clip's start. Where pts do
    not identify frames (AVI: packed B-frames come out of the decoder in display order but with their packets'
    shuffled pts), frames are taken by count, as `vidcap.frames` reads them, and timed by the frame rate."""
    av = av_module()
    lo_pts, hi_pts = _bounds(stream, span)
    container.seek(window.seek_pts or 0, stream=stream, backward=True, any_frame=False)
    tb = stream.time_base or Fraction(1, 90000)
    rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    tick = max(1, round(1 / (rate * tb)))  # pts per frame, for frames timed by count
    with av.open(tmp, "w", format="mp4") as out:
        ost = out.add_stream("libx264", rate=rate)
        ost.codec_context.time_base = tb
        ost.options = {"crf": CRF, "preset": "veryfast"}
        ost.pix_fmt = "yuv420p"
        base, last, n = None, -1, 0
        for i, frame in enumerate(container.decode(stream)):
            if window.scan.pts_ok:
                if frame.pts is None or frame.pts < lo_pts:
                    continue
                if frame.pts >= hi_pts:
                    break
                base = frame.pts if base is None else base
                pts = frame.pts - base
            else:
                if i < window.lo:
                    continue
                if i >= window.hi:
                    break
                pts = (i - window.lo) * tick
            if pts <= last:  # a repeated timestamp: the muxer takes strictly increasing ones only
                continue
            if n == 0:
                ost.width, ost.height = frame.width - frame.width % 2, frame.height - frame.height % 2
            img = frame.reformat(width=ost.width, height=ost.height, format="yuv420p")
            img.pts, img.time_base, last = pts, tb, pts
            out.mux(ost.encode(img))
            n += 1
        if n == 0:
            raise VidcapError(DECODE, f"no frame of the range {span[0]!r}-{span[1]!r} s could be decoded")
        out.mux(ost.encode(None))


def probe(path: str, copied: bool, kept: bool = False) -> Clip:
    """What a clip holds (frames counted by demuxing: MP4's header count)."""
    with open_input(path) as container:
        stream = video_stream(container)
        frames = stream.frames or sum(1 for p in container.demux(stream) if p.size)
        fps = float(stream.average_rate or 0)
        return Clip(path, copied, int(frames), fps, stream.codec_context.width, stream.codec_context.height, kept)


def _cut_one(job: tuple[str, tuple[float, float], str, bool | None]) -> Clip | VidcapError:
    source, span, dest, copy = job
    try:
        return cut_range(source, span, dest, copy)
    except VidcapError as exc:
        return exc


def cut_ranges(
    jobs: list[tuple[str, tuple[float, float]]],
    out_dir: str | os.PathLike,
    *,
    copy: bool | None = None,
    workers: int = 1,
    on_clip: Callable[[int, Clip | VidcapError], None] | None = None,
) -> list[Clip | VidcapError]:
    """Cut each (source path, (start, end)) into `out_dir` (names by `clip_name`); a clip or the row's
    VidcapError per job, in order. workers > 1: that many processes (each clip is one process's work)."""
    tasks = [(src, span, str(Path(out_dir) / clip_name(src, span)), copy) for src, span in jobs]
    results: list[Clip | VidcapError] = []
    if workers <= 1 or len(tasks) < 2:
        mapped = map(_cut_one, tasks)
        for i, res in enumerate(mapped):
            results.append(res)
            if on_clip:
                on_clip(i, res)
        return results
    with ProcessPoolExecutor(min(workers, len(tasks))) as pool:
        for i, res in enumerate(pool.map(_cut_one, tasks)):
            results.append(res)
            if on_clip:
                on_clip(i, res)
    return results


def cut_table(table, out_dir, *, workers: int = 1, copy: bool | None = None) -> dict:
    """Cut every ok range row of `table` (a `vidcap scenes` output, or any table of range rows) into `out_dir`
    and write the table back with `clip_path` (the clip, absolute; empty for a whole-file or failed row) and
    `clip_error` (why a range could not be cut). Clips already there are kept, so a rerun only adds the new
    ones. Returns counts: clips, copied, encoded, kept (there already), failed."""
    from . import tables
    from .manifest import read_range, resolved_paths

    df = tables.read(table)
    ok = df["status"].astype(str).eq("ok") if "status" in df.columns else pd.Series(True, index=df.index)
    paths = resolved_paths(df, table) if "path" in df.columns else [""] * len(df)
    todo, jobs = [], []
    clip_error = [""] * len(df)
    for pos, (row, good, path) in enumerate(zip(df.to_dict("records"), ok, paths, strict=True)):
        if not good:
            continue
        try:
            span = read_range(row)
        except VidcapError as exc:
            clip_error[pos] = exc.text
            continue
        if span is not None:
            todo.append(pos)
            jobs.append((path, span))
    clip_path = [""] * len(df)
    counts = {"clips": 0, "copied": 0, "encoded": 0, "kept": 0, "failed": 0}
    for pos, res in zip(todo, cut_ranges(jobs, out_dir, copy=copy, workers=workers), strict=True):
        if isinstance(res, Clip):
            clip_path[pos] = os.path.abspath(res.path)
            counts["clips"] += 1
            counts["kept" if res.kept else "copied" if res.copied else "encoded"] += 1
        else:
            clip_error[pos] = res.text
            counts["failed"] += 1
    df["clip_path"], df["clip_error"] = clip_path, clip_error
    tables.write(df, table, _metadata(table))
    return counts


def _metadata(table) -> dict | None:
    """The vidcap metadata a Parquet output carries (its run's settings), kept when the table is rewritten."""
    import json

    import pyarrow.parquet as pq

    text = str(table)
    if not text.lower().endswith((".parquet", ".pq")) or not os.path.isfile(text):
        return None
    meta = pq.read_schema(text).metadata or {}
    return json.loads(meta[b"vidcap"]) if b"vidcap" in meta else None
