"""One host, many GPUs: a coordinator hands out rows in small chunks to one worker process per GPU (or per
tensor-parallel group); each worker runs the usual batch loop (vidcap.runners.local.run_batches) with its own decode pool
and writes its own parts into the shared `<output>.parts/` folder.

Exactly once: the coordinator holds the run lock and computes the rows to do once. It pulls them a chunk at
a time from the plan (the ledger's lazy source: only the chunks in flight
are held in memory). A chunk stays owned by its worker until the worker reports it flushed to a part file. When a worker dies, the coordinator reads
that worker's part files and hands the chunk rows it did not save to the other workers; a row that was in
flight in two deaths is recorded as failed with the retryable `worker` code (redone by the next run).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import replace
from multiprocessing.connection import wait as wait_conns

from ..errors import WORKER, FatalRunError, UsageError, format_error
from ..knobs import knob
from ..manifest import RID
from ..rows import ListSource
from ..session import default_workers
from .base import Executor, Job, Progress, WorkerReport, raise_interrupt
from .devices import WorkerSpec
from .worker import worker_main

CHUNK_ENV = "VIDCAP_CHUNK_ROWS"  # rows per hand-out (default: the stage's batch size)


def make_specs(groups: list[list[str]], workers: int | None) -> list[WorkerSpec]:
    """Split the decode processes (--workers, default CPU count - 1) across the GPU workers."""
    total = default_workers() if workers is None else workers
    each = 0 if total <= 0 else max(1, total // len(groups))
    prefix = "cpu" if groups[0][0] == "cpu" else "gpu"
    return [WorkerSpec(f"{prefix}{i}", g, each) for i, g in enumerate(groups)]


# -- coordinator --------------------------------------------------------------------------------
class _Worker:
    def __init__(self, spec: WorkerSpec, proc, conn):
        self.spec, self.proc, self.conn = spec, proc, conn
        self.alive = True
        self.said_bye = False
        self.hungry = False


class HostExecutor(Executor):
    """One worker process per GPU (or tensor-parallel group, or `cpu:N` slot) of this host; this process
    coordinates: it hands out chunks of rows and hands a dead worker's unsaved rows to the others."""

    name, unit = "host", "workers"

    def __init__(self, groups: list[list[str]]):
        self.groups = groups

    def run(self, job: Job) -> list[WorkerReport]:
        specs = make_specs(self.groups, job.opts.workers)
        todo = job.rows()
        if not len(todo):
            return [WorkerReport(s.wid) for s in specs]
        return _Coordinator(job, specs).run(todo)


