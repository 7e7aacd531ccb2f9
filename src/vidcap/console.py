"""stderr that a closed pipe cannot break: `vidcap ... 2>&1 | head -1` stops the progress output, never the run."""

from __future__ import annotations

import os
import sys


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
