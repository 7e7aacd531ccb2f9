"""Executors: one process, every GPU of a host (worker processes), torchrun ranks, and Ray clusters.

They all run one session (vidcap.session: plan, record, finish) over the same Stage contract and write
the same resumable parts layout; they differ only in how rows reach the stage (see base.py). Nothing here
imports torch or ray until an executor that needs it starts.
"""

from __future__ import annotations

import os

from ..errors import UsageError

ENGINES = ("local", "ray")


def dispatch(stage, manifest, out, run_opts, gpus=None, tp=1, engine="local", address=None, ray=None) -> dict:
    """Run `stage` over `manifest` with the executor the options ask for; returns the run summary.

    Every executor runs the same session (vidcap.session): they differ only in how rows reach the stage."""
    from ..session import Session

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
        from .ray_engine import RayExecutor

        return RayExecutor(gpus, tp, address, **(ray or {}))
    if address:
        raise UsageError("--address is the Ray cluster address; add --engine ray to use it.")
    if ray and any(v for v in ray.values()):
        raise UsageError("--ray-env and --ray-actors are options of the Ray engine; add --engine ray to use them.")
    from .torchrun import launched_by_torchrun

    if launched_by_torchrun():
        if gpus is not None:
            raise UsageError("under torchrun every rank uses its own GPU (LOCAL_RANK); drop --gpus.")
        from .torchrun import TorchrunExecutor

        return TorchrunExecutor(tp)
    if gpus is None and tp == 1:
        from .local import LocalExecutor

        return LocalExecutor()
    if run_opts.device:
        raise UsageError("--device picks one device and --gpus several; pass only one of them.")
    from .multigpu import HostExecutor

    return HostExecutor(device_groups(parse_gpus(gpus), tp))


def visible_gpus() -> list[str]:
    """The GPU ids this process may use, as CUDA_VISIBLE_DEVICES names them (indices, or UUIDs)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [x.strip() for x in env.split(",") if x.strip() and x.strip() != "-1"]
    try:
        import torch
    except ImportError:
        raise UsageError("--gpus needs PyTorch to count the GPUs; install vidcap[hf].") from None
    return [str(i) for i in range(torch.cuda.device_count())]


def parse_gpus(text: str | None, visible: list[str] | None = None) -> list[str]:
    """`all`, `N` (the first N), `0,1,3` (indices among the visible GPUs) -> GPU ids; `cpu:N` -> N CPU slots.

    `cpu:N` runs N worker processes on the CPU: for tests and dry runs of the scale-out path."""
    text = (text or "all").strip().lower()
    if text.startswith("cpu:"):
        n = _int(text[4:], text)
        if n < 1:
            raise UsageError(f"--gpus '{text}' asks for no workers; use cpu:N with N >= 1.")
        return ["cpu"] * n
    gpus = visible_gpus() if visible is None else visible
    if text == "all":
        if not gpus:
            raise UsageError("--gpus all found no CUDA GPU; check nvidia-smi and CUDA_VISIBLE_DEVICES, or drop --gpus.")
        return list(gpus)
    if "," not in text:
        n = _int(text, text)
        if not 1 <= n <= len(gpus):
            raise UsageError(f"--gpus {n} asks for {n} GPUs but {len(gpus)} are visible.")
        return list(gpus[:n])
    idx = [_int(x, text) for x in text.split(",") if x.strip()]
    if len(set(idx)) != len(idx):
        raise UsageError(f"--gpus '{text}' names a GPU twice.")
    bad = [i for i in idx if not 0 <= i < len(gpus)]
    if bad:
        raise UsageError(f"--gpus '{text}' names GPU {bad[0]}, but only {len(gpus)} are visible (0..{len(gpus) - 1}).")
    return [gpus[i] for i in idx]


def device_groups(devices: list[str], tp: int) -> list[list[str]]:
    """Consecutive groups of `tp` devices: one worker (one model copy) per group."""
    if len(devices) % tp:
        raise UsageError(f"--tp {tp} does not divide the {len(devices)} GPUs picked by --gpus; pick a multiple of {tp}.")
    return [devices[i:i + tp] for i in range(0, len(devices), tp)]


def _int(text: str, whole: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise UsageError(f"--gpus '{whole}' is not all, a count, a list like 0,1,3, or cpu:N.") from None
