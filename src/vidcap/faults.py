"""Test-only fault injection (tests/test_reliability.py, docs/reliability.md).

VIDCAP_TEST_FAULT set to "<point>:<action>[:<n>]" acts from the n-th time (default 1) this process reaches <point>:
  points:  part_write    a part's temp file is complete, not yet renamed into place
           final_merge   the output's temp file is complete, not yet renamed into place
           dataset_part  a dataset output's part file is complete (more parts or its marker to come)
           final_cleanup the output is in place, the parts folder not yet removed
           compact       a compacted part's temp file is complete, its sources not yet removed
           start         the run takes its lock (a local output)
           before_merge  every row is recorded, the merge not begun
  actions: kill (SIGKILL itself, like a power cut or the OOM killer) or enospc (fail like a full disk);
           at before_merge also unlink or truncate (the first part lost or damaged behind the run's back).
Unset (always, outside tests) it costs one environment lookup per part.
"""

from __future__ import annotations

import errno
import os
import signal
from collections import Counter

from .knobs import knob

FAULT_ENV = "VIDCAP_TEST_FAULT"
_fault_hits: Counter = Counter()


def fault_point(point: str, files=None) -> None:
    spec = knob(FAULT_ENV)
    if not spec or not spec.startswith(point + ":"):
        return
    _, action, *n = spec.split(":")
    _fault_hits[point] += 1
    if _fault_hits[point] < int(n[0] if n else 1):
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    elif action in ("unlink", "truncate") and files:  # a part lost or damaged behind the run's back
        victim = files[0]
        if action == "unlink":
            victim.unlink()
        else:
            victim.write_bytes(victim.read_bytes()[:40])
