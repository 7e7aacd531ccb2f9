"""Executors: one process, every GPU of a host (worker processes), torchrun ranks, and Ray clusters.

They all run one session (vidcap.session: plan, record, finish) over the same Stage contract and the same
worker loop (local.run_batches), and write the same resumable parts layout; they differ only in how rows
reach that loop. Nothing here imports torch until an executor needs it, nor Ray unless the run asks for it.
"""

from __future__ import annotations

import importlib.util

from ..errors import UsageError
from ..gpus import device_groups, parse_gpus, visible_gpus
from ..session import Session
from .local import LocalExecutor
from .multigpu import HostExecutor
from .torchrun import TorchrunExecutor, launched_by_torchrun

__all__ = ["ENGINES", "device_groups", "dispatch", "parse_gpus", "pick_executor", "visible_gpus"]

ENGINES = ("local", "ray")


def dispatch(stage, manifest, out, run_opts, gpus=None, tp=1, engine="local", address=None, ray=None) -> dict:
    """Run `stage` over `manifest` with the executor the options ask for; returns the run summary.

    Every executor runs the same session (vidcap.session): they differ only in how rows reach the stage."""
    return Session(stage, manifest, out, run_opts).run(pick_executor(stage, run_opts, gpus, tp, engine, address, ray))


def pick_executor(stage, run_opts, gpus=None, tp=1, engine="local", address=None, ray=None):
    """`ray`: the Ray-only options, {"env": [names], "max_actors": N} (--ray-env, --ray-actors)."""
    if tp < 1:
        raise UsageError(f"--tp must be at least 1, not {tp}.")
    if engine not in ENGINES:
        raise UsageError(f"--engine must be one of {', '.join(ENGINES)}, not '{engine}'.")
    if tp > 1:
        stage.check_tp(tp)  # a split the model cannot take is refused here, before any worker starts
    if engine == "ray":
        if importlib.util.find_spec("ray") is None:
            raise UsageError("--engine ray needs Ray; install it with: pip install 'vidcap[ray]'.")
        from .ray_engine import RayExecutor  # here: the one-host path never imports Ray

        return RayExecutor(gpus, tp, address, **(ray or {}))
    if address:
        raise UsageError("--address is the Ray cluster address; add --engine ray to use it.")
    if ray and any(v for v in ray.values()):
        raise UsageError("--ray-env and --ray-actors are options of the Ray engine; add --engine ray to use them.")
    if launched_by_torchrun():
        if gpus is not None:
            raise UsageError("under torchrun every rank uses its own GPU (LOCAL_RANK); drop --gpus.")
        return TorchrunExecutor(tp, run_opts.device)
    if gpus is None and tp == 1:
        return LocalExecutor()
    if run_opts.device:
        raise UsageError("--device picks one device and --gpus several; pass only one of them.")
    return HostExecutor(device_groups(parse_gpus(gpus), tp))
