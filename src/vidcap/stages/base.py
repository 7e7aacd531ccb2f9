"""The stage contract: every command (caption, motion, tag) is a Stage the runners drive."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from ..manifest import ABSPATH, range_key, row_key_path


class ResultTable(Protocol):
    """The run's result rows (one per row id: `status`, `error` and the stage's columns) as a stage's
    run-level step sees them; `vidcap.ledger` implements it over DuckDB."""

    columns: list[str]

    def read(self, columns: list[str], where: str = "") -> Any:
        """These columns of every result row (those matching the SQL condition `where`, if given), with the row
        id, as an Arrow table."""

    def update(self, table: Any) -> None:
        """Set the columns of an Arrow table (with the row id column) on the rows it names; new columns are
        added to the output."""

    def fill_null(self, column: str, value: str) -> None:
        """A text column's nulls set to `value`."""

    def count(self, where: str) -> int:
        """Result rows matching an SQL condition over the columns."""


@dataclass
class Item:
    row: dict  # the manifest row (input columns + `_rid` + `_abspath`)
    data: Any  # what the stage's loader returned in a worker process


class Stage:
    name = "stage"  # command name; default output suffix
    suffix = "stage"
    # result columns added to the output (besides status, error); a stage may set its own per instance
    columns: list[str] = []  # noqa: RUF012
    dtypes: dict[str, str] = {}  # noqa: RUF012 (output column -> "Int64" (ints with gaps), "float64", "list[int64]")
    batch_size = 8
    required_columns: tuple[str, ...] = ("path",)
    reads_files = True  # results depend on the file at `path`: its size and mtime are recorded and checked
    default_workers: int | None = None  # decode processes when --workers is not given (None: CPU count - 1)
    # A stage whose result per input row is a list (scenes): the name of that result column, a JSON array of
    # objects with `expand_fields` (name -> SQL type); parts keep one row per input row, the output one row
    # per item (the ledger unnests it, and gathers an existing output back per input row on resume).
    expands: str | None = None
    expand_fields: dict[str, str] = {}  # noqa: RUF012

    def fingerprint(self) -> dict:
        """Settings that make two runs' rows comparable; a resume with other settings is refused."""
        return {"stage": self.name}

    def provenance(self) -> dict:
        return self.fingerprint()

    def row_key(self, row: dict) -> str:
        """The resolved path's key, plus `#t=START,END` for a range row (manifest.row_key_path)."""
        return row_key_path(row.get(ABSPATH, ""), range_key(row))

    def loader(self) -> Callable[[dict], Any]:
        """A picklable callable run in worker processes on each row; raise VidcapError for a bad row."""
        return _identity

    def resolve(self, device: str | None = None) -> None:
        """Cheap preparation the loader depends on (e.g. finding the model files); runs before `loader()`,
        so the decode workers start while `setup` loads the model."""

    def setup(self, device: str | None = None) -> None:
        pass

    def process_batch(self, items: list[Item]) -> list[dict]:
        raise NotImplementedError

    def teardown(self) -> None:
        pass

    def check_tp(self, tp: int) -> None:
        """Refuse a tensor-parallel split the model cannot take (UsageError), before any worker starts."""

    def streams(self) -> bool:
        """True when the stage takes items one by one as they come (continuous batching): the executor then
        calls `process_stream` instead of `process_batch`."""
        return False

    def process_stream(self, source) -> Iterator[tuple[Item, dict]]:
        """(item, output row) in the order they finish; `source` is a vidcap.rows.RowSource of Items. Each
        item comes back exactly once."""
        raise NotImplementedError

    def finish(self, results: ResultTable) -> dict:
        """Run-level work over every result row before the merge (e.g. near-duplicate captions): read and
        update `results`; return figures for the summary."""
        return {}

    def summary_extra(self) -> dict:
        """Stage-specific figures for the end-of-run summary (tokens, cost, flag counts)."""
        return {}


def _identity(row: dict):
    return None
