"""Shared pieces of the executors (vidcap.runners). The contract they implement (`Executor`, `Job`,
`WorkerReport`) is declared by the session that calls it (vidcap.session), so the session imports nothing
from this floor.
"""

from __future__ import annotations

import sys
import time
from collections import deque

from ..knobs import knob
from ..session import Executor, Job, WorkerReport, safe_extra

__all__ = ["Executor", "Job", "Progress", "WorkerReport", "raise_interrupt", "safe_extra"]


RECENT_SECONDS = 120.0  # the window the ETA's rate is measured over


class Progress:
    """A rich bar on a terminal; in a log (stderr not a terminal) a line every VIDCAP_PROGRESS_SECONDS
    (default 30) with rows done, rows/s and the ETA, so a batch job's log shows the run moving. Every
    executor reports through this class."""

    def __init__(self, total: int, name: str, enabled: bool, stream=None):
        self.bar = None
        self.lines = False
        self.total, self.name, self.n, self.t0 = total, name, 0, time.monotonic()
        self.recent: deque = deque([(self.t0, 0)])  # (time, rows done) over the last RECENT_SECONDS
        self.stream = stream or sys.stderr
        if not enabled:
            return
        if not _is_terminal(self.stream):
            self.lines = True
            self.every = _progress_seconds()
            self.next_line = self.t0 + self.every
            return
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self.bar = Bar(
            TextColumn(f"[bold]{name}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=False,
        )
        self.task = self.bar.add_task(name, total=total, rate="")
        self.bar.start()

    def advance(self, n: int) -> None:
        self.n += n
        if self.bar:
            rate = self.n / max(time.monotonic() - self.t0, 1e-6)
            self.bar.update(self.task, advance=n, rate=f"{rate:.2f} rows/s")
        elif self.lines and time.monotonic() >= self.next_line:
            self.next_line = time.monotonic() + self.every
            print(self.line(), file=self.stream, flush=True)

    def line(self) -> str:
        now = time.monotonic()
        elapsed = max(now - self.t0, 1e-6)
        rate = self.n / elapsed
        self.recent.append((now, self.n))
        while len(self.recent) > 2 and now - self.recent[1][0] > RECENT_SECONDS:
            self.recent.popleft()
        (t_old, n_old), left = self.recent[0], max(self.total - self.n, 0)
        recent = (self.n - n_old) / (now - t_old) if now - t_old > 1e-3 else rate  # the ETA follows the recent rate
        eta = _clock(left / recent) if recent > 0 else "unknown"
        pct = f" ({100 * self.n / self.total:.0f}%)" if self.total else ""
        return f"vidcap: {self.name} {self.n}/{self.total} rows{pct}, {rate:.2f} rows/s, {_clock(elapsed)} elapsed, ETA {eta}"

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
            self.bar = None
        self.lines = False


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _progress_seconds() -> float:
    return float(knob("VIDCAP_PROGRESS_SECONDS"))


def _clock(seconds: float) -> str:
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt
