"""Decode workers: the stage's loader runs on each row in a process pool fed by a background thread, so
frames for the next batches are decoded while the model works on the current one.

Every executor uses this floor: the one-process loop, each worker of a host, each torchrun rank, and
Ray's decode tasks (`load_row`). Nothing here knows about parts or the run's lifecycle.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .errors import DECODE, VidcapError, format_error
from .manifest import RID


def preload_modules(loader) -> tuple[str, ...]:
    """Modules the fork server imports once for this loader (a loader may name its own in `preload`)."""
    return tuple(getattr(loader, "preload", ()) or ())


# -- decode workers ---------------------------------------------------------------------------------
_LOADER: Callable[[dict], Any] | None = None


def _die_with_parent() -> None:
    """A decode worker must not outlive its run (a kill -9 of the run would leave it holding the terminal
    and its pipes): ask Linux to kill it when its parent (the run, or the fork server, which exits with
    the run) goes away."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call above
        os._exit(0)


def _release_forkserver() -> None:
    """A worker forked by the fork server holds a copy of the write end of the server's liveness pipe; while
    any worker holds it, the server never sees the run die, so after a kill -9 of the run the server and
    its workers (whose parent-death signal waits for the server) lived on. The worker never forks through
    the server itself, so it lets the pipe go: the run's death closes the last write end, the server
    exits, and the workers' parent-death signal ends them."""
    try:
        from multiprocessing import forkserver

        server = forkserver._forkserver
        fd = getattr(server, "_forkserver_alive_fd", None)
        # set in a child of the server (which launched no server itself); the run's own copy has a pid
        if fd is not None and getattr(server, "_forkserver_pid", None) is None:
            os.close(fd)
            server._forkserver_alive_fd = None  # type: ignore[attr-defined]
    except (ImportError, AttributeError, OSError):
        return


def _init_worker(loader) -> None:
    global _LOADER
    _release_forkserver()
    _die_with_parent()
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


class ListSource:
    """The rows of a run, handed to the Feeder in order; other runners pass a source that grows over time."""

    def __init__(self, rows: list[dict]):
        self.rows = list(reversed(rows))

    def take(self, n: int, timeout: float) -> list[dict] | None:
        """Up to n rows ([] when none are ready yet), or None once there will be no more."""
        if not self.rows:
            return None
        return [self.rows.pop() for _ in range(min(n, len(self.rows)))]


class Feeder:
    """Keeps `workers` processes busy loading rows; hands (row, data, error) to the consumer in a queue.

    `rows` is a list, or a source with `take(n, timeout)` (see ListSource) for runners that receive rows
    while they run (the multi-GPU workers)."""

    DONE = object()

    def __init__(self, loader, rows, workers: int, depth: int):
        self.loader, self.workers = loader, workers
        self.source = ListSource(rows) if isinstance(rows, list) else rows
        self.depth = max(depth, 2 * max(workers, 1))
        self.q: queue.Queue = queue.Queue(maxsize=self.depth)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="vidcap-feeder")

    def start(self) -> Feeder:
        self.thread.start()
        return self

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            if self.workers <= 0:
                init_loader_inline(self.loader)
                while not self.stop.is_set():
                    rows = self.source.take(1, timeout=0.2)
                    if rows is None:
                        return
                    for row in rows:
                        if not self._put((row, *load_row(row))):
                            return
            else:
                self._run_pool()
        except BaseException as exc:  # noqa: BLE001 (surfaced in the consumer)
            self.error = exc
        finally:
            self._put(self.DONE)

    def _run_pool(self) -> None:
        retry: list[dict] = []  # rows in flight when a decoder process crashed
        exhausted = False
        crashes: Counter = Counter()
        while (retry or not exhausted) and not self.stop.is_set():
            ctx = _pool_context(self.loader)
            pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker, initargs=(self.loader,))
            pending: dict = {}
            try:
                while not self.stop.is_set():
                    room = self.depth - len(pending)
                    rows = [retry.pop() for _ in range(min(room, len(retry)))]
                    if len(rows) < room and not exhausted:
                        got = self.source.take(room - len(rows), timeout=0.0 if pending else 0.2)
                        exhausted = got is None
                        rows += got or []
                    for row in rows:
                        pending[pool.submit(load_row, row)] = row
                    if not pending:
                        if exhausted and not retry:
                            break
                        continue
                    done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    for fut in done:
                        row = pending.pop(fut)
                        if not self._put((row, *fut.result())):
                            return
            except BrokenProcessPool:
                # A decoder process died (segfault, OOM kill). Rows in flight are retried; a row that was
                # in flight in two crashes is recorded as the likely culprit.
                for row in pending.values():
                    crashes[row[RID]] += 1
                    if crashes[row[RID]] >= 2:
                        self._put((row, None, format_error(DECODE, "the decoder process crashed on this file")))
                    else:
                        retry.append(row)
            finally:
                pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self.stop.set()


def _pool_context(loader):
    """Workers fork from a clean server process that imported the heavy modules once (fast starts, no
    CUDA or threads inherited from this process); plain spawn where forkserver does not exist."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    preload = ["numpy", "av", "cv2", "vidcap.frames"] + list(preload_modules(loader))
    if "transformers" in sys.modules:  # a model run: its workers may run the model's processor
        preload += ["torch", "transformers"]
    ctx.set_forkserver_preload(preload)  # only the first start of the server reads it
    return ctx


def init_loader_inline(loader) -> None:
    global _LOADER
    _LOADER = loader
