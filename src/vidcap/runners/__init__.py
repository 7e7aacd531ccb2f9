"""Executors: one process, every GPU of a host (worker processes), torchrun ranks, and Ray clusters.

All run one session (vidcap.session) and one worker loop (local.run_batches); they differ only in how rows
reach that loop. Nothing here imports torch until an executor needs it, nor Ray unless the run asks for it.
"""

from __future__ import annotations

import importlib.util

from ..config import RunConfig
from ..errors import UsageError
from ..gpus import device_groups, parse_gpus, visible_gpus
from ..session import Executor
from .local import LocalExecutor
from .multigpu import HostExecutor
from .torchrun import TorchrunExecutor, launched_by_torchrun

__all__ = ["device_groups", "parse_gpus", "pick_executor", "visible_gpus"]


def pick_executor(stage, config: RunConfig) -> Executor:
    """The executor `config.execution` asks for (--engine, --gpus, --tp, --address, --ray-*, torchrun)."""
    ex = config.execution
    if ex.tp < 1:
        raise UsageError(f"--tp must be at least 1, not {ex.tp}.")
    if ex.executor not in ("local", "ray"):
        raise UsageError(f"--engine must be one of local, ray, not '{ex.executor}'.")
    if ex.tp > 1:
        stage.check_tp(ex.tp)  # a split the model cannot take is refused here, before any worker starts
    if ex.executor == "ray":
        if importlib.util.find_spec("ray") is None:
            raise UsageError("--engine ray needs Ray; install it with: pip install 'vidcap[ray]'.")
        from .ray_engine import RayExecutor  # here: the one-host path never imports Ray

        return RayExecutor(ex.gpus, ex.tp, ex.address, list(ex.ray_env) or None, ex.ray_actors)
    if ex.address:
        raise UsageError("--address is the Ray cluster address; add --engine ray to use it.")
    if ex.ray_env or ex.ray_actors is not None:
        raise UsageError("--ray-env and --ray-actors are options of the Ray engine; add --engine ray to use them.")
    if launched_by_torchrun():
        if ex.gpus is not None:
            raise UsageError("under torchrun every rank uses its own GPU (LOCAL_RANK); drop --gpus.")
        return TorchrunExecutor(ex.tp, ex.device)
    if ex.gpus is None and ex.tp == 1:
        return LocalExecutor()
    if ex.device:
        raise UsageError("--device picks one device and --gpus several; pass only one of them.")
    return HostExecutor(device_groups(parse_gpus(ex.gpus), ex.tp))
