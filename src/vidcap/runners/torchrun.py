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

from ..errors import FatalRunError, UsageError
from ..manifest import RID, rebase_paths
from ..parts import PartStore, needs_redo
from ..runner import Run, select_rows

DONE_GLOB = "done-*.json"


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1") or 1) > 1


def run_torchrun(stage, manifest, output, opts, tp: int = 1) -> dict:
    return RankRun(stage, manifest, output, opts, tp).execute()


def _env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise UsageError(f"{name} is not set; launch with torchrun (it sets RANK, WORLD_SIZE and LOCAL_RANK).")
        return default
    return int(value)


class RankRun(Run):
    def __init__(self, stage, manifest, output, opts, tp: int):
        super().__init__(stage, manifest, output, opts)
        self.rank, self.world = _env_int("RANK"), _env_int("WORLD_SIZE")
        self.local_rank = _env_int("LOCAL_RANK", 0)
        self.local_world = _env_int("LOCAL_WORLD_SIZE", self.world)
        if self.world % tp or self.local_world % tp:
            raise UsageError(f"--tp {tp} must divide the processes per host ({self.local_world}); "
                             "a tensor-parallel group stays on one host.")
        self.tp = tp
        self.dp_rank, self.dp_size, self.tp_rank = self.rank // tp, self.world // tp, self.rank % tp
        self.rank_extras: list[dict] = []

    def execute(self) -> dict:
        from .worker import set_parent_death_signal

        set_parent_death_signal()  # torchrun killed: stop too, rather than hold the lock as an orphan
        t0 = time.monotonic()
        df = select_rows(self.stage, self.manifest, self.opts)
        first = ~df[RID].duplicated()
        fp = dict(self.stage.fingerprint(), columns=list(self.stage.columns))
        store = self.store = PartStore(self.output, fp, overwrite=self.opts.overwrite,
                                       keep_parts=self.opts.keep_parts, worker=f"rank{self.dp_rank}")
        self._start_together(store)
        try:
            unique = df[first]
            share = unique.iloc[self.dp_rank::self.dp_size]
            results = store.load_results(df, self.stage.row_key)
            redo = {r: needs_redo(s, e) for r, s, e in zip(results[RID], results.get("status", []), results.get("error", []))}
            todo = [r for r in share.to_dict("records") if r[RID] not in redo or redo[r[RID]]]
            skipped = len(share) - len(todo)
            device = self._device()
            if self.tp > 1:  # the leader's count decides for the group (a follower may see its parts land)
                from .tp import broadcast

                if not broadcast(len(todo) if self.tp_rank == 0 else None):
                    todo = []
                    if self.tp_rank:
                        return self._rank_summary(len(share), skipped, t0)
            if self.tp_rank:
                from .tp import follow

                follow(self.stage, device)
                return self._rank_summary(len(share), skipped, t0)
            self.opts.device = device
            if self.tp > 1:
                from .tp import LeaderStage

                self.stage = LeaderStage(self.stage)
            self._process(todo)
            store._write_json(store.dir / f"done-{self.dp_rank}.json",
                              {"counts": dict(self.counts), "skipped": skipped, "todo": len(todo), "extra": self.stage.summary_extra()})
            if self.rank != 0:
                return self._rank_summary(len(share), skipped, t0)
            return self._merge(df, first, t0)
        finally:
            store.close()

    def _start_together(self, store: PartStore) -> None:
        kv = _rendezvous_store()
        if self.rank == 0:
            try:
                store.open(self.stage.provenance())
                for p in store.files(DONE_GLOB):
                    p.unlink()
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
            from . import visible_gpus

            gpus = visible_gpus() or [str(i) for i in range(self.local_world)]
            first = group_on_host * self.tp
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[first:first + self.tp])
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

    def _rank_summary(self, rows: int, skipped: int, t0: float) -> dict:
        wall = time.monotonic() - t0
        processed = sum(self.counts.values())
        return {"rows": rows, "unique": rows, "duplicates": 0, "skipped": skipped, "processed": processed,
                "ok": self.counts["ok"], "failed": {k: v for k, v in self.counts.items() if k != "ok"},
                "wall_s": round(wall, 3), "rows_per_s": round(processed / wall, 3) if wall > 0 else 0.0,
                "rank": self.rank}

    def _merge(self, df, first, t0: float) -> dict:
        store = self.store
        markers = [store.dir / f"done-{r}.json" for r in range(self.dp_size)]
        names = {p.name for p in markers}
        while not names <= {p.name for p in store.files(DONE_GLOB)}:  # torchrun stops every rank if one fails
            time.sleep(0.5)
        counts: Counter = Counter()
        skipped = todo = 0
        for p in markers:
            info = json.loads(p.read_text())
            counts.update(info["counts"])
            skipped += info["skipped"]
            todo += info["todo"]
            self.rank_extras.append(info.get("extra") or {})
        self.counts = counts
        results = store.load_results(df, self.stage.row_key)
        results = results[results[RID].isin(df[RID])]  # rows no longer in the manifest do not count
        missing = int((~df.loc[first, RID].isin(results[RID])).sum())
        if missing:  # a rank's part went missing: never a silent output with empty rows
            raise FatalRunError(f"{missing} rows have no result after every rank finished; the parts are kept: "
                                "run the same command again to finish them.")
        results, extra = self.stage.finish_results(results)
        duplicates = int((~first).sum())
        summary = self._summary(len(df), skipped, duplicates, todo, time.monotonic() - t0, results)
        summary.update(extra)
        store.finalize(rebase_paths(df, self.manifest, self.output), results, summary, self.stage.dtypes,
                       failed_out=self.opts.failed_out)
        return summary

    def _extra(self) -> dict:
        from .multigpu import merge_extras

        return {**merge_extras(self.rank_extras), "ranks": self.dp_size}


def _rendezvous_store():
    """torchrun's key-value store (the agent's, or one rank 0 hosts), under a prefix for this attempt."""
    try:
        import torch.distributed as dist
    except ImportError:
        raise UsageError("runs under torchrun need PyTorch; install vidcap[hf].") from None
    store, _, _ = next(dist.rendezvous("env://"))
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return dist.PrefixStore(f"vidcap/{attempt}/", store)
