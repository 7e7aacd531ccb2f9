"""The executor contract: how rows reach the stage, nothing else (the lifecycle is vidcap.session's).

`Session.run(executor)` calls, in order:
    start(session)          take the run lock (or wait for the process that takes it)
    share(unique_rows)      this process's part of the unique rows (all of them, or a torchrun rank's)
    process(session, todo)  hand rows to the stage wherever it runs; results go to session.recorder,
                            or to part files the workers write themselves (their counts then added to
                            session.counts)
    gather(session, plan)   the whole run's plan once every worker is done, or None in a process that
                            does not merge
    extras(session)         stage figures for the summary, from every worker
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import pandas as pd

if TYPE_CHECKING:
    from ..session import Plan, Session


class Executor:
    name = "local"
    can_redo = True  # rows whose saved result went missing before the merge are handed out again
    lazy_rows = False  # takes `todo` as a lazy source (len + take): large manifests then use vidcap.ledger

    def start(self, session: Session) -> None:
        session.books.open(session.stage.provenance())

    def share(self, unique: pd.DataFrame) -> pd.DataFrame:
        return unique

    def process(self, session: Session, todo: list[dict]) -> None:
        """Run the stage on `todo` (possibly empty: a tensor-parallel group still has to agree on that)."""
        raise NotImplementedError

    def gather(self, session: Session, plan: Plan) -> Plan | None:
        return plan

    def extras(self, session: Session) -> dict:
        return session.stage.summary_extra()


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
    except Exception:
        return {}


class Progress:
    def __init__(self, total: int, name: str, enabled: bool):
        self.bar = None
        if enabled:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

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
