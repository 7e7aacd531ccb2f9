"""Many hosts: the same run on Ray Data. The driver takes the run lock and computes the rows to do (as the
single-process runner does); Ray decodes frames in CPU tasks and captions in GPU actors (one per GPU, or one
per tensor-parallel group); results stream back to the driver, which writes the usual atomic parts under
`<output>.parts/` and merges them. Only the driver writes, so a row is saved once; a killed run resumes.

A large plan (vidcap.ledger, over PLAN_FILE_ROWS rows): the driver writes the rows to do to a Parquet file in
the parts folder (vidcap.ledger_plan), which Ray reads in tasks pinned to the driver's node, so the driver
never holds the rows in memory.

Rows travel pickled in binary columns (`_row`, `_data`, `_out`) so any manifest column type and the
loader's frames survive Arrow blocks unchanged. Reaching the cluster, the actors' environment and noticing a
lost head are in ray_cluster.py.
"""

from __future__ import annotations

import os
import pickle
import queue
import shlex
import sys
import threading
from dataclasses import replace
from typing import Any

import pandas as pd

from ..errors import FatalRunError, UsageError
from ..feeder import init_loader_inline, load_row
from ..knobs import knob
from ..manifest import RID
from ..stages.base import Item
from .base import Executor, Job, Progress, WorkerReport, safe_extra
from .local import process_safely
from .ray_cluster import (
    HeadWatch,
    QuietStderr,
    apply_environment,
    connect,
    forget_ray,
    gcs_address,
    run_environment,
)

FLUSH_ENV = "VIDCAP_RAY_FLUSH_SECONDS"
PLAN_FILE_ROWS = 100_000  # a plan larger than this reaches Ray as a file (read where the driver runs)


def check_ray() -> None:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("--engine ray needs Ray; install it with: pip install 'vidcap[ray]'.") from None


def pack_rows(batch) -> pd.DataFrame:
    """A read task's Arrow batch of plan rows as the pipeline's `_row` column (row dicts as the ledger gives them)."""
    rows = batch.to_pylist()
    return pd.DataFrame({RID: [r[RID] for r in rows], "_row": [pickle.dumps(r) for r in rows]})


def decode_batch(batch: pd.DataFrame, loader, env: dict) -> pd.DataFrame:
    """A CPU task: the stage's loader on every row of the batch (errors become that row's `_err`)."""
    apply_environment(env)
    init_loader_inline(loader)
    datas, errs = [], []
    for blob in batch["_row"]:
        data, err = load_row(pickle.loads(blob))
        datas.append(b"" if err else pickle.dumps(data, protocol=5))
        errs.append(err or "")
    return pd.DataFrame({RID: batch[RID].values, "_row": batch["_row"].values, "_data": datas, "_err": errs})


class StageActor:
    """A GPU actor: stage.setup once, then process_batch on decoded rows (a TP group's leader when tp > 1)."""

    def __init__(self, blob: bytes, device: str, tp: int, env: dict):
        apply_environment(env)  # secrets, before the stage (and its backend) is unpickled
        self.stage, self.name = pickle.loads(blob), f"actor-{os.getpid()}-{id(self):x}"
        if tp > 1:
            from .devices import WorkerSpec, visible_gpus
            from .tp import start_group

            spec = WorkerSpec("ray", visible_gpus()[:tp], 0)
            self.stage, self.followers = start_group(spec, blob, self.stage)
        self.stage.setup(device)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        outs: list = [None] * len(batch)
        todo: list[tuple[int, Item]] = []
        for i, (row, data, err) in enumerate(zip(batch["_row"], batch["_data"], batch["_err"], strict=False)):
            if err:
                outs[i] = {"error": err}
            else:
                todo.append((i, Item(pickle.loads(row), pickle.loads(data))))
        if todo:
            for (i, _), out in zip(todo, process_safely(self.stage, [it for _, it in todo]), strict=False):
                outs[i] = out
        return pd.DataFrame(
            {
                RID: batch[RID].values,
                "_row": batch["_row"].values,
                "_out": [pickle.dumps(o) for o in outs],
                "_extra": [pickle.dumps((self.name, safe_extra(self.stage)))] * len(batch),
            }
        )


class HeadLost(Exception):
    """The cluster's head stopped answering mid-run."""


