"""Runs launched by torchrun: every rank runs the same command. Rank 0 locks and plans, then lets the others
start (a key in torchrun's store); each data-parallel rank streams its share of the plan file
(ledger_plan.py), writes its own parts and a `done-<r>.json` marker with its counts; rank 0 merges once
every marker is there. With `--tp K`, K consecutive ranks of a host form a tensor-parallel group (tp.py).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from ..errors import UsageError
from ..gpus import visible_gpus
from ..ledger_plan import plan_path, remove_plan
from ..procs import die_with_parent
from ..session import Executor, Job, Sink, WorkerReport, safe_extra
from .local import run_batches
from .tp import LeaderStage, broadcast, follow, group_env, init_group

DONE_GLOB = "done-*.json"


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def _env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise UsageError(f"{name} is not set; launch with torchrun (it sets RANK, WORLD_SIZE and LOCAL_RANK).")
        return default
    return int(value)


class TorchrunExecutor(Executor):
    """This process is one torchrun rank: it does an interleaved share of the rows; rank 0 merges."""

    name, unit = "torchrun", "ranks"
    can_redo = False  # the other ranks are gone by the merge: a lost part is named, and a rerun redoes it

    def __init__(self, tp: int = 1, device: str | None = None):
        self.rank, self.world = _env_int("RANK"), _env_int("WORLD_SIZE")
        self.local_rank = _env_int("LOCAL_RANK", 0)
        self.local_world = _env_int("LOCAL_WORLD_SIZE", self.world)
        if self.world % tp or self.local_world % tp:
            raise UsageError(
                f"--tp {tp} must divide the processes per host ({self.local_world}); "
                "a tensor-parallel group stays on one host."
            )
        self.tp = tp
        self.dp_rank, self.dp_size, self.tp_rank = self.rank // tp, self.world // tp, self.rank % tp
        self.device_opt = device  # --device, else this rank's GPU (or the CPU)

    def start(self, sink: Sink, lock: Callable[[], None]) -> None:
        die_with_parent(signal.SIGTERM)  # torchrun killed: stop too, rather than hold the lock as an orphan
        self._start_together(sink, lock)

    def plans(self) -> bool:
        return self.rank == 0  # rank 0 plans once and writes the plan; each rank streams its share of it

    def run(self, job: Job) -> list[WorkerReport]:
        device = self._device()
        if self.tp_rank:  # a follower: its leader takes the group's rows and reports them
            if broadcast(None):
                follow(job.stage, device)
            return []
        todo, me, t0 = job.rows(self.dp_rank, self.dp_size, as_file=True), f"rank{self.dp_rank}", time.monotonic()
        recorder = job.recorder(me)
        if (broadcast(len(todo)) if self.tp > 1 else len(todo)) > 0:
            stage: Any = LeaderStage(job.stage) if self.tp > 1 else job.stage
            run_batches(stage, todo, recorder, job.opts, job.workers(), device, progress=len(todo))
        report = WorkerReport(me, recorder.counts, safe_extra(job.stage), time.monotonic() - t0)
        job.sink.write_note(f"done-{self.dp_rank}.json", {**vars(report), "counts": dict(report.counts)})
        if self.rank != 0:
            return [report]
        names = {f"done-{r}.json" for r in range(self.dp_size)}
        while not names <= {p.name for p in job.sink.notes(DONE_GLOB)}:  # torchrun stops all if one fails
            time.sleep(0.5)
        return [WorkerReport(**json.loads(p.read_text())) for p in job.sink.notes(DONE_GLOB) if p.name in names]

    def _start_together(self, sink: Sink, lock: Callable[[], None]) -> None:
        kv = _rendezvous_store()
        if self.rank == 0:
            try:
                lock()
                for p in sink.notes(DONE_GLOB):
                    p.unlink()
                remove_plan(plan_path(sink))  # a killed run's: the other ranks wait for this run's
            except UsageError as exc:
                kv.set("ready", f"error:{exc}")
                raise
            kv.set("ready", "ok")
        else:
            kv.wait(["ready"])
            state = kv.get("ready").decode()
            if state != "ok":
                raise UsageError(state.split(":", 1)[1] if ":" in state else "rank 0 could not start the run.")
        if self.tp > 1:
            self._join_tp_group()

    def _join_tp_group(self) -> None:
        """Re-pin this rank into its own K-rank world (transformers shards over the whole default group)."""
        group_on_host = self.local_rank // self.tp
        if self._on_gpu():
            gpus = visible_gpus() or [str(i) for i in range(self.local_world)]
            first = group_on_host * self.tp
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[first : first + self.tp])
        port = int(os.environ.get("MASTER_PORT", "29500")) + 1 + group_on_host
        os.environ.update(group_env(self.tp_rank, self.tp, port))
        init_group(self._device())

    def _on_gpu(self) -> bool:
        if self.device_opt:
            return self.device_opt.startswith("cuda")
        import torch

        return torch.cuda.is_available()

    def _device(self) -> str:
        if self.device_opt:
            return self.device_opt
        if not self._on_gpu():
            return "cpu"
        return f"cuda:{self.tp_rank}" if self.tp > 1 else f"cuda:{self.local_rank}"


def _rendezvous_store():
    """torchrun's key-value store (the agent's, or one rank 0 hosts), under a prefix for this attempt."""
    try:
        import torch.distributed as dist
    except ImportError:
        raise UsageError("runs under torchrun need PyTorch; install vidcap[hf].") from None
    store, _, _ = next(dist.rendezvous("env://"))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"vidcap/{attempt}/", store)
