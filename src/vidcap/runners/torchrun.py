"""Runs launched by torchrun (RANK, WORLD_SIZE, LOCAL_RANK set): every rank runs the same command.

Rank 0 takes the run lock, checks the settings and clears stale markers, then lets the others start (a
key in torchrun's rendezvous store). Each data-parallel rank takes an interleaved share of the unique rows
(positions r, r+N, r+2N, ... of the manifest, so a rerun gives every rank the same share), skips the ones
already saved, writes its own parts (`part-rank<r>-...`) and then a `done-<r>.json` marker holding its
counts. Rank 0 merges once every marker is there. With `--tp K`, K consecutive ranks on one host form a
tensor-parallel group (see tp.py): its rank 0 does the rows, the others follow.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from typing import Any

from ..errors import UsageError
from ..ledger_plan import PlanRows, plan_path, remove_plan, write_plan
from ..session import Session, default_workers
from ..stages.base import RowSource
from .base import Executor, Progress, merge_extras, safe_extra
from .local import run_batches

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

    name = "torchrun"
    can_redo = False  # the other ranks are gone by the merge: a lost part is named, and a rerun redoes it

    def __init__(self, tp: int = 1):
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
        self.rank_extras: list[dict] = []
        self.merged = False
        self.device: str | None = None

    def start(self, session: Session) -> None:
        from .devices import set_parent_death_signal

        set_parent_death_signal()  # torchrun killed: stop too, rather than hold the lock as an orphan
        self.opts = session.opts
        session.books.worker = f"rank{self.dp_rank}"
        self._start_together(session)

    def process(self, session: Session, todo: RowSource) -> None:
        self.device = device = self._device()
        if self.tp > 1:  # the leader's count decides for the group (a follower may see its parts land)
            from .tp import broadcast

            if not broadcast(len(todo) if self.tp_rank == 0 else None):
                return
        elif not todo:
            return
        if self.tp_rank:
            from .tp import follow

            follow(session.stage, device)
            return
        stage: Any = session.stage
        if self.tp > 1:
            from .tp import LeaderStage

            stage = LeaderStage(stage)
        opts = session.opts
        workers = default_workers(stage) if opts.workers is None else opts.workers
        run_batches(
            stage,
            todo,
            session.recorder,
            opts,
            workers=workers,
            device=device,
            progress=Progress(len(todo), stage.name, enabled=opts.progress),
        )

    # -- rank 0 plans once and writes the plan; each rank streams its row groups of it
    def plans(self) -> bool:
        return self.rank == 0

    def rows(self, session: Session, led):
        if self.tp_rank:  # a follower: its leader takes the group's rows
            return []
        path = plan_path(session.books)
        if self.rank == 0:
            write_plan(led, path)
        else:  # rank 0 removed the last run's plan before letting us start; it appears whole (a rename)
            while not path.exists():
                time.sleep(0.2)
        return PlanRows(path, self.dp_rank, self.dp_size)

    def gather(self, session: Session, plan: dict | None) -> dict | None:
        if self.tp_rank:
            return None
        if self._collect(session, 0, -1) is None:
            return None
        return plan  # rank 0's plan counts every rank's rows (skipped included)

    def _collect(self, session: Session, skipped: int, todo: int) -> int | None:
        """Write this rank's done marker; on rank 0, wait for every rank's, sum their counts into the
        session's and return the rows they skipped (None on the other ranks)."""
        session.books.write_note(
            f"done-{self.dp_rank}.json",
            {"counts": dict(session.counts), "skipped": skipped, "todo": todo, "extra": safe_extra(session.stage)},
        )
        if self.rank != 0:
            return None
        names = {f"done-{r}.json" for r in range(self.dp_size)}
        while not names <= {p.name for p in session.books.notes(DONE_GLOB)}:  # torchrun stops all if one fails
            time.sleep(0.5)
        counts: Counter = Counter()
        skipped = 0
        for p in session.books.notes(DONE_GLOB):
            if p.name in names:
                info = json.loads(p.read_text())
                counts.update(info["counts"])
                skipped += info["skipped"]
                self.rank_extras.append(info.get("extra") or {})
        session.counts.clear()
        session.counts.update(counts)
        self.merged = True
        return skipped

    def extras(self, session: Session) -> dict:
        if not self.merged:
            return {"rank": self.rank}
        return {**merge_extras(self.rank_extras), "ranks": self.dp_size}

    def _start_together(self, session: Session) -> None:
        kv = _rendezvous_store()
        if self.rank == 0:
            try:
                session.books.open(session.stage.provenance())
                for p in session.books.notes(DONE_GLOB):
                    p.unlink()
                remove_plan(plan_path(session.books))  # a killed run's: the other ranks wait for this run's
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
        from .tp import group_env, init_group

        group_on_host = self.local_rank // self.tp
        if self._on_gpu():
            from .devices import visible_gpus

            gpus = visible_gpus() or [str(i) for i in range(self.local_world)]
            first = group_on_host * self.tp
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[first : first + self.tp])
        port = int(os.environ.get("MASTER_PORT", "29500")) + 1 + group_on_host
        os.environ.update(group_env(self.tp_rank, self.tp, port))
        init_group(self._device())

    def _on_gpu(self) -> bool:
        if self.opts.device:
            return str(self.opts.device).startswith("cuda")
        import torch

        return torch.cuda.is_available()

    def _device(self) -> str:
        if self.opts.device:
            return self.opts.device
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
