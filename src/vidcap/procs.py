"""No process outlives a run: the OS-level pieces every executor and the decode pool share (a child that dies
with its parent, a pool's processes reaped, the fork server stopped and let go of)."""

from __future__ import annotations

import os
import signal
import sys
import time


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


def release_forkserver() -> None:
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
        from multiprocessing import forkserver

        forkserver._forkserver._stop()  # type: ignore[attr-defined]  # private, present since 3.8
    except (ImportError, AttributeError, OSError, ChildProcessError):
        pass
