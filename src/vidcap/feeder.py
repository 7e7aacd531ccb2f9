"""Decode workers: the stage's loader runs on each row in a process pool fed by a background thread, so the
next batches decode while the model works on the current one.

A task is a chunk of rows one worker loads in order; the chunk starts at one row and doubles while rows
load fast (missing files cost microseconds, not a round trip each). A worker returns after TASK_SECONDS or
`per_task` rows of data, and the rows it did not reach go out again. Memory is bounded in rows: at most
`depth` rows of data in flight and `depth` waiting, and failed rows under LIGHT_ROWS plus one chunk. When a
decoder dies (segfault, OOM kill) every row of its lost tasks is tried again alone; a row alone in its
second crash is recorded as the culprit. Nothing here knows about parts or the run's lifecycle.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .errors import DECODE, VidcapError, format_error
from .procs import die_with_parent, forkserver_context, prestart_forkserver, reap, release_forkserver
from .rowcells import RID
from .rows import ListSource, RowSource

# -- decode workers ---------------------------------------------------------------------------------
_LOADER: Callable[[dict], Any] | None = None


def _init_worker(loader) -> None:
    global _LOADER
    release_forkserver()
    die_with_parent()  # a kill -9 of the run would leave a decoder holding the terminal and its pipes
    if os.getppid() == 1:  # the parent (the fork server, which exits with the run) died before the call above
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled once, by the main process
    try:  # the process feeding the GPU must win the CPU over its decoders (measured on a 16-core H100 host)
        os.nice(5)
    except OSError:
        pass
    _LOADER = loader


def load_row(row: dict) -> tuple[Any, str | None]:
    """(data, None) or (None, the row's error): the stage's loader on one row, in a worker."""
    assert _LOADER is not None, "init_loader_inline or the pool initializer sets the loader first"
    try:
        return _LOADER(row), None
    except VidcapError as exc:
        return None, exc.text
    except MemoryError:
        return None, format_error(DECODE, "out of memory while decoding")
    except Exception as exc:  # noqa: BLE001 (a decoder bug on a hostile file is that row's error, not the run's)
        return None, format_error(DECODE, f"{type(exc).__name__}: {exc}")


def load_rows(rows: list[dict], budget_s: float, max_data: int) -> list[tuple[Any, str | None]]:
    """load_row on `rows` in order, in a worker, stopping after the row that spends `budget_s` or gives the
    `max_data`-th row of data: the caller sends the rows not reached again, so a chunk sized for fast rows
    neither holds back the first clips nor piles decoded clips up in one worker."""
    out = []
    t0 = time.perf_counter()
    data = 0
    for row in rows:
        res = load_row(row)
        out.append(res)
        data += res[1] is None
        if data >= max_data or time.perf_counter() - t0 >= budget_s:
            break
    return out


TASK_SECONDS = 0.05  # a worker returns a task's results after this long (the rest of its rows go out again)
MAX_CHUNK = 1024  # rows in one task
LIGHT_ROWS = 8192  # failed rows (no data) the feeder may hold besides `depth`


class Feeder:
    """Keeps `workers` processes busy loading rows; the consumer gets (row, data, error) tuples from `take`.

    `rows` is a list, or a vidcap.rows.RowSource (rows planned, or received while the run goes on). Results come in the order tasks finish, each task's rows in
    manifest order."""

    DONE = object()

    def __init__(
        self, loader, rows, workers: int, depth: int, *, task_seconds: float = TASK_SECONDS, max_chunk: int = MAX_CHUNK
    ):
        self.loader, self.workers = loader, workers
        self.source: RowSource[dict] = ListSource(rows) if isinstance(rows, list) else rows
        self.depth = max(depth, 2 * max(workers, 1))  # rows of data in flight, and loaded (see _room)
        self.per_task = max(1, self.depth // (2 * max(workers, 1)))  # rows of data one task may give
        self.task_seconds, self.max_chunk = task_seconds, max(1, max_chunk)
        self.q: queue.SimpleQueue = queue.SimpleQueue()  # lists of (row, data, error), then DONE
        self.cond = threading.Condition()  # guards the counts below; notified when they fall or a task ends
        self.held_data = self.held_light = 0  # rows handed to the queue and not yet taken by the consumer
        self.reserved = self.flying = 0  # rows of data the tasks in flight may give; rows in flight
        self.chunk, self.tasks = 1, 0  # rows the next task takes; tasks run so far
        self.want = 1  # rows of data the next task would reserve
        self.carry: deque = deque()  # rows a task did not reach: they go out first
        self.suspects: deque = deque()  # rows in flight when a decoder crashed: tried again one at a time
        self.crashes: Counter = Counter()
        self.exhausted = False
        self.ready: deque = deque()  # the consumer's side
        self.finished = False
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="vidcap-feeder")

    def start(self) -> Feeder:
        self.thread.start()
        return self

    def close(self, wait: float = 10.0) -> None:
        """Stop feeding, and wait (up to `wait` s) until the feeding thread has ended its decode processes: no
        process of the run outlives it."""
        self.stop.set()
        with self.cond:
            self.cond.notify_all()
        if self.thread.is_alive() and threading.current_thread() is not self.thread:
            self.thread.join(wait)

    # -- the consumer's side ---------------------------------------------------------------------------
    def take(self, n: int, timeout: float) -> list[tuple] | None:
        """Up to n loaded rows as (row, data, error); [] when none came within `timeout` seconds; None once
        every row was handed over (then `error` holds what stopped the feeder, if anything did)."""
        if not self.ready:
            if self.finished:
                return None
            try:
                got = self.q.get(timeout=timeout) if timeout > 0 else self.q.get_nowait()
            except queue.Empty:
                return []
            if got is self.DONE:
                self.finished = True
                return None
            self.ready.extend(got)
        out = [self.ready.popleft() for _ in range(min(n, len(self.ready)))]
        light = sum(1 for item in out if item[2])
        with self.cond:
            self.held_light -= light
            self.held_data -= len(out) - light
            self.cond.notify_all()
        return out

    # -- the feeding thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self.stop.is_set() and (self.carry or self.suspects or not self.exhausted):
                pool = self._pool()
                pending: dict[Future, tuple[list[dict], str, int]] = {}  # task -> (rows, kind, rows of data reserved)
                try:
                    self._pool_loop(pool, pending)
                except BrokenProcessPool:
                    self._crashed(pending)
                finally:
                    procs = list((getattr(pool, "_processes", None) or {}).values())  # private: read defensively
                    pool.shutdown(wait=False, cancel_futures=True)
                    reap(procs)
                    for rows, _kind, reserve in pending.values():
                        self._landed(rows, reserve)
                    pending.clear()
        except BaseException as exc:  # noqa: BLE001 (surfaced in the consumer)
            self.error = exc
        finally:
            self.q.put(self.DONE)

    def _pool(self) -> ProcessPoolExecutor | InlinePool:
        if self.workers <= 0:
            init_loader_inline(self.loader)
            return InlinePool()
        ctx = _pool_context(self.loader)
        return ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker, initargs=(self.loader,))

    def _room(self, reserve: int) -> bool:
        """Whether a task that may give `reserve` rows of data may start now (call with `cond` held)."""
        return (
            self.reserved + reserve <= self.depth
            and self.held_data < self.depth
            and self.held_light + self.flying < LIGHT_ROWS
        )

    def _next_rows(self, n: int, timeout: float) -> list[dict] | None:
        """Up to n rows, those a task did not reach first; [] when none is ready, None when none is left."""
        if self.carry:
            return [self.carry.popleft() for _ in range(min(n, len(self.carry)))]
        if self.exhausted:
            return None
        got = self.source.take(n, timeout)
        if got is None:
            self.exhausted = True
        return got

    def _emit(self, results: list[tuple]) -> None:
        light = sum(1 for item in results if item[2])
        with self.cond:
            self.held_light += light
            self.held_data += len(results) - light
        self.q.put(results)

    def _finish(self, rows: list[dict], out: list, adapt: bool) -> None:
        """A task's results to the consumer; rows it did not reach go out again; the next chunk's size."""
        done = len(out)
        self.tasks += 1
        if done < len(rows):
            self.carry.extendleft(reversed(rows[done:]))
        if adapt:  # double while whole chunks load within the budget, else what fitted in it
            self.chunk = min(self.max_chunk, 2 * done) if done == len(rows) else max(1, done)
        self._emit([(row, data, err) for row, (data, err) in zip(rows, out, strict=False)])

    def _pool_loop(self, pool: ProcessPoolExecutor | InlinePool, pending: dict) -> None:
        while not self.stop.is_set():
            for fut in [f for f in pending if f.done()]:
                out = fut.result()  # BrokenProcessPool when a decoder died: handled by the caller
                rows, kind, reserve = pending.pop(fut)
                self._landed(rows, reserve)
                self._finish(rows, out, adapt=kind == "rows")
            task = self._next_task(pending)
            if isinstance(task, tuple):
                rows, kind, reserve = task
                try:
                    fut = pool.submit(load_rows, rows, self.task_seconds, reserve)
                except BrokenProcessPool:
                    self._put_back(rows, kind)
                    raise
                with self.cond:
                    self.reserved += reserve
                    self.flying += len(rows)
                pending[fut] = task
                fut.add_done_callback(self._wake)
                continue
            if task == "end" and not pending:
                return
            if task == "empty" and not pending:  # the source waited already
                continue
            with self.cond:  # sleep until a task ends or the consumer makes room (the source is polled again)
                if not any(f.done() for f in pending) and not (task == "room" and self._room(self.want)):
                    self.cond.wait(0.2)

    def _landed(self, rows: list[dict], reserve: int) -> None:
        """A task is out of flight (done, or lost with its pool)."""
        with self.cond:
            self.reserved -= reserve
            self.flying -= len(rows)

    def _wake(self, _fut=None) -> None:
        with self.cond:
            self.cond.notify_all()

    def _next_task(self, pending: dict) -> tuple[list[dict], str, int] | str:
        """The next task (rows, kind, rows of data it may give), or why there is none now: "room" (wait for
        the consumer), "busy" (wait for a task to end), "empty" (the source has no row ready) or "end".
        Suspects of a crash go first, one row a task, and a row that was already in flight in a crash runs
        with nothing beside it, so that its next crash names it for certain."""
        if any(kind == "alone" for _, kind, _ in pending.values()):
            return "busy"
        self.want = 1
        if self.suspects:
            if self.crashes[self.suspects[0][RID]] >= 2:
                return "busy" if pending else ([self.suspects.popleft()], "alone", 1)
            if len(pending) >= self.workers:
                return "busy"
            with self.cond:
                if not self._room(1):
                    return "room"
            return [self.suspects.popleft()], "suspect", 1
        self.want = min(self.per_task, self.chunk)
        with self.cond:
            if not self._room(self.want):
                return "room"
        rows = self._next_rows(self.chunk, timeout=0.0 if pending else 0.2)
        if rows is None:
            return "end"
        if not rows:
            return "empty"
        return rows, "rows", min(self.per_task, len(rows))

    def _put_back(self, rows: list[dict], kind: str) -> None:
        if kind == "rows":
            self.carry.extendleft(reversed(rows))
        else:
            self.suspects.extendleft(reversed(rows))

    def _crashed(self, pending: dict) -> None:
        """A decoder process died (segfault, OOM kill) and the pool with it. Tasks that finished before keep
        their results; every row of the others was in flight: tried again on its own, and a row in flight
        alone in its second crash is recorded as the crash's culprit."""
        lost: list[dict] = []
        for fut, (rows, _kind, reserve) in list(pending.items()):
            self._landed(rows, reserve)
            del pending[fut]
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self._finish(rows, fut.result(), adapt=False)
            else:
                lost.extend(rows)
        for row in lost:
            self.crashes[row[RID]] += 1
            if self.crashes[row[RID]] >= 2 and len(lost) == 1:
                self._emit([(row, None, format_error(DECODE, "the decoder process crashed on this file"))])
            else:
                self.suspects.append(row)


class InlinePool:
    """--workers 0: rows load in the feeding thread, through the pool's interface (a task is done when submitted)."""

    def submit(self, fn, *args) -> Future:
        fut: Future = Future()
        fut.set_result(fn(*args))
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


def _pool_context(loader, pool: bool = True):
    """The decode pool's context (procs.forkserver_context): its server imports the decoders once, the
    modules the loader names (`preload`), and torch and transformers in a model run (the workers may run
    the model's processor)."""
    own = getattr(loader, "preload", ()) or ()
    preload = ["numpy", "av", "cv2", "vidcap.frames", *own]
    if "transformers" in sys.modules:
        preload += ["torch", "transformers"]
    return forkserver_context(preload, pool)


def prestart(loader) -> None:
    """Start the decode workers' fork server before this process imports and plans (procs.prestart_forkserver)."""
    prestart_forkserver(_pool_context(loader, pool=False))


def init_loader_inline(loader) -> None:
    global _LOADER
    _LOADER = loader
