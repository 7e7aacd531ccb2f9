"""The ledger's plan as a file, for executors whose rows are read by other processes.

A large run's coordinator plans once in DuckDB (vidcap.ledger); an executor whose rows leave this process
as a whole (torchrun's other ranks, Ray's read tasks) gets them from one Parquet file written from table
`todo` in manifest order, in row groups of `GROUP_ROWS`. A torchrun rank streams the row groups g with
g % ranks == its rank: the groups split the file, so every row goes to exactly one rank, and no rank reads
the manifest or the parts. The file lives in the parts folder and is written again by every run (it is the
plan of that run only); a kill leaves it there, and the next run's coordinator replaces it.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

from .ledger import REL, ROW, _sql_text
from .manifest import atomic_local

PLAN_FILE = "plan.parquet"
GROUP_ROWS = 4096  # a rank's share is balanced to within one group


def plan_path(store) -> Path:
    return Path(store.dir) / PLAN_FILE


def write_plan(led, path: Path, group_rows: int = GROUP_ROWS) -> int:
    """Table `todo`'s rows (as `Ledger.source` gives them) to `path`, atomically; returns their number."""
    sql = f"SELECT m.* EXCLUDE ({ROW}, {REL}) FROM m SEMI JOIN todo USING ({ROW}) ORDER BY m.{ROW}"

    def write(tmp: str) -> None:
        led.con.execute(
            f"COPY ({sql}) TO '{_sql_text(tmp)}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE {group_rows})"
        )

    atomic_local(path, write, fresh=True)
    return led.con.execute("SELECT count(*) FROM todo").fetchone()[0]


def remove_plan(store) -> None:
    """A killed run's plan file (and its temp files): the coordinator holds the lock, nobody reads them."""
    folder = Path(store.dir)
    for p in [folder / PLAN_FILE, *folder.glob(f".{PLAN_FILE}.*.tmp")]:
        p.unlink(missing_ok=True)


class PlanRows:
    """One share of a plan file as a lazy row source (`len`, `take(n, timeout)`, as `ledger.RowSource`):
    the row groups g with g % world == rank, read 4,096 rows at a time."""

    def __init__(self, path: Path, rank: int = 0, world: int = 1, batch_rows: int = 4096):
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.file = pq.ParquetFile(self.path)
        meta = self.file.metadata
        self.groups = [g for g in range(meta.num_row_groups) if g % world == rank]
        self.total = sum(meta.row_group(g).num_rows for g in self.groups)
        self.whole = world == 1
        self.reader = self.file.iter_batches(batch_size=batch_rows, row_groups=self.groups) if self.groups else None
        self.buf: deque = deque()

    def __len__(self) -> int:
        return self.total

    def take(self, n: int, timeout: float = 0.0) -> list[dict] | None:
        while len(self.buf) < n and self.reader is not None:
            try:
                batch = next(self.reader)
            except StopIteration:
                self.reader = None
                break
            self.buf.extend(batch.to_pylist())
        if not self.buf:
            return None
        return [self.buf.popleft() for _ in range(min(n, len(self.buf)))]

    def close(self) -> None:
        self.reader = None
        self.file.close()
