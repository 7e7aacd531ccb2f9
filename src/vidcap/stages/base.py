"""The stage contract: every command (caption, motion, tag) is a Stage the runners drive."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ..manifest import ABSPATH, row_key_path


@dataclass
class Item:
    row: dict  # the manifest row (input columns + `_rid` + `_abspath`)
    data: Any  # what the stage's loader returned in a worker process


class Stage:
    name = "stage"  # command name; default output suffix
    suffix = "stage"
    # result columns added to the output (besides status, error); a stage may set its own per instance
    columns: list[str] = []  # noqa: RUF012
    dtypes: dict[str, str] = {}  # noqa: RUF012 (output column -> pandas dtype, e.g. "Int64": ints with gaps)
    batch_size = 8
    required_columns: tuple[str, ...] = ("path",)
    reads_files = True  # results depend on the file at `path`: its size and mtime are recorded and checked
    default_workers: int | None = None  # decode processes when --workers is not given (None: CPU count - 1)

    def fingerprint(self) -> dict:
        """Settings that make two runs' rows comparable; a resume with other settings is refused."""
        return {"stage": self.name}

    def provenance(self) -> dict:
        return self.fingerprint()

    def row_key(self, row: dict) -> str:
        return row_key_path(row.get(ABSPATH, ""))

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
        """(item, output row) in the order they finish; `source.take(n, block)` gives up to n Items ([] when
        none is ready), None once there are none left. Each item comes back exactly once."""
        raise NotImplementedError

    def finish_results(self, results):
        """Run-level work on all result rows before the merge (e.g. duplicate-caption flags)."""
        return results, {}

    def summary_extra(self) -> dict:
        """Stage-specific figures for the end-of-run summary (tokens, cost, flag counts)."""
        return {}


def _identity(row: dict):
    return None
