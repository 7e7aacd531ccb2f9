"""Run a stage over a manifest in this process (the library's entry point; `vidcap.runners.dispatch`
picks other executors). The lifecycle lives in vidcap.session, the loop in vidcap.runners.local."""

from __future__ import annotations

from .session import RunOptions, Session, default_workers, parse_shard
from .stages.base import Stage

__all__ = ["RunOptions", "default_workers", "parse_shard", "run_stage"]


def run_stage(stage: Stage, manifest, output, opts: RunOptions | None = None) -> dict:
    from .runners.local import LocalExecutor

    return Session(stage, manifest, output, opts).run(LocalExecutor())
