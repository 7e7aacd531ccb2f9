"""A run's settings as one frozen value: `RunConfig` (run, execution, tuning), built once by the CLI or a
library caller and recorded in run.json; nothing changes it once a run starts. The environment's settings
(`VIDCAP_*`) are read in vidcap.knobs; a backend's options are its own frozen class (vidcap.backends.base).
A leaf module: the CLI imports it without loading the run machinery.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from .errors import UsageError


@dataclass(frozen=True)
class RunScope:
    """Which rows a run does and where its results go."""

    limit: int | None = None
    shard: tuple[int, int] | None = None  # (index, count): every count-th row from index
    overwrite: bool = False
    keep_parts: bool = False
    failed_out: str | None = None  # failed rows go to this file, the output keeps only ok rows
    check_files: bool = True  # on resume, redo rows whose file changed size or mtime since its result
    retry_failed: bool = False  # redo every failed row of an earlier run, not only retryable errors


@dataclass(frozen=True)
class Execution:
    """How the rows are run: processes, devices, executor. None of it changes a row's result."""

    workers: int | None = None  # decode processes; 0 = decode in a thread of this process
    device: str | None = None
    progress: bool = True
    executor: str = "local"  # --engine: local (this host) or ray
    gpus: str | None = None  # --gpus: one worker per GPU ("all", "N", "0,1,3", "cpu:N")
    tp: int = 1  # tensor-parallel GPUs per worker
    address: str | None = None  # a Ray cluster's address
    ray_env: tuple[str, ...] = ()  # environment variables passed to Ray's actors
    ray_actors: int | None = None  # at most this many Ray actors

    def here(self) -> Execution:
        """The same decode processes and device, run by this process (no GPU workers, no cluster)."""
        return Execution(workers=self.workers, device=self.device, progress=self.progress)


@dataclass(frozen=True)
class Tuning:
    """How often results are saved and how long a batch waits: speed against work redone after a kill."""

    part_rows: int | None = None  # rows per part; None: PART_ROWS, more when rows come faster (see Recorder)
    part_seconds: float = 30.0
    batch_wait: float = 1.0  # seconds to wait for a full batch before running a partial one


GROUPS = {"run": RunScope, "execution": Execution, "tuning": Tuning}
FLAT = {f.name: group for group, cls in GROUPS.items() for f in fields(cls)}  # setting name -> its group


@dataclass(frozen=True, init=False)
class RunConfig:
    """A run's settings, built once (by the CLI, or a library caller) and never changed: `run` (which rows,
    where results go), `execution` (processes, devices, executor) and `tuning` (part size, batch wait).
    Recorded in run.json (`config`). The environment's settings (`VIDCAP_*`) are read in vidcap.knobs.

    Built from the groups or from their settings by name, `RunConfig(workers=0, limit=10)`; a setting is
    read by name too (`config.workers`). `dataclasses.replace(config, workers=2)` gives a changed copy."""

    run: RunScope
    execution: Execution
    tuning: Tuning

    def __init__(
        self,
        run: RunScope | None = None,
        execution: Execution | None = None,
        tuning: Tuning | None = None,
        **settings: Any,
    ):
        unknown = sorted(set(settings) - set(FLAT))
        if unknown:
            raise UsageError(f"unknown run setting '{unknown[0]}'; known settings: {', '.join(sorted(FLAT))}.")
        given: dict[str, Any] = {
            "run": run or RunScope(),
            "execution": execution or Execution(),
            "tuning": tuning or Tuning(),
        }
        for group in GROUPS:
            mine = {k: v for k, v in settings.items() if FLAT[k] == group}
            object.__setattr__(self, group, replace(given[group], **mine) if mine else given[group])

    def record(self) -> dict:
        """The settings as data, for run.json."""
        return {group: asdict(getattr(self, group)) for group in GROUPS}

    # Each setting read by name (the executors' way): config.workers is config.execution.workers.
    @property
    def limit(self) -> int | None:
        return self.run.limit

    @property
    def shard(self) -> tuple[int, int] | None:
        return self.run.shard

    @property
    def overwrite(self) -> bool:
        return self.run.overwrite

    @property
    def keep_parts(self) -> bool:
        return self.run.keep_parts

    @property
    def failed_out(self) -> str | None:
        return self.run.failed_out

    @property
    def check_files(self) -> bool:
        return self.run.check_files

    @property
    def retry_failed(self) -> bool:
        return self.run.retry_failed

    @property
    def workers(self) -> int | None:
        return self.execution.workers

    @property
    def device(self) -> str | None:
        return self.execution.device

    @property
    def progress(self) -> bool:
        return self.execution.progress

    @property
    def executor(self) -> str:
        return self.execution.executor

    @property
    def gpus(self) -> str | None:
        return self.execution.gpus

    @property
    def tp(self) -> int:
        return self.execution.tp

    @property
    def address(self) -> str | None:
        return self.execution.address

    @property
    def ray_env(self) -> tuple[str, ...]:
        return self.execution.ray_env

    @property
    def ray_actors(self) -> int | None:
        return self.execution.ray_actors

    @property
    def part_rows(self) -> int | None:
        return self.tuning.part_rows

    @property
    def part_seconds(self) -> float:
        return self.tuning.part_seconds

    @property
    def batch_wait(self) -> float:
        return self.tuning.batch_wait


RunOptions = RunConfig  # the name library callers and executors have used


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
        assert n >= 1 and 0 <= i < n
    except Exception:  # noqa: BLE001
        raise UsageError(f"--shard '{text}' is not I/N with 0 <= I < N (e.g. 0/8).") from None
    return i, n


def default_batch_size(backend: str, device: str | None, concurrency: int) -> int:
    """--batch-size when not given (rows the model works on at once, for every command): 4 requests per
    connection for an API; for an in-process model on a GPU, 64 (the engine's measured point on the H200 for
    all three families: 11.2-29 videos/s steady; it takes fewer where GPU memory is short), else 8. The GPU
    count comes from NVML: CUDA stays uninitialised here, so processes forked later are safe."""
    if backend == "openai":
        return 4 * max(1, concurrency)
    in_process = backend == "hf" or backend.startswith("hf-")
    if not in_process or (device and not device.startswith("cuda")):
        return 8
    try:
        import torch

        return 64 if torch.cuda.device_count() > 0 else 8
    except ImportError:
        return 8


def default_workers(stage=None) -> int:
    """Decode processes when --workers is not given: the stage's own choice, else all cores but one
    (that one feeds the model)."""
    if stage is not None and stage.default_workers is not None:
        return int(stage.default_workers)
    return max(1, (os.cpu_count() or 2) - 1)
