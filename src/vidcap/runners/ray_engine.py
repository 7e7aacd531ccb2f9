"""Many hosts: the same run on Ray Data. The driver takes the run lock and computes the rows to do (as the
single-process runner does); Ray decodes frames in CPU tasks and captions in GPU actors (one per GPU, or one
per tensor-parallel group); results stream back to the driver, which writes the usual atomic parts under
`<output>.parts/` and merges them. Only the driver writes, so a row is saved once; a killed run resumes.

Rows travel pickled in binary columns (`_row`, `_data`, `_out`) so any manifest column type and the
loader's frames survive Arrow blocks unchanged.
"""

from __future__ import annotations

import os
import pickle
from typing import Any

import pandas as pd

from ..errors import UsageError
from ..feeder import init_loader_inline, load_row
from ..manifest import RID
from ..session import Session
from ..stages.base import Item
from .base import Executor, Progress, merge_extras, safe_extra
from .local import process_safely


def check_ray() -> None:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError("--engine ray needs Ray; install it with: pip install 'vidcap[ray]'.") from None


def decode_batch(batch: pd.DataFrame, loader) -> pd.DataFrame:
    """A CPU task: the stage's loader on every row of the batch (errors become that row's `_err`)."""
    init_loader_inline(loader)
    datas, errs = [], []
    for blob in batch["_row"]:
        data, err = load_row(pickle.loads(blob))
        datas.append(b"" if err else pickle.dumps(data, protocol=5))
        errs.append(err or "")
    return pd.DataFrame({RID: batch[RID].values, "_row": batch["_row"].values, "_data": datas, "_err": errs})


class StageActor:
    """A GPU actor: stage.setup once, then process_batch on decoded rows (a TP group's leader when tp > 1)."""

    def __init__(self, blob: bytes, device: str, tp: int):
        self.stage = pickle.loads(blob)
        if tp > 1:
            from . import visible_gpus
            from .multigpu import WorkerSpec
            from .tp import start_group

            spec = WorkerSpec("ray", visible_gpus()[:tp], 0)
            self.stage, self.followers = start_group(spec, blob, self.stage)
        self.stage.setup(device)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        outs: list = [None] * len(batch)
        todo: list[tuple[int, Item]] = []
        for i, (row, data, err) in enumerate(zip(batch["_row"], batch["_data"], batch["_err"])):
            if err:
                outs[i] = {"error": err}
            else:
                todo.append((i, Item(pickle.loads(row), pickle.loads(data))))
        if todo:
            for (i, _), out in zip(todo, process_safely(self.stage, [it for _, it in todo])):
                outs[i] = out
        return pd.DataFrame({RID: batch[RID].values, "_row": batch["_row"].values, "_out": [pickle.dumps(o) for o in outs],
                             "_extra": [pickle.dumps(safe_extra(self.stage))] * len(batch)})


class RayExecutor(Executor):
    """Ray Data: decode in CPU tasks, the stage in actors (one per GPU or tensor-parallel group); results
    stream back to this process, which alone records them."""

    name = "ray"

    def __init__(self, gpus: str | None, tp: int, address: str | None):
        check_ray()
        self.gpus, self.tp, self.address = gpus, tp, address
        self.actor_extras: dict = {}
        self.actors = 0

    def extras(self, session: Session) -> dict:
        return {**merge_extras(list(self.actor_extras.values())), "actors": self.actors}

    def process(self, session: Session, todo: list[dict]) -> None:
        if not todo:
            return
        import ray

        self.stage, self.opts = session.stage, session.opts
        started = not ray.is_initialized()
        if started:
            _init_ray(self.address)
        try:
            self._stream(self._pipeline(todo), session, len(todo))
        except Exception as exc:  # noqa: BLE001
            raise _cause(exc) from None
        finally:
            session.recorder.flush()
            if started:
                ray.shutdown()

    def _pipeline(self, todo: list[dict]):
        import ray
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        actors, gpus_each, device = self._actors()
        self.actors = actors
        batch = max(1, self.stage.batch_size)
        rows = [{RID: r[RID], "_row": pickle.dumps(r)} for r in todo]
        items = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // batch, 1000)))
        decode_cpus = float(os.environ.get("VIDCAP_RAY_DECODE_CPUS", "1"))
        ds = items.map_batches(decode_batch, batch_size=batch, batch_format="pandas",  # type: ignore[arg-type]
                               fn_kwargs={"loader": self.stage.loader()}, num_cpus=decode_cpus)
        # Actors hold their CPU share for the whole run: on a small CPU-only machine a whole CPU each
        # would leave none for the decode tasks, and the pipeline would wait forever.
        actor_cpus = float(os.environ.get("VIDCAP_RAY_ACTOR_CPUS", "1" if gpus_each else "0.5"))
        return ds.map_batches(StageActor, batch_size=batch, batch_format="pandas",
                              fn_constructor_args=(pickle.dumps(self.stage), device, self.tp),
                              compute=ray.data.ActorPoolStrategy(size=actors),
                              num_gpus=gpus_each, num_cpus=actor_cpus)

    def _actors(self) -> tuple[int, float, str]:
        """How many caption actors, GPUs each, and the device they load on."""
        import ray

        text = (self.gpus or "").strip().lower()
        if text.startswith("cpu:"):
            from . import parse_gpus

            return len(parse_gpus(text)), 0, "cpu"
        total = int(ray.cluster_resources().get("GPU", 0))
        if text and text != "all":
            from . import parse_gpus

            total = len(parse_gpus(text, [str(i) for i in range(total)]))
        if total == 0:
            if self.gpus:
                raise UsageError("the Ray cluster has no GPU; use --gpus cpu:N for CPU actors, or drop --engine ray.")
            return 1, 0, self.opts.device or "cpu"
        if total % self.tp:
            raise UsageError(f"--tp {self.tp} does not divide the {total} GPUs of the Ray cluster.")
        return total // self.tp, self.tp, self.opts.device or "cuda:0"

    def _stream(self, ds, session: Session, total: int) -> None:
        progress = Progress(total, self.stage.name, enabled=self.opts.progress)
        recorder = session.recorder
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="pandas"):
                for row, out, extra in zip(batch["_row"], batch["_out"], batch["_extra"]):
                    recorder.record(pickle.loads(row), pickle.loads(out))
                    self.actor_extras[hash(extra)] = pickle.loads(extra)
                progress.advance(len(batch))
                recorder.check_all_failing()
                recorder.maybe_flush()
        finally:
            progress.close()


def _init_ray(address: str | None) -> None:
    import logging

    import ray

    logging.getLogger("ray.data").setLevel(logging.ERROR)
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:  # a Ray of this run's own: never join a cluster someone else started on this host (`ray start`)
        ray.init(address="local", num_cpus=os.cpu_count() or 1, **kwargs)


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
