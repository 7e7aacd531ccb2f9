"""A coordinator's worker (multigpu.py): run_batches over rows pulled a chunk at a time, each chunk acked once
its rows are in a part; in a process of this host (`worker_main`, a pipe) or a Ray actor (ray_engine.py)."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass

from ..errors import FatalRunError, UsageError
from ..manifest import RID
from ..procs import die_with_parent, reap
from ..session import Sink, Watcher, safe_extra
from .local import run_batches
from .tp import start_group


@dataclass
class WorkerSpec:
    wid: str  # names its part files: part-<wid>-<ns>-<seq>.parquet
    devices: list[str]  # GPU ids as the coordinator sees them, or ["cpu", ...]
    decode_workers: int

    @property
    def on_cpu(self) -> bool:
        return self.devices[0] == "cpu"

    @property
    def tp(self) -> int:
        return len(self.devices)

    def env(self) -> dict:
        # Pinning by CUDA_VISIBLE_DEVICES: the worker sees only its GPUs, as cuda:0..tp-1.
        return {"CUDA_VISIBLE_DEVICES": "" if self.on_cpu else ",".join(self.devices)}

    def device(self, rank: int = 0) -> str:
        return "cpu" if self.on_cpu else f"cuda:{rank}"


class ChunkSource(Watcher):
    """A worker's rows, asked from the coordinator a chunk at a time; as its recorder's watcher it acks each
    chunk once all its rows are in a part file, and reports progress."""

    def __init__(self, conn, ppid: int | None = None):
        self.conn, self.ppid = conn, ppid  # ppid: the coordinator's pid, for a worker process
        self.lock = threading.Lock()
        self.rows: deque = deque()
        self.chunk_of: dict[str, int] = {}  # rows received and not yet recorded -> their chunk
        self.left: Counter = Counter()  # chunk -> rows not yet recorded
        self.asked = self.stopped = self.endgame = False
        self.received = 0
        self.complete: list[int] = []  # chunks whose rows are all recorded, to ack at the next flush
        self.unacked: Counter = Counter()
        self.unreported = 0
        self.last_report = time.monotonic()

    def __len__(self) -> int:
        return self.received

    def send(self, msg) -> None:
        with self.lock:
            self.conn.send(msg)

    def take(self, n: int, timeout: float = 0.0) -> list[dict] | None:
        if not self.rows and not self.asked and not self.stopped:
            self.send(("need", None))
            self.asked = True
        self._receive(0.0 if self.rows else timeout)
        if not self.rows:
            return None if self.stopped else []
        return [self.rows.popleft() for _ in range(min(n, len(self.rows)))]

    def _receive(self, timeout: float) -> None:
        if self.ppid is not None and os.getppid() != self.ppid:  # the coordinator is gone: take no more rows
            self.stopped = True
            return
        while self.conn.poll(timeout):
            kind, payload = self.conn.recv()
            if kind == "chunk":
                cid, rows = payload
                self.rows.extend(rows)
                self.received += len(rows)
                self.left[cid] = len(rows)
                self.chunk_of.update((r[RID], cid) for r in rows)
                self.asked = False
            elif kind == "idle":  # no rows left to hand out: save results as soon as they are done
                self.endgame = True
            elif kind == "stop":
                self.stopped = True
            timeout = 0.0

    # -- the recorder's watcher ----------------------------------------------------------------------
    def recorded(self, row: dict, code: str) -> None:
        self.unacked[code] += 1
        self.unreported += 1
        cid = self.chunk_of.pop(row[RID], None)
        if cid is not None:
            self.left[cid] -= 1
            if self.left[cid] == 0:
                del self.left[cid]
                self.complete.append(cid)

    def flush_due(self, buffered: int) -> bool:
        # no rows left to hand out: save results as soon as this worker holds no unfinished chunk
        return self.endgame and not self.chunk_of

    def tick(self) -> None:
        if self.unreported and time.monotonic() - self.last_report > 0.5:
            self._report()

    def _report(self) -> None:
        self.send(("progress", self.unreported))
        self.unreported = 0
        self.last_report = time.monotonic()

    def flushed(self) -> None:
        if self.complete or self.unacked:
            self.send(("ack", (self.complete, dict(self.unacked))))
            self.complete, self.unacked = [], Counter()
        if self.unreported:
            self._report()


def worker_main(spec: WorkerSpec, blob: bytes, sink: Sink, opts, conn, ppid: int) -> None:
    """A worker process of this host: its rows come over `conn`; it writes its own parts."""
    die_with_parent(signal.SIGTERM)  # the coordinator killed: stop too, rather than hold a GPU as an orphan
    os.environ.update(spec.env())  # before the stage is unpickled: nothing has touched CUDA yet
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the coordinator, which stops us
    code = run_worker(spec, blob, sink, opts, ChunkSource(conn, ppid))
    reap(mp.active_children(), grace=2.0)  # decode processes left behind would hold our stdout
    conn.close()
    sys.exit(code)


def run_worker(spec: WorkerSpec, blob: bytes, sink, opts, source: ChunkSource) -> int:
    """The worker loop over the coordinator's chunks; returns the exit code (0, 130 interrupted, 3 a stopped
    run, 2 a usage error, 1 a crash), the coordinator told why."""
    followers = []
    try:
        stage = pickle.loads(blob)
        if spec.tp > 1:
            stage, followers = start_group(spec, blob, stage)
        recorder = sink.recorder(stage, opts, spec.wid, source)  # the coordinator holds the lock
        run_batches(stage, source, recorder, opts, opts.workers)
        source.send(("bye", safe_extra(stage)))
        code = 0
    except KeyboardInterrupt:
        code = 130
    except FatalRunError as exc:
        code = _report_fatal(source, "FatalRunError", str(exc), 3)
    except UsageError as exc:
        code = _report_fatal(source, "UsageError", str(exc), 2)
    except BaseException as exc:  # noqa: BLE001 (a bug or a model crash: this worker's rows go to the others)
        code = _report_fatal(source, "crash", f"{type(exc).__name__}: {exc}", 1)
    for p in followers:
        p.join(timeout=30)
    return code


def _report_fatal(source: ChunkSource, kind: str, message: str, code: int) -> int:
    try:
        source.send(("fatal", (kind, message)))
    except Exception:  # noqa: BLE001, S110
        pass
    return code
