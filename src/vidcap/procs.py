"""No process outlives a run: the OS-level pieces every executor and the decode pool share (a child that dies
with its parent, SIGTERM as Ctrl-C, a pool's processes reaped, the fork server's start, stop and release, a
watchdog for a tree)."""

from __future__ import annotations

import atexit
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing import forkserver


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Linux: the kernel sends `sig` to this process when its parent goes away, however it went (kill -9
    included), so no process of a run outlives it: a decode worker (SIGKILL: it holds nothing to save), a
    host's GPU worker or a torchrun rank (SIGTERM: it saves its finished rows first)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(sig))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return


def _interrupt(signum, frame):
    raise KeyboardInterrupt


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Inside the block, SIGTERM stops the run as Ctrl-C does (a KeyboardInterrupt: finished rows are saved);
    only the main thread may set a handler, so elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    prev = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, prev)


_SERVER = {"stop_registered": False, "pool_started": False}


def forkserver_context(preload: list[str], pool: bool = True):
    """The context decode pools start from: workers fork from a clean server process that imported `preload`
    once (fast starts, no CUDA or threads inherited from this process); plain spawn where forkserver does not
    exist. One server serves every pool of this process and is stopped when it exits. `pool`: a pool is
    being made (else the server is only started early, see `prestart_forkserver`)."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    if not _SERVER["stop_registered"]:
        atexit.register(stop_forkserver)
        _SERVER["stop_registered"] = True
    _SERVER["pool_started"] |= pool
    ctx.set_forkserver_preload(preload)  # only the first start of the server reads it
    return ctx


def prestart_forkserver(ctx) -> None:
    """Start the fork server of `ctx` now, so that it imports its modules while this process still imports and
    plans (otherwise one after the other: most of a short run's startup). When no pool comes (every row
    done, a bad manifest), the server, which then forked nothing, is killed at exit rather than waited for
    through its imports."""
    if ctx.get_start_method() == "forkserver":
        forkserver.ensure_running()
        atexit.register(_drop_unused_server)  # runs before stop_forkserver (registered first), which reaps it


def _drop_unused_server() -> None:
    if _SERVER["pool_started"]:
        return
    try:
        pid = getattr(forkserver._forkserver, "_forkserver_pid", None)  # private: read defensively
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
    except (AttributeError, OSError):
        pass


def release_forkserver() -> None:
    """A worker forked by the fork server holds a copy of the write end of the server's liveness pipe; while
    any worker holds it, the server never sees the run die, so after a kill -9 of the run the server and
    its workers (whose parent-death signal waits for the server) lived on. The worker never forks through
    the server itself, so it lets the pipe go: the run's death closes the last write end, the server
    exits, and the workers' parent-death signal ends them."""
    try:
        server = forkserver._forkserver
        fd = getattr(server, "_forkserver_alive_fd", None)
        # set in a child of the server (which launched no server itself); the run's own copy has a pid
        if fd is not None and getattr(server, "_forkserver_pid", None) is None:
            os.close(fd)
            server._forkserver_alive_fd = None  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return


def reap(procs: list, grace: float = 5.0) -> None:
    """Wait for a pool's worker processes to exit (their queued tasks were cancelled, so they end after the
    one they run); one still running after `grace` seconds is terminated, then killed."""
    deadline = time.monotonic() + grace
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(1.0)
        if p.is_alive():
            p.kill()
            p.join(1.0)


def stop_forkserver() -> None:
    """At exit: stop the fork server and wait for it, so it does not outlive the process that started it."""
    try:
        forkserver._forkserver._stop()  # type: ignore[attr-defined]  # private, present since 3.8
    except (AttributeError, OSError, ChildProcessError):
        pass


# A watchdog outside this process (its own session, so a kill of vidcap's group spares it): once vidcap is
# gone, however it went (SIGKILL included, when no atexit or finally runs), every process with the marker
# on its command line (e.g. a local Ray instance's session folder) and their children are killed at once.
_WATCHDOG = """
import os, signal, sys, time
parent, marker = int(sys.argv[1]), sys.argv[2].encode()
doomed = set()

def scan():  # the marked processes and their children (Ray renames its agents: ray::DashboardAgent)
    children = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                ppid = int(fh.read().rsplit(b")", 1)[1].split()[1])
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if marker in fh.read() and int(pid) != os.getpid():
                    doomed.add(int(pid))
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(pid))
    todo = list(doomed)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in doomed:
                doomed.add(child)
                todo.append(child)

beat = 0
while True:
    try:
        os.kill(parent, 0)
    except ProcessLookupError:
        break
    if beat % 4 == 0:  # the tree is known while vidcap lives: its children are re-parented once it dies
        scan()
    beat += 1
    time.sleep(0.5)
scan()
for pid in doomed:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
"""


def kill_tree_on_exit(marker: str) -> None:
    """Start the watchdog for the processes whose command lines hold `marker` (Linux only)."""
    if not os.path.isdir("/proc") or not marker:
        return
    subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG, str(os.getpid()), marker],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )
