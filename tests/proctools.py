"""Helpers for tests that start a run as a subprocess and kill parts of it."""

import json
import os
import signal
import time
from pathlib import Path


def wait_for(cond, proc, timeout=90.0, what="condition"):
    """Poll `cond()` until it holds; fail if `proc` ends first or the time runs out."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {what}: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def kill_launch(proc, what="ranks outlived torchrun") -> None:
    """SIGKILL a launcher's whole process group (proc started with start_new_session) and check that its
    children (torchrun's ranks) are gone within 30 s."""
    import subprocess

    out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True, check=False).stdout
    children = [int(x) for x in out.split()]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    t0 = time.time()
    while any(alive(p) for p in children) and time.time() - t0 < 30:
        time.sleep(0.1)
    assert children and not any(alive(p) for p in children), what


def kill_worker(proc, parts: Path, worker: str = "cpu1", after_parts: int = 1, timeout: float = 180) -> str:
    """SIGKILL one --gpus worker once it has saved `after_parts` parts, let the run finish, check that it
    noticed the death and still exited 0; returns the run's stderr."""
    seen = f"part-{worker}-*"
    wait_for(
        lambda: (parts / "workers.json").exists() and len(list(parts.glob(seen))) >= after_parts, proc, what="parts"
    )
    os.kill(json.loads((parts / "workers.json").read_text())["workers"][worker]["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    assert f"worker {worker} exited with code -9" in err and "worker deaths: 1" in err
    return err


def kill_coordinator(proc, parts: Path, after_parts: int = 4) -> None:
    """SIGKILL a --gpus run's coordinator alone once `after_parts` parts are saved, and check that its
    workers notice and stop within 30 s."""
    wait_for(
        lambda: (parts / "workers.json").exists() and len(list(parts.glob("part-*"))) >= after_parts, proc, what="parts"
    )
    pids = [w["pid"] for w in json.loads((parts / "workers.json").read_text())["workers"].values()]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    t0 = time.time()
    while any(alive(p) for p in pids) and time.time() - t0 < 30:
        time.sleep(0.1)
    assert not any(alive(p) for p in pids), "workers outlived their coordinator"


def group_alive(pgid: int) -> list[str]:
    """Live (not zombie) processes of a process group, as 'pid cmdline'."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.getpgid(int(d.name)) != pgid or not alive(int(d.name)):
                continue
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append(f"{d.name} {cmd[:120]}")
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            continue
    return found
