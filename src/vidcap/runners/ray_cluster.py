"""Reaching a Ray cluster and noticing when it goes away: `connect` (a deadline on `--address`, one sentence
instead of Ray's endless warnings), `run_environment` (the actors' variables; secrets travel only inside
their pickled arguments, since Ray shows a runtime environment in `ray list jobs`), `HeadWatch` (stop within
seconds of the head going away, not after Ray's 60 s and a hard exit that skips the flush), `RAY_CPP_LINE`
(Ray's C++ log lines, kept out of vidcap's output) and procs.kill_tree_on_exit (no Ray process outlives vidcap).
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import socket
import sys
import threading
import time
from typing import Any

import ray
from ray._private.services import canonicalize_bootstrap_address

from ..errors import UsageError, first_line
from ..knobs import knob
from ..procs import kill_tree_on_exit

CONNECT_TIMEOUT_ENV = "VIDCAP_RAY_CONNECT_TIMEOUT"
LOST_AFTER_ENV = "VIDCAP_RAY_LOST_AFTER"
# Prefixes of the variables every actor gets from the driver without being named.
PASSED_PREFIXES = ("VIDCAP_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_", "TOKENIZERS_", "OMP_NUM_THREADS")
SECRET = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL|AUTH", re.IGNORECASE)


# A line of Ray's C++ logging: "[2026-11-30 05:44:22,228 E 29742 29742] core_worker.cc:2465: ..."
RAY_CPP_LINE = re.compile(rb"^\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] \d+ \d+\] ")


# -- the run environment ------------------------------------------------------------------------------------
def run_environment(names: list[str] | None) -> tuple[dict, dict]:
    """(plain, secret) variables for the actors: vidcap's own and the ones named with `--ray-env`."""
    picked = {k: v for k, v in os.environ.items() if k.startswith(PASSED_PREFIXES)}
    for name in names or []:
        name = name.strip()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise UsageError(
                f"--ray-env takes the name of an environment variable (like HF_TOKEN), not '{_redact(name)}'."
            )
        if name not in os.environ:
            raise UsageError(f"--ray-env {name}: {name} is not set in this environment; set it or drop the flag.")
        picked[name] = os.environ[name]
    plain = {k: v for k, v in picked.items() if not SECRET.search(k)}
    return plain, {k: v for k, v in picked.items() if k not in plain}


def _redact(text: str) -> str:
    return text if len(text) <= 12 else text[:4] + "..."


# -- connecting ---------------------------------------------------------------------------------------------
def head_address(address: str) -> tuple[str, int] | None:
    """host, port of the GCS behind `--address` (None for `auto` with no cluster on this machine)."""
    text = address.strip()
    text = text.removeprefix("ray://")
    if text in ("auto", "localhost"):
        found = canonicalize_bootstrap_address("auto")
        if not found:
            return None
        text = found
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"--address '{address}' is not HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT or auto.")
    return host.strip("[]"), int(port)


def reachable(where: tuple[str, int], timeout: float) -> bool:
    try:
        with socket.create_connection(where, timeout=timeout):
            return True
    except OSError:
        return False


def connect(address: str | None, runtime_env: dict, num_cpus: int | None = None) -> None:
    """ray.init on the cluster at `address` (a local Ray when None), or one sentence within the deadline."""
    for name in ("ray", "ray._private", "ray.runtime_env"):  # Ray's Python loggers at error level only
        logging.getLogger(name).setLevel(logging.ERROR)
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "logging_level": "ERROR",
        "log_to_driver": False,
        "runtime_env": runtime_env,
    }
    if not address:  # a Ray of this run's own: never join a cluster someone else started on this host
        ray.init(address="local", num_cpus=num_cpus, **kwargs)
        kill_tree_on_exit(ray._private.worker._global_node.get_session_dir_path())  # type: ignore[attr-defined]  # ray: `_global_node = None`, set by ray.init
        return
    deadline = float(knob(CONNECT_TIMEOUT_ENV))
    where = head_address(address)
    unreachable = (
        f"cannot reach the Ray cluster at {address} within {deadline:g} s; start it with `ray start --head` "
        f"there (or fix --address: `ray status` on the head prints it), or allow more time with "
        f"{CONNECT_TIMEOUT_ENV}."
    )
    if where is None:
        raise UsageError(
            "--address auto found no Ray cluster on this machine; start one with `ray start --head` "
            "or give the head's HOST:PORT."
        )
    t0 = time.monotonic()
    while not reachable(where, timeout=min(2.0, deadline)):
        if time.monotonic() - t0 >= deadline:
            raise UsageError(unreachable)
        time.sleep(0.5)
    failure: list[BaseException] = []

    def init() -> None:
        try:
            ray.init(address=address, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=init, name="vidcap-ray-init", daemon=True)
    thread.start()
    thread.join(max(1.0, deadline - (time.monotonic() - t0)) + 10.0)  # the port answered: allow the handshake
    if thread.is_alive():
        forget_ray(2)
        raise UsageError(unreachable)
    if failure:
        raise UsageError(
            f"could not join the Ray cluster at {address} ({first_line(failure[0]).rstrip('.')}); check that it is the head's "
            "address (`ray status` on the head prints it) and that this machine runs the cluster's Ray and Python "
            "versions."
        ) from None


def forget_ray(code: int = 3) -> None:
    """After the head went away: Ray's exit hook would wait on the dead cluster, so it is dropped, and the
    process ends with `code` (3: a stopped run; 2: a cluster that never answered) without the teardown
    Ray's threads crash in."""
    atexit.unregister(ray.shutdown)

    def leave() -> None:
        # The interpreter's own teardown crashes in Ray's C++ threads (SIGSEGV) once the GCS is gone: end the
        # process here, with the exit code of a stopped run, after every other exit hook has run.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    atexit.register(leave)


def gcs_address() -> tuple[str, int] | None:
    """The GCS this driver is connected to (None when it cannot be told, e.g. a Ray client session)."""
    try:
        return head_address(ray.get_runtime_context().gcs_address)
    except Exception:  # noqa: BLE001
        return None


class HeadWatch:
    """Probes the head's GCS port every second in a thread; `lost` once it has refused for `after` seconds."""

    def __init__(self, where: tuple[str, int] | None, after: float | None = None):
        self.where = where
        self.after = after if after is not None else float(knob(LOST_AFTER_ENV))
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="vidcap-ray-head", daemon=True)
        if where is not None:
            self._thread.start()

    def _watch(self) -> None:
        down_since = None
        where = self.where
        assert where is not None  # the thread starts only with an address
        while not self._stop.wait(1.0):
            if reachable(where, timeout=1.0):
                down_since = None
            elif down_since is None:
                down_since = time.monotonic()
            elif time.monotonic() - down_since >= self.after:
                self.lost = True
                return

    def gone(self) -> bool:
        """Whether the head is lost; when it does not answer now, waits until it answers or is declared lost."""
        deadline = time.monotonic() + self.after + 2.0
        while self.where is not None and not self.lost and time.monotonic() < deadline:
            if reachable(self.where, timeout=1.0):
                return False
            time.sleep(0.5)
        return self.lost

    def stop(self) -> None:
        self._stop.set()
