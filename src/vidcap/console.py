"""What a run shows on stderr: its progress (a bar on a terminal, a line every so often in a log), through a
stderr that a closed pipe cannot break (`vidcap ... 2>&1 | head -1` stops the progress output, never the run)."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from collections import deque

from .knobs import knob


class SafeStderr:
    """Wraps the process's stderr: once a write or flush fails (the reader went away), fd 2 points at
    /dev/null and every later write is dropped; the run itself carries on and exits as it would have."""

    def __init__(self, inner):
        self.inner = inner
        self.broken = False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self.inner.write(text)
            except (BrokenPipeError, OSError, ValueError):
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.inner.flush()
            except (BrokenPipeError, OSError, ValueError):
                self._drop()

    def _drop(self) -> None:
        self.broken = True
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, 2)  # the interpreter's own last flush of stderr then goes nowhere, quietly
            os.close(null)
        except OSError:
            pass

    def __getattr__(self, name):
        return getattr(self.inner, name)


def protect_stderr() -> None:
    """Install SafeStderr once for this process."""
    if not isinstance(sys.stderr, SafeStderr) and sys.stderr is not None:
        sys.stderr = SafeStderr(sys.stderr)


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


class FilteredStderr:
    """Lines a library writes straight to file descriptor 2 kept out of vidcap's output (Ray's C++ core
    worker writes error-level lines there: an actor's constructor arguments in the object store, 'Failed to
    push error', reconnect attempts). Until `restore()`, fd 2 is a pipe read by a thread that drops the lines
    matching `drop` (and their indented continuations) and passes everything else on; Python's own
    `sys.stderr` writes to the real stream, so a terminal stays a terminal for the progress bar."""

    @staticmethod
    def applies() -> bool:
        """Only when Python's stderr is file descriptor 2 (not a test's capture or an embedding app's stream)."""
        try:
            return sys.stderr.fileno() == 2
        except (AttributeError, OSError, ValueError):
            return False

    def __init__(self, drop: re.Pattern[bytes]) -> None:
        self.drop = drop
        sys.stderr.flush()
        self.saved = os.dup(2)
        self.old_stderr = sys.stderr
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        sys.stderr = open(  # noqa: SIM115 - lives until restore()
            os.dup(self.saved),
            "w",
            buffering=1,
            encoding=getattr(sys.stderr, "encoding", None) or "utf-8",
            errors="backslashreplace",
        )
        self.thread = threading.Thread(target=self._pump, args=(read,), name="vidcap-stderr", daemon=True)
        self.thread.start()

    def _pump(self, read: int) -> None:
        dropping = False
        with os.fdopen(read, "rb") as pipe:
            for line in pipe:
                if self.drop.match(line):
                    dropping = True
                    continue
                if dropping and line[:1] in (b" ", b"\t"):
                    continue
                dropping = False
                try:
                    os.write(self.saved, line)
                except OSError:
                    return

    def restore(self) -> None:
        sys.stderr.flush()
        os.dup2(self.saved, 2)  # closes the pipe's write end: the thread reads to its end and stops
        self.thread.join(timeout=2.0)
        sys.stderr.close()
        sys.stderr = self.old_stderr
        os.close(self.saved)
