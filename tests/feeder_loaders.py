"""Loaders for tests/test_feeder.py; a module of its own so that decode worker processes can import them."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field


@dataclass
class Scripted:
    """Loads a row as its path in upper case; a path in `crash` kills the worker process (as a segfault or an
    OOM kill would), one in `bad` raises (a file the decoder rejects), one in `slow` sleeps first."""

    crash: frozenset = field(default_factory=frozenset)
    bad: frozenset = field(default_factory=frozenset)
    slow: frozenset = field(default_factory=frozenset)
    sleep: float = 0.01

    def __call__(self, row: dict):
        path = row["path"]
        if path in self.crash:
            os.kill(os.getpid(), signal.SIGKILL)
        if path in self.slow:
            time.sleep(self.sleep)
        if path in self.bad:
            raise ValueError(f"cannot decode {path}")
        return path.upper()
