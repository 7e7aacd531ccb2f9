"""One process: decode workers feed the stage in this process. `run_batches` is the worker loop every
executor shares (this one, each worker of a host or Ray actor, each torchrun rank)."""

from __future__ import annotations

import time

from ..config import RunConfig
from ..console import Progress
from ..errors import FatalRunError, format_error
from ..feeder import Feeder
from ..procs import sigterm_interrupts
from ..session import Executor, Job, Recorder, WorkerReport, safe_extra
from ..stages.base import Item, Stage


class LocalExecutor(Executor):
    """The stage runs in this process; decode worker processes feed it."""

    def run(self, job: Job) -> list[WorkerReport]:
        todo, recorder, t0 = job.rows(), job.recorder("w0"), time.monotonic()
        if len(todo):
            run_batches(job.stage, todo, recorder, job.opts, job.workers(), progress=len(todo))
        return [WorkerReport("w0", recorder.counts, safe_extra(job.stage), time.monotonic() - t0)]


def run_batches(
    stage: Stage, rows, recorder: Recorder, opts: RunConfig, workers: int, device: str | None = None, progress=0
) -> None:
    """The worker loop every executor shares: load `rows` (a list or a RowSource) in `workers` processes while
    the stage runs on what they loaded, record each result, and save what is buffered before returning or
    raising. `progress`: the rows to show a progress bar for (0: none)."""
    device = device or opts.device
    bar = Progress(progress, stage.name, enabled=opts.progress and progress > 0)
    feeder = None
    with sigterm_interrupts():
        try:
            stage.resolve(device)  # the loader may carry the model's preprocessor to the workers
            feeder = Feeder(stage.loader(), rows, workers, depth=stage.batch_size * 2 + 2 * max(workers, 1))
            if workers > 0:  # worker processes start and decode while the model loads
                feeder.start()
                stage.setup(device)
            else:  # in-thread loading would race this thread's imports while the model loads
                stage.setup(device)
                feeder.start()
            source = QueueSource(feeder, recorder, bar)  # rows that failed to load are recorded as they come
            if stage.streams():  # continuous batching: clips flow in one by one
                for item, out in stage.process_stream(source):
                    recorder.record(item.row, out)
                    bar.advance(1)
                    recorder.check_all_failing()
                    recorder.maybe_flush()
            else:
                for batch in _batches(source, stage.batch_size, opts.batch_wait):
                    for item, out in zip(batch, process_safely(stage, batch), strict=False):
                        recorder.record(item.row, out)
                    recorder.check_all_failing()
                    bar.advance(len(batch))
                    recorder.maybe_flush()
            recorder.flush()
        except (KeyboardInterrupt, FatalRunError):
            if feeder is not None:
                feeder.close()
            recorder.flush()
            raise
        finally:
            if feeder is not None:
                feeder.close()
            bar.close()
            stage.teardown()


def _batches(source: QueueSource, size: int, batch_wait: float):
    """Full batches when rows come fast; a partial one after `batch_wait` so the model never idles long."""
    batch: list[Item] = []
    deadline = 0.0
    while (got := source.take(size - len(batch), max(0.0, deadline - time.monotonic()) if batch else 1.0)) is not None:
        if got and not batch:
            deadline = time.monotonic() + batch_wait
        batch += got
        if len(batch) >= size or (batch and not got):
            yield batch
            batch = []
    if batch:
        yield batch


class QueueSource:
    """The feeder as a vidcap.rows.RowSource of loaded Items; rows whose loading failed are recorded here."""

    def __init__(self, feeder: Feeder, recorder: Recorder, progress: Progress):
        self.feeder, self.recorder, self.progress = feeder, recorder, progress
        self.done = False

    def take(self, n: int, timeout: float = 0.0) -> list[Item] | None:
        if self.done:
            return None
        out: list[Item] = []
        while len(out) < n:
            got = self.feeder.take(n - len(out), 0.0 if out else timeout)
            if got is None:
                if self.feeder.error is not None:
                    raise self.feeder.error
                self.done = True
                return out or None
            if not got:
                if not out:
                    self.recorder.maybe_flush()
                return out
            failed = 0
            for row, data, err in got:
                if err:
                    self.recorder.record(row, {"error": err})
                    failed += 1
                    self.recorder.maybe_flush()
                else:
                    out.append(Item(row, data))
            if failed:
                self.progress.advance(failed)
        return out


def process_safely(stage: Stage, batch: list[Item]) -> list[dict]:
    """stage.process_batch, with a model exception turned into that row's error (the batch is split to find it)."""
    try:
        return stage.process_batch(batch)
    except (FatalRunError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001
        if len(batch) == 1:
            return [{"error": _model_error(exc)}]
        outs = []
        for item in batch:
            try:
                outs.extend(stage.process_batch([item]))
            except (FatalRunError, KeyboardInterrupt):
                raise
            except Exception as one:  # noqa: BLE001
                outs.append({"error": _model_error(one)})
        return outs


def _model_error(exc: Exception) -> str:
    name = type(exc).__name__
    code = "oom" if "OutOfMemory" in name or "out of memory" in str(exc).lower() else "model"
    return format_error(code, f"{name}: {exc}")