class _Coordinator:
    def __init__(self, job: Job, specs: list[WorkerSpec]):
        self.job, self.stage, self.opts = job, job.stage, job.opts
        self.specs = specs
        self.workers: dict[str, _Worker] = {}
        self.reports = {s.wid: WorkerReport(s.wid) for s in specs}
        self.recorder = job.recorder("main")  # rows the coordinator itself records (worker deaths)

    def run(self, todo: ListSource[dict]) -> list[WorkerReport]:
        """Hand out `todo` a chunk at a time as workers ask, until every row is saved by some worker."""
        self.t0 = time.monotonic()
        self.chunk = int(knob(CHUNK_ENV)) or max(1, self.stage.batch_size)
        self.total, self.source = len(todo), todo
        self.exhausted = False
        self.pending: deque = deque()  # chunks to hand out: a dead worker's unsaved rows
        self.chunks: dict[int, list[dict]] = {}  # chunks pending or in flight (dropped once acked)
        self.next_cid = 0
        self.owner: dict[int, str] = {}
        self.crashes: Counter = Counter()
        self.progress = Progress(len(todo), self.stage.name, enabled=self.opts.progress)
        main = threading.current_thread() is threading.main_thread()
        prev = signal.signal(signal.SIGTERM, raise_interrupt) if main else None
        try:
            self._start_workers()
            self._serve()
            self._stop_workers(graceful=True)
        except BaseException:
            self._stop_workers(graceful=False)
            self.recorder.flush()
            raise
        finally:
            self.progress.close()
            if prev is not None:
                signal.signal(signal.SIGTERM, prev)
        self.recorder.flush()
        return list(self.reports.values())

    def _queue_chunk(self, rows: list[dict]) -> None:
        self.chunks[self.next_cid] = rows
        self.pending.append(self.next_cid)
        self.next_cid += 1

    def _next_chunk(self) -> int | None:
        """A chunk to hand out: a requeued one first, else the next rows of the plan."""
        if not self.pending and not self.exhausted:
            rows = self.source.take(self.chunk, 0.0)
            if rows:
                self._queue_chunk(rows)
            else:
                self.exhausted = True
        return self.pending.popleft() if self.pending else None

    def _left(self) -> bool:
        return bool(self.pending or self.owner or not self.exhausted)

    def _start_workers(self) -> None:
        ctx = mp.get_context("spawn")
        blob = pickle.dumps(self.stage)
        for spec in self.specs:
            mine, theirs = ctx.Pipe(duplex=True)
            wopts = replace(self.opts, workers=spec.decode_workers, progress=False, device=spec.device())
            proc = ctx.Process(
                target=worker_main,
                name=f"vidcap-{spec.wid}",
                args=(spec, blob, self.job.sink, wopts, theirs, os.getpid()),
            )
            proc.start()
            theirs.close()  # so a dead worker's pipe reads as closed here
            self.workers[spec.wid] = _Worker(spec, proc, mine)
        self._write_workers_file()

    def _write_workers_file(self) -> None:
        """Which process is which worker (for operators and tests): <output>.parts/workers.json."""
        info = {w.spec.wid: {"pid": w.proc.pid, "devices": w.spec.devices} for w in self.workers.values()}
        self.job.sink.write_note("workers.json", {"coordinator": os.getpid(), "workers": info})

    def _serve(self) -> None:
        while self._left():
            live = [w for w in self.workers.values() if w.alive]
            if not live:
                self.recorder.flush()
                why = [r.lost for r in self.reports.values() if r.lost] or ["they exited early"]
                left = max(0, self.total - self.progress.n)
                raise FatalRunError(
                    f"all {len(self.workers)} workers stopped ({why[-1]}) with {left} rows left; "
                    "finished rows are saved. Run the same command again to resume."
                )
            for conn in wait_conns([w.conn for w in live], timeout=0.5):
                self._receive(next(w for w in live if w.conn is conn))
            for w in live:
                if w.alive and w.proc.exitcode is not None:
                    self._ended(w)

    def _receive(self, w: _Worker) -> None:
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):  # the worker is gone
            w.proc.join(timeout=5)
            if w.said_bye:
                w.alive = False
            elif w.alive:
                self._on_death(w, f"worker {w.spec.wid} exited with code {w.proc.exitcode}")
            return
        kind, payload = msg
        if kind == "need":
            w.hungry = True
            self._hand_out()
            if w.hungry:
                self._send(w, ("idle", None))
        elif kind == "ack":
            cids, counts = payload
            for cid in cids:
                if self.owner.get(cid) == w.spec.wid:
                    del self.owner[cid]
                    self.chunks.pop(cid, None)
            self.reports[w.spec.wid].counts.update(counts)
        elif kind == "progress":
            self.progress.advance(payload)
        elif kind == "bye":
            w.said_bye = True
            self.reports[w.spec.wid].extra = payload
            self.reports[w.spec.wid].seconds = time.monotonic() - self.t0
        elif kind == "fatal":
            self._on_fatal(w, *payload)

    def _drain(self, w: _Worker) -> None:
        """Read what a finished worker sent before it exited (its last acks)."""
        while w.alive:
            try:
                if not w.conn.poll(0):
                    return
            except (EOFError, OSError):
                return
            self._receive(w)

    def _ended(self, w: _Worker) -> None:
        self._drain(w)
        if w.alive and w.said_bye:
            w.alive = False
        elif w.alive:
            self._on_death(w, f"worker {w.spec.wid} exited with code {w.proc.exitcode}")

    def _on_fatal(self, w: _Worker, kind: str, message: str) -> None:
        if kind == "FatalRunError":
            raise FatalRunError(message)
        if kind == "UsageError":
            raise UsageError(message)
        print(f"vidcap: worker {w.spec.wid} crashed: {message}", file=sys.stderr)

    def _hand_out(self) -> None:
        for w in self.workers.values():
            if w.alive and w.hungry:
                cid = self._next_chunk()
                if cid is None:
                    return
                self.owner[cid] = w.spec.wid
                w.hungry = False
                self._send(w, ("chunk", (cid, self.chunks[cid])))

    def _send(self, w: _Worker, msg) -> None:
        try:
            w.conn.send(msg)
        except (BrokenPipeError, EOFError, OSError):
            pass  # its death is noticed by the loop

    def _on_death(self, w: _Worker, why: str) -> None:
        w.alive = False
        self.reports[w.spec.wid].lost = why
        lost = [cid for cid, owner in self.owner.items() if owner == w.spec.wid]
        saved = self.job.sink.saved_ids(w.spec.wid, {r[RID] for cid in lost for r in self.chunks[cid]})
        redo: list[dict] = []
        failed: list[dict] = []
        for cid in lost:
            del self.owner[cid]
            for row in self.chunks.pop(cid):
                if row[RID] in saved:
                    continue
                self.crashes[row[RID]] += 1
                (failed if self.crashes[row[RID]] >= 2 else redo).append(row)
        for row in failed:
            self.recorder.record(
                row, {"error": format_error(WORKER, f"two worker processes died with this row in flight ({why})")}
            )
        self.reports[w.spec.wid].counts[WORKER] += len(failed)
        self.recorder.flush()
        if redo:
            self._queue_chunk(redo)
        print(f"vidcap: {why}; {len(redo)} of its rows go to the other workers.", file=sys.stderr)
        self._hand_out()

    def _stop_workers(self, graceful: bool) -> None:
        workers = self.workers
        for w in workers.values():
            if w.alive and w.proc.exitcode is None:
                if graceful:
                    self._send(w, ("stop", None))
                else:
                    w.proc.terminate()  # SIGTERM: the worker saves its finished rows and exits
        deadline = time.monotonic() + (600 if graceful else 30)
        for w in workers.values():
            while w.alive and w.proc.exitcode is None and time.monotonic() < deadline:
                if graceful and w.conn.poll(0.2):
                    self._receive(w)
                else:
                    w.proc.join(timeout=0.2)
            if graceful and w.proc.exitcode is not None:
                self._ended(w)
            if w.proc.exitcode is None:
                w.proc.kill()
                w.proc.join()
            w.conn.close()
