"""Row sources: every source of rows or items (the ledger's plan, a coordinator's chunks, the engine's
prepared clips) has one method, `take(n, timeout)`; sources of planned rows also say `len`."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")


class RowSource(Protocol[T]):
    """Up to n items ([] when none is ready within `timeout` seconds), None once there are none left."""

    def take(self, n: int, timeout: float = 0.0) -> list[T] | None: ...


class ListSource(Generic[T]):
    """Items handed out in order: a list, or blocks a subclass reads as they are needed (`more`)."""

    def __init__(self, items: Iterable[T] = (), total: int | None = None):
        self.buf: deque[T] = deque(items)
        self.total = len(self.buf) if total is None else total

    def __len__(self) -> int:
        """Items this source gives in all."""
        return self.total

    def more(self) -> list[T] | None:
        """The next block of items, None at the end (a list source has none)."""
        return None

    def take(self, n: int, timeout: float = 0.0) -> list[T] | None:
        while len(self.buf) < n:
            got = self.more()
            if got is None:
                break
            self.buf.extend(got)
        if not self.buf:
            return None
        return [self.buf.popleft() for _ in range(min(n, len(self.buf)))]


class BatchSource(ListSource[dict]):
    """Rows read a block at a time, as they are needed, from Arrow batches or tables (the ledger's plan, one
    share of a plan file); `keep` is what must live as long as they are read (a DuckDB cursor)."""

    def __init__(self, blocks: Iterator, total: int, keep: Any = None):
        super().__init__(total=total)
        self.blocks, self.keep = blocks, keep

    def more(self) -> list[dict] | None:
        block = next(self.blocks, None)
        return None if block is None else block.to_pylist()
