"""A multi-GPU worker process: the one-process batch loop (run_batches) over rows pulled from the coordinator, acking
each chunk once its rows are in a part file (see multigpu.py for the protocol)."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import signal
import sys
import threading
import time
from collections import Counter, deque

from ..errors import FatalRunError, UsageError
from ..manifest import RID
from ..session import Sink, Watcher
from .base import safe_extra
from .devices import WorkerSpec, set_parent_death_signal
from .local import run_batches


class ChunkSource:
    """Rows for one worker's Feeder, asked from the coordinator a chunk at a time."""

    def __init__(self, conn, ppid: int):
        self.conn, self.ppid = conn, ppid
        self.lock = threading.Lock()
        self.rows: deque = deque()
        self.chunk_of: dict[str, int] = {}  # rows received and not yet recorded -> their chunk
        self.left: Counter = Counter()  # chunk -> rows not yet recorded
        self.asked = self.stopped = self.endgame = False
        self.received = 0

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
        if os.getppid() != self.ppid:  # the coordinator is gone: finish what is here, take no more
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

    def recorded(self, rid: str) -> int | None:
        """A row's result was recorded; returns its chunk if that chunk is now complete."""
        cid = self.chunk_of.pop(rid, None)
        if cid is None:
            return None
        self.left[cid] -= 1
        if self.left[cid] == 0:
            del self.left[cid]
            return cid
        return None


class ChunkWatcher(Watcher):
    """Acks each chunk to the coordinator once all its rows are in a part file; reports progress."""

    def __init__(self, source: ChunkSource):
        self.source = source
        self.complete: list[int] = []
        self.unacked: Counter = Counter()
        self.unreported = 0
        self.last_report = time.monotonic()

    def recorded(self, row: dict, code: str) -> None:
        self.unacked[code] += 1
        self.unreported += 1
        cid = self.source.recorded(row[RID])
        if cid is not None:
            self.complete.append(cid)

    def flush_due(self, buffered: int) -> bool:
        # no rows left to hand out: save results as soon as this worker holds no unfinished chunk
        return self.source.endgame and not self.source.chunk_of

    def tick(self) -> None:
        if self.unreported and time.monotonic() - self.last_report > 0.5:
            self._report()

    def _report(self) -> None:
        self.source.send(("progress", self.unreported))
        self.unreported = 0
        self.last_report = time.monotonic()

    def flushed(self) -> None:
        if self.complete or self.unacked:
            self.source.send(("ack", (self.complete, dict(self.unacked))))
            self.complete, self.unacked = [], Counter()
        if self.unreported:
            self._report()


def worker_main(spec: WorkerSpec, blob: bytes, sink: Sink, opts, conn, ppid: int) -> None:
    set_parent_death_signal()
    os.environ.update(spec.env())  # before the stage is unpickled: nothing has touched CUDA yet
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the coordinator, which stops us
    source = ChunkSource(conn, ppid)
    followers = []
    try:
        stage = pickle.loads(blob)
        if spec.tp > 1:
            from .tp import start_group

            stage, followers = start_group(spec, blob, stage)
        recorder = sink.recorder(stage, opts, spec.wid, ChunkWatcher(source))  # the coordinator holds the lock
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
    for p in mp.active_children():  # decode processes a shutdown(wait=False) left behind would hold our stdout
        p.join(timeout=2)
        if p.exitcode is None:
            p.kill()
            p.join(timeout=5)
    conn.close()
    sys.exit(code)


def _report_fatal(source: ChunkSource, kind: str, message: str, code: int) -> int:
    try:
        source.send(("fatal", (kind, message)))
    except Exception:  # noqa: BLE001, S110
        pass
    return code
