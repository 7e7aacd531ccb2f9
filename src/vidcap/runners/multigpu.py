"""One host, many GPUs: a coordinator hands rows out in chunks, pulled lazily from the plan, to one worker
process per GPU (or tensor-parallel group), each running the usual loop (worker.run_worker) and writing its
own parts; the Ray executor runs the same coordinator with actors for workers (ray_engine.py).

A chunk stays its worker's until the worker acks it saved in a part. When a worker dies, its unsaved chunk
rows (its parts are read) go to the others; a row in flight in two deaths is recorded as failed with the
retryable `worker` code.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import sys
import time
from collections import Counter, deque
from dataclasses import replace
from multiprocessing.connection import wait as wait_conns

from ..config import RunConfig, default_workers
from ..console import Progress
from ..errors import WORKER, FatalRunError, UsageError, format_error
from ..knobs import knob
from ..manifest import RID
from ..procs import sigterm_interrupts
from ..rows import ListSource
from ..session import Executor, Job, WorkerReport
from .worker import WorkerSpec, worker_main

CHUNK_ENV = "VIDCAP_CHUNK_ROWS"  # rows per hand-out (default: the stage's batch size)


def make_specs(groups: list[list[str]], workers: int | None) -> list[WorkerSpec]:
    """Split the decode processes (--workers, default CPU count - 1) across the GPU workers."""
    total = default_workers() if workers is None else workers
    each = 0 if total <= 0 else max(1, total // len(groups))
    prefix = "cpu" if groups[0][0] == "cpu" else "gpu"
    return [WorkerSpec(f"{prefix}{i}", g, each) for i, g in enumerate(groups)]


# -- coordinator --------------------------------------------------------------------------------
class _Worker:
    def __init__(self, spec: WorkerSpec, link):
        self.spec, self.link = spec, link
        self.alive = True
        self.said_bye = False
        self.hungry = False


class ProcessLink:
    """A worker process and its pipe. Every link (ray_engine.ActorLink too) has this shape: send/poll/recv (recv
    raises EOFError once the worker is gone), `ended` (why it stopped, None while it runs), join, stop, close."""

    def __init__(self, proc, conn):
        self.proc, self.conn, self.pid = proc, conn, proc.pid
        self.send, self.poll, self.recv = conn.send, conn.poll, conn.recv

    def ended(self) -> str | None:
        return None if self.proc.exitcode is None else f"exited with code {self.proc.exitcode}"

    def join(self, timeout: float) -> None:
        self.proc.join(timeout=timeout)

    def stop(self, force: bool) -> None:
        if force:
            self.proc.kill()
            self.proc.join()
        else:
            self.proc.terminate()  # SIGTERM: the worker saves its finished rows and exits

    def close(self) -> None:
        self.conn.close()


class HostExecutor(Executor):
    """One worker process per GPU (or tensor-parallel group, or `cpu:N` slot) of this host."""

    name, unit = "host", "workers"

    def __init__(self, groups: list[list[str]]):
        self.groups = groups

    def run(self, job: Job) -> list[WorkerReport]:
        specs = make_specs(self.groups, job.opts.workers)
        todo = job.rows()
        if not len(todo):
            return [WorkerReport(s.wid) for s in specs]
        self.job, self.blob = job, pickle.dumps(job.stage)
        return Coordinator(job, specs, self).run(todo)

    # -- the coordinator's pool: spawned processes, so each starts clean of this process's CUDA and threads
    def launch(self, spec: WorkerSpec, opts: RunConfig) -> ProcessLink:
        mine, theirs = mp.get_context("spawn").Pipe(duplex=True)
        args = (spec, self.blob, self.job.sink, opts, theirs, os.getpid())
        proc = mp.get_context("spawn").Process(target=worker_main, name=f"vidcap-{spec.wid}", args=args)
        proc.start()
        theirs.close()  # so a dead worker's pipe reads as closed here
        return ProcessLink(proc, mine)

    def wait(self, links: list, timeout: float) -> list:
        ready = wait_conns([link.conn for link in links], timeout=timeout)
        return [link for link in links if link.conn in ready]

    def replace(self, spec: WorkerSpec) -> WorkerSpec | None:
        return None  # a dead worker's rows go to the others


class Coordinator:
    """Hands rows out a chunk at a time to the workers `pool` starts and links to (HostExecutor's processes,
    ray_engine's actors) until every row is saved by some worker."""

    def __init__(self, job: Job, specs: list[WorkerSpec], pool):
        self.job, self.stage, self.opts, self.pool = job, job.stage, job.opts, pool
        self.specs = specs
        self.workers: dict[str, _Worker] = {}
        self.reports = {s.wid: WorkerReport(s.wid) for s in specs}
        self.stores: dict = {}  # part stores of workers whose parts this process writes (Ray actors')
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
        with sigterm_interrupts():
            try:
                for spec in self.specs:
                    self._start(spec)
                self._serve()
                self._stop_workers(graceful=True)
            except BaseException:
                self._stop_workers(graceful=False)
                self.recorder.flush()
                raise
            finally:
                self.progress.close()
        self.recorder.flush()
        return list(self.reports.values())

    def saved(self) -> int:
        """Rows the workers have saved so far."""
        return sum(sum(r.counts.values()) for r in self.reports.values())

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

    def _start(self, spec: WorkerSpec) -> None:
        device = self.opts.device or spec.device()  # --device is refused with --gpus, not with Ray
        ex = replace(self.opts.execution, workers=spec.decode_workers, progress=False, device=device)
        self.workers[spec.wid] = _Worker(spec, self.pool.launch(spec, replace(self.opts, execution=ex)))
        self.reports.setdefault(spec.wid, WorkerReport(spec.wid))
        # which process is which worker (for operators and tests)
        info = {w.spec.wid: {"pid": w.link.pid, "devices": w.spec.devices} for w in self.workers.values()}
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
            for link in self.pool.wait([w.link for w in live], 0.5):
                self._drain(next(w for w in live if w.link is link))
            for w in live:
                if w.alive and w.link.ended() is not None:
                    self._ended(w)

    def _receive(self, w: _Worker) -> None:
        try:
            msg = w.link.recv()
        except (EOFError, OSError):  # the worker is gone
            w.link.join(5)
            self._gone(w)
            return
        kind, payload = msg
        if kind == "need":
            w.hungry = True
            self._hand_out()
            if w.hungry:
                self._send(w, ("idle", None))
        elif kind == "part":  # a worker without the output's disk (a Ray actor): its part is written here
            if w.spec.wid not in self.stores:
                self.stores[w.spec.wid] = self.job.sink.store(w.spec.wid)
            self.stores[w.spec.wid].write_part(payload)
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
        """Read what a worker has sent (a finished one's last acks)."""
        while w.alive:
            try:
                if not w.link.poll(0):
                    return
            except (EOFError, OSError):
                return
            self._receive(w)

    def _ended(self, w: _Worker) -> None:
        self._drain(w)
        self._gone(w)

    def _gone(self, w: _Worker) -> None:
        """A worker's process or actor has ended: done if it said goodbye, else a death."""
        if w.alive and w.said_bye:
            w.alive = False
        elif w.alive:
            self._on_death(w, f"worker {w.spec.wid} {w.link.ended()}")

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
            w.link.send(msg)
        except (BrokenPipeError, EOFError, OSError):
            pass  # its death is noticed by the loop

    def _on_death(self, w: _Worker, why: str) -> None:
        w.alive = False
        self.reports[w.spec.wid].lost = why
        lost = [cid for cid, owner in self.owner.items() if owner == w.spec.wid]
        saved = self.job.sink.store(w.spec.wid).saved_rids({r[RID] for cid in lost for r in self.chunks[cid]})
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
        spec = self.pool.replace(w.spec)  # a Ray actor lost with its node: a new one takes its place
        whom = "the other workers" if spec is None else f"the others and a new worker {spec.wid}"
        print(f"vidcap: {why}; {len(redo)} of its rows go to {whom}.", file=sys.stderr)
        if spec is not None:
            self._start(spec)
        self._hand_out()

    def _stop_workers(self, graceful: bool) -> None:
        workers = self.workers
        for w in workers.values():
            if w.alive and w.link.ended() is None:
                if graceful:
                    self._send(w, ("stop", None))
                else:
                    w.link.stop(force=False)
        deadline = time.monotonic() + (600 if graceful else 30)
        for w in workers.values():
            while w.alive and w.link.ended() is None and time.monotonic() < deadline:
                if graceful and w.link.poll(0.2):
                    self._receive(w)
                else:
                    w.link.join(0.2)
            if graceful and w.link.ended() is not None:
                self._ended(w)
            if w.link.ended() is None:
                w.link.stop(force=True)
            w.link.close()
