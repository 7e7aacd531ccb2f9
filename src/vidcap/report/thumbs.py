"""Thumbnails for the review page: re-decode a row's sampled frames small, encode them as JPEG data.

Decoding runs in worker processes (spawned, like the runner's decode pool); each job returns base64
JPEG strings, a few KB each, so the page stays small.
"""

from __future__ import annotations

import base64
import io
import json
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

import numpy as np

# Rows whose error says the file itself cannot be read: no point decoding again. Not `short`: a clip with
# too few frames for motion (one frame), or cut short, still shows what it has.
UNREADABLE = frozenset({"missing", "empty_path", "not_a_file", "decode"})


@dataclass
class ThumbJob:
    path: str
    count: int  # frames to decode, with the `positions` rule (the run's own, when it can be told)
    positions: str
    keep: list[int] = field(default_factory=list)  # which of the decoded frames go on the page
    width: int = 160
    quality: int = 70
    note: str = ""  # why the frames differ from the run's, if they do
    span: tuple[float, float] | None = None  # a range row: its frames come from inside (start, end) seconds


@dataclass
class Thumbs:
    images: list[tuple[int, str]]  # (frame index, base64 JPEG)
    is_image: bool = False
    error: str = ""
    note: str = ""


def parse_indices(cell) -> list[int]:
    """A `frame_idx` cell: a list, an array, or a JSON array string (CSV); [] when absent."""
    if cell is None or (isinstance(cell, float) and cell != cell):
        return []
    if hasattr(cell, "tolist") and not isinstance(cell, str):
        cell = cell.tolist()
    if isinstance(cell, str):
        try:
            cell = json.loads(cell)
        except ValueError:
            return []
    if not isinstance(cell, (list, tuple)):
        return []
    try:
        return [int(v) for v in cell]
    except (TypeError, ValueError):
        return []


def _spread(n: int, k: int) -> list[int]:
    """k positions spread evenly over range(n), first and last included."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(v)) for v in np.linspace(0, n - 1, k)})


def plan_job(
    path: str,
    frame_idx,
    total,
    max_thumbs: int = 8,
    default_frames: int = 4,
    width: int = 160,
    quality: int = 70,
    span: tuple[float, float] | None = None,
) -> ThumbJob:
    """The frames the run used (found by re-deriving its position rule), or `default_frames` uniform; for a
    range row, counted within the range (as the run counted them)."""
    from vidcap.frames import POSITIONS, frame_indices

    idx = parse_indices(frame_idx)
    try:
        total = int(total)
    except (TypeError, ValueError):
        total = 0
    if idx and total > 0:
        for rule in POSITIONS:
            if frame_indices(total, len(idx), rule) == idx:
                firsts = sorted({idx.index(v) for v in idx})  # repeats of a short clip shown once
                keep = [firsts[i] for i in _spread(len(firsts), max_thumbs)]
                return ThumbJob(path, len(idx), rule, keep, width, quality, span=span)
    note = "frames re-sampled (the run's frame indices could not be reproduced)" if idx else ""
    return ThumbJob(path, default_frames, "uniform", list(range(default_frames)), width, quality, note, span)


def _jpeg_b64(arr: np.ndarray, quality: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality, optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def run_job(job: ThumbJob) -> Thumbs:
    """Decode and encode one row's thumbnails; a failure is returned, never raised."""
    from vidcap.errors import VidcapError
    from vidcap.frames import sample_frames

    try:
        fr = sample_frames(job.path, job.count, job.positions, max_side=job.width, span=job.span)
    except VidcapError as exc:
        return Thumbs([], error=exc.text, note=job.note)
    except Exception as exc:  # a decoder bug on one file must not stop the report
        return Thumbs([], error=f"decode: {type(exc).__name__}: {exc}", note=job.note)
    keep = [0] if fr.is_image else [k for k in job.keep if k < len(fr.frames)]
    keep = [
        k for i, k in enumerate(keep) if fr.indices[k] not in {fr.indices[j] for j in keep[:i]}
    ]  # a 1-frame clip: once
    images = [(int(fr.indices[k]), _jpeg_b64(fr.frames[k], job.quality)) for k in keep]
    return Thumbs(images, is_image=fr.is_image, note="" if fr.is_image else job.note)


def run_jobs(jobs: list[ThumbJob], workers: int) -> list[Thumbs]:
    """All jobs' thumbnails in order; in `workers` spawned processes (0: in this process)."""
    if workers <= 0 or len(jobs) <= 4:  # starting processes costs more than a few small decodes
        return [run_job(j) for j in jobs]
    ctx = mp.get_context("spawn")
    out: list[Thumbs] = []
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=ctx) as pool:
        futures = [pool.submit(run_job, j) for j in jobs]
        for fut in futures:
            try:
                out.append(fut.result())
            except BrokenProcessPool:
                out.append(Thumbs([], error="worker: the thumbnail process crashed on this file"))
    return out
