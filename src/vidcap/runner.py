"""Run a stage over a manifest (the library's entry points): `run_stage` in this process, `run` with the
executor the config's `execution` asks for. The lifecycle lives in vidcap.session, the loops in vidcap.runners."""

from __future__ import annotations

from .config import Execution, RunConfig, RunOptions, RunScope, Tuning, default_workers, parse_shard
from .runners import pick_executor
from .runners.local import LocalExecutor
from .session import Session
from .stages.base import Stage

__all__ = [
    "Execution",
    "RunConfig",
    "RunOptions",
    "RunScope",
    "Tuning",
    "default_workers",
    "parse_shard",
    "run",
    "run_stage",
]


def run_stage(stage: Stage, manifest, output, config: RunConfig | None = None) -> dict:
    """One run in this process (the execution's GPUs, tensor-parallel and Ray settings are not used)."""
    return Session(stage, manifest, output, config).run(LocalExecutor())


def run(stage: Stage, manifest, output, config: RunConfig) -> dict:
    """One run with the executor `config.execution` picks; returns the run summary."""
    return Session(stage, manifest, output, config).run(pick_executor(stage, config))
