"""Shared pieces of the executors (vidcap.runners). The contract they implement, `Executor`, is declared
by the session that calls it (vidcap.session), so the session imports nothing from this floor.
"""

from __future__ import annotations

import time

from ..session import Executor

__all__ = ["Executor", "Progress", "merge_extras", "raise_interrupt", "safe_extra"]


def merge_extras(extras: list[dict]) -> dict:
    """Several workers' stage figures as one: numbers add up (tokens, cost), the rest is the first seen."""
    merged: dict = {}
    for extra in extras:
        for k, v in extra.items():
            if isinstance(v, bool):  # e.g. fast_path: true only if it held on every worker
                merged[k] = merged.get(k, True) and v
                continue
            both_numbers = isinstance(v, (int, float)) and isinstance(merged.get(k, 0), (int, float))
            merged[k] = merged.get(k, 0) + v if both_numbers else merged.get(k, v)
    return merged


def safe_extra(stage) -> dict:
    """A worker's stage figures; a failure to compute them never costs the run."""
    try:
        return stage.summary_extra()
    except Exception:  # noqa: BLE001
        return {}


class Progress:
    def __init__(self, total: int, name: str, enabled: bool):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            self.bar = Bar(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[rate]}"),
                           TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task(name, total=total, rate="")
            self.t0 = time.monotonic()
            self.n = 0
            self.bar.start()

    def advance(self, n: int) -> None:
        if self.bar:
            self.n += n
            rate = self.n / max(time.monotonic() - self.t0, 1e-6)
            self.bar.update(self.task, advance=n, rate=f"{rate:.2f} rows/s")

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
            self.bar = None


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt
