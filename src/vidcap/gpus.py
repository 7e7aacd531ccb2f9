"""Which GPUs a run may use: `--gpus` parsed against the GPUs this process sees. A leaf: the CLI, the
executors and the backends may all ask, and it imports nothing of vidcap but its errors."""

from __future__ import annotations

import os

from .errors import UsageError


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
        raise UsageError(
            f"--tp {tp} does not divide the {len(devices)} GPUs picked by --gpus; pick a multiple of {tp}."
        )
    return [devices[i : i + tp] for i in range(0, len(devices), tp)]


def _int(text: str, whole: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise UsageError(f"--gpus '{whole}' is not all, a count, a list like 0,1,3, or cpu:N.") from None
