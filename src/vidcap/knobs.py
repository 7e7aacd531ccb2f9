"""Every `VIDCAP_*` environment variable vidcap reads, in one table: its type, default and meaning.

Modules read them through `knob(NAME)` (never `os.environ` directly; tests/test_knobs.py checks), so a value
that does not parse is one sentence naming the variable, whichever module reads it, and `settings()` gives
the ones set for the run record (`run.json`). docs/settings.md is the user's copy of this table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .errors import UsageError


@dataclass(frozen=True)
class Knob:
    name: str
    kind: type  # int, float or str
    default: Any  # None: the reader computes it (see `doc`)
    doc: str
    low: float | None = None  # a smaller number is raised to this
    test_only: bool = False


KNOBS: dict[str, Knob] = {
    k.name: k
    for k in (
        Knob("VIDCAP_LEDGER_MEMORY", str, "512MB", "DuckDB's memory cap for the run's bookkeeping; past it, it spills"),
        Knob("VIDCAP_COMPACT_PARTS", int, 100, "parts a worker writes before it merges them into one file", low=2),
        Knob("VIDCAP_DATASET_ROWS", int, 1 << 20, "rows per part file of a dataset-folder output", low=1),
        Knob("VIDCAP_PROGRESS_SECONDS", float, 30.0, "seconds between progress lines without a terminal", low=0.5),
        Knob("VIDCAP_REMOTE_TIMEOUT", float, 60.0, "seconds a remote connection or one read may stall"),
        Knob("VIDCAP_REMOTE_DEADLINE", float, None, "seconds one remote file may take in all (10 x the timeout)"),
        Knob("VIDCAP_PREFILL_KERNELS", str, "auto", "the engine's fused prefill kernels: auto or off"),
        Knob("VIDCAP_CHUNK_ROWS", int, 0, "rows per hand-out to a GPU worker (0: the stage's batch size)", low=0),
        Knob("VIDCAP_RAY_CONNECT_TIMEOUT", float, 20.0, "seconds to reach a Ray cluster's head", low=0.1),
        Knob("VIDCAP_RAY_LOST_AFTER", float, 5.0, "seconds of a silent Ray head before the run stops", low=0.1),
        Knob("VIDCAP_RAY_FLUSH_SECONDS", float, 5.0, "seconds between the Ray driver's part writes", low=0.1),
        Knob("VIDCAP_RAY_ACTOR_CPUS", float, 1.0, "CPUs Ray reserves for an actor (its decoders run beside it)"),
        Knob(
            "VIDCAP_TEST_FAULT", str, "", "tests: <point>:<action>[:<n>] fault injection (vidcap.parts)", test_only=True
        ),
        Knob("VIDCAP_FAKE_DELAY", float, 0.0, "tests: seconds the fake captioner sleeps per batch", test_only=True),
    )
}
_WHAT = {int: "a whole number", float: "a number", str: "text"}


def knob(name: str, default: Any = None) -> Any:
    """The variable's value as its type: `default` (else the table's) when it is unset or empty; a value
    that does not parse is a UsageError naming it."""
    k = KNOBS[name]
    raw = os.environ.get(name, "").strip()
    if not raw:
        return k.default if default is None else default
    try:
        value = k.kind(raw)
    except ValueError:
        raise UsageError(f"{name} must be {_WHAT[k.kind]} ({k.doc}), not '{raw}'; fix or unset it.") from None
    return max(k.low, value) if k.low is not None else value


def check() -> None:
    """Read every variable once: one that does not parse is a UsageError before a run starts."""
    for name in KNOBS:
        knob(name)


def settings() -> dict[str, str]:
    """The variables of the table that are set (as written), for the run record."""
    return {name: os.environ[name] for name, k in KNOBS.items() if os.environ.get(name) and not k.test_only}