class RayExecutor(Executor):
    """Ray Data: decode in CPU tasks, the stage in actors (one per GPU or tensor-parallel group, or CPU actors
    sized from the cluster's CPUs); results stream back to this process, which alone records them."""

    name, unit = "ray", "actors"

    def __init__(
        self,
        gpus: str | None,
        tp: int,
        address: str | None,
        env: list[str] | None = None,
        max_actors: int | None = None,
    ):
        check_ray()
        if max_actors is not None and max_actors < 1:
            raise UsageError(f"--ray-actors must be at least 1, not {max_actors}.")
        self.gpus, self.tp, self.address, self.max_actors = gpus, tp, address, max_actors
        self.env, self.secret_env = run_environment(env)  # a name that is not set is refused before the run

    def rows(self, job: Job):
        """The plan's rows: a plan file read by Ray tasks for a large plan; a small one (or any plan over a Ray
        client, whose disk is not the cluster's) goes to Ray in the driver's memory."""
        src = job.rows()
        if len(src) <= PLAN_FILE_ROWS or (self.address and self.address.startswith("ray://")):
            return src
        return job.rows(as_file=True)

    def run(self, job: Job) -> list[WorkerReport]:
        import ray

        todo = self.rows(job)
        if not len(todo):
            return []
        self.stage, self.opts = job.stage, job.opts
        # A lost driver or head costs at most this many seconds of finished rows.
        recorder = job.recorder(
            "w0", opts=replace(self.opts, part_seconds=min(self.opts.part_seconds, knob(FLUSH_ENV)))
        )
        reports: dict[str, WorkerReport] = {}
        started = not ray.is_initialized()
        quiet = QuietStderr() if started and QuietStderr.applies() else None
        lost = False
        try:
            if started:
                connect(
                    self.address,
                    {"env_vars": self.env} if self.env else {},
                    num_cpus=None if self.address else os.cpu_count() or 1,
                )
            watch = HeadWatch(gcs_address() if self.address else None)
            try:
                self._stream(self._pipeline(todo), recorder, reports, len(todo), watch)
            finally:
                watch.stop()
        except HeadLost:
            lost = True
        except UsageError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise _cause(exc) from None
        finally:
            recorder.flush()
            if lost:
                forget_ray()  # Ray's threads may still write: fd 2 stays filtered until the process ends
            else:
                if started and ray.is_initialized():
                    ray.shutdown()
                if quiet:
                    quiet.restore()
        if lost:
            raise FatalRunError(
                f"the Ray cluster at {self.address} stopped answering mid-run (its head is gone); "
                f"the {sum(recorder.counts.values())} rows finished so far are saved, so start the cluster again "
                f"and resume with: {resume_command()}"
            )
        return list(reports.values())

    def _pipeline(self, todo):
        import ray
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        batch = max(1, self.stage.batch_size)
        actors, gpus_each, device = self._actors(-(-len(todo) // batch))
        items = self._items(todo, batch)
        # Actors hold their CPU share for the whole run. On CPU-only nodes, actors and decode tasks take half a
        # CPU each, so a 1-CPU node left after another node is lost still fits one of each; whole CPUs there
        # would leave the decode tasks waiting forever.
        cpu_share = "1" if gpus_each else "0.5"
        decode_cpus = float(knob("VIDCAP_RAY_DECODE_CPUS", cpu_share))
        ds = items.map_batches(
            decode_batch,  # type: ignore[arg-type]
            batch_size=batch,
            batch_format="pandas",
            fn_kwargs={"loader": self.stage.loader(), "env": self.secret_env},
            num_cpus=decode_cpus,
        )
        actor_cpus = float(knob("VIDCAP_RAY_ACTOR_CPUS", cpu_share))
        return ds.map_batches(
            StageActor,
            batch_size=batch,
            batch_format="pandas",
            fn_constructor_args=(pickle.dumps(self.stage), device, self.tp, self.secret_env),
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_gpus=gpus_each,
            num_cpus=actor_cpus,
        )

    def _items(self, todo, batch: int):
        """The rows as a dataset of (`_vidcap_rid`, `_row`): a plan file is read by tasks on this node (the
        file is on its disk) a row group at a time; a small plan goes in whole from the driver's memory."""
        import ray
        import ray.data

        from ..ledger_plan import PlanRows

        blocks = max(1, min(len(todo) // batch, 1000))
        if isinstance(todo, PlanRows):
            pin: dict[str, Any] = {}
            if self.address:  # a cluster: the read tasks run where the file is
                import warnings

                from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

                here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
                pin = {"ray_remote_args": {"scheduling_strategy": here}}
                warnings.filterwarnings("ignore", message=".*ray_remote_args.*")  # no named form for this yet
            # No CPU slot: reading the plan is light, and on the driver's node actors may hold every CPU
            # (a pinned read that waited for one would wait forever).
            ds = ray.data.read_parquet(str(todo.path), num_cpus=0, **pin)
            return ds.map_batches(pack_rows, batch_size=batch, batch_format="pyarrow")
        if not isinstance(todo, list):  # a lazy source Ray cannot read (a Ray client): taken whole
            todo = [r for part in iter(lambda: todo.take(4096), None) for r in part]
        rows = [{RID: r[RID], "_row": pickle.dumps(r)} for r in todo]
        return ray.data.from_items(rows, override_num_blocks=blocks)

    def _actors(self, batches: int) -> tuple[int, float, str]:
        """How many actors, GPUs each, and the device they load on: one per GPU (or TP group) of the
        cluster, or on a cluster without GPUs one per two CPUs (the other CPU decodes); never more than
        --ray-actors, nor than there are batches."""
        import ray

        from .devices import parse_gpus

        text = (self.gpus or "").strip().lower()
        cap = min(self.max_actors or batches, max(1, batches))
        if text.startswith("cpu:"):
            return min(len(parse_gpus(text)), cap), 0, "cpu"
        resources = ray.cluster_resources()
        total = int(resources.get("GPU", 0))
        if text and text != "all":
            total = len(parse_gpus(text, [str(i) for i in range(total)]))
        if total == 0:
            if self.gpus:
                raise UsageError("the Ray cluster has no GPU; use --gpus cpu:N for CPU actors, or drop --gpus.")
            return min(max(1, int(resources.get("CPU", 1)) // 2), cap), 0, self.opts.device or "cpu"
        if total % self.tp:
            raise UsageError(f"--tp {self.tp} does not divide the {total} GPUs of the Ray cluster.")
        return min(total // self.tp, cap), self.tp, self.opts.device or "cuda:0"

    def _stream(self, ds, recorder, reports: dict[str, WorkerReport], total: int, watch: HeadWatch) -> None:
        """Record the pipeline's results as they come; each actor's report gets the rows it did."""
        progress = Progress(total, self.stage.name, enabled=self.opts.progress)
        try:
            for batch in _batches(ds, watch):
                for row, out, extra in zip(batch["_row"], batch["_out"], batch["_extra"], strict=False):
                    name, figures = pickle.loads(extra)
                    report = reports.setdefault(name, WorkerReport(name))
                    report.extra = figures
                    report.counts[recorder.record(pickle.loads(row), pickle.loads(out))] += 1
                progress.advance(len(batch))
                recorder.check_all_failing()
                recorder.maybe_flush()
        finally:
            progress.close()


def _batches(ds, watch: HeadWatch):
    """The pipeline's result batches, read in a thread so this one can notice a lost head: Ray itself would
    retry for a minute and then end the process without a word."""
    results: queue.Queue = queue.Queue(maxsize=8)

    def pull() -> None:
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
                results.put(("batch", batch))
            results.put(("end", None))
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread
            results.put(("error", exc))

    threading.Thread(target=pull, name="vidcap-ray-results", daemon=True).start()
    while True:
        try:
            kind, value = results.get(timeout=0.5)
        except queue.Empty:
            if watch.lost:
                raise HeadLost() from None
            continue
        if kind == "end":
            return
        if kind == "error":
            if watch.lost:
                raise HeadLost() from None
            raise value
        yield value


def resume_command() -> str:
    """The command line of this run, to paste again."""
    args = sys.argv[1:]
    return "vidcap " + shlex.join(args) if args else "the same command"


def _cause(exc: BaseException) -> BaseException:
    """The vidcap error inside a Ray task error (a bad API key in an actor stops the run with its sentence)."""
    seen = exc
    for _ in range(5):
        if isinstance(seen, UsageError):
            return seen
        nxt = getattr(seen, "cause", None) or seen.__cause__
        if nxt is None:
            break
        seen = nxt
    return exc
