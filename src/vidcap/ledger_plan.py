"""The ledger's plan as a file, for torchrun's ranks: table `todo` in manifest order, written by rank 0 to the
parts folder in row groups of `GROUP_ROWS`; rank r of N streams rows [r*n/N, (r+1)*n/N), reading only the
groups that hold them, so every row goes to exactly one rank. Every run writes it anew.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from .rows import BatchSource
from .storage import is_remote, open_binary
from .tables import copy_to

PLAN_FILE = "plan.parquet"
GROUP_ROWS = 4096  # a rank reads at most two groups it shares with its neighbours


def plan_path(sink):
    """The plan file of a run (`sink`: its session.Sink): a local Path, or a remote one beside
    remote parts (every rank, on any host, reads it there)."""
    path = sink.note_path(PLAN_FILE)
    return path if is_remote(path) else Path(path)


def write_plan(led, path: Path, group_rows: int = GROUP_ROWS) -> int:
    """Table `todo`'s rows (as `Ledger.source` gives them) to `path`, atomically; returns their number."""
    copy_to(led.con, led.todo_sql(), f"FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {group_rows}", path, led.work)
    return led._count("todo")


def remove_plan(path) -> None:
    """A killed run's plan file (and its temp files): the coordinator holds the lock, nobody reads them."""
    for p in [path, *path.parent.glob(f".{path.name}.*.tmp")]:
        try:
            p.unlink(missing_ok=True)
        except FileNotFoundError:
            pass


class PlanRows(BatchSource):
    """One share of a plan file as a lazy row source: rank r of `world` takes the contiguous rows
    [r * n // world, (r + 1) * n // world), reading only the row groups that hold them, a group at a time."""

    def __init__(self, path, rank: int = 0, world: int = 1):
        self.path = path
        file = pq.ParquetFile(open_binary(path) if is_remote(path) else Path(path))
        meta = file.metadata
        start, stop = meta.num_rows * rank // world, meta.num_rows * (rank + 1) // world
        spans, at = [], 0  # (row group, first row, end row) within that group
        for g in range(meta.num_row_groups):
            size = meta.row_group(g).num_rows
            lo, hi = max(start, at), min(stop, at + size)
            if lo < hi:
                spans.append((g, lo - at, hi - at))
            at += size
        blocks = (file.read_row_group(g).slice(lo, hi - lo) for g, lo, hi in spans)
        super().__init__(blocks, stop - start, keep=file)
