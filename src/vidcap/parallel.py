"""What a backend may ask about the process group it runs in (a tensor-parallel group started by
vidcap.runners.tp). Backends sit below the executors, so this lives on their floor."""

from __future__ import annotations


def tp_rank_size() -> tuple[int, int] | None:
    """(rank, size) inside a tensor-parallel group of 2 or more, else None."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return dist.get_rank(), dist.get_world_size()


def tp_load_kwargs() -> dict:
    """from_pretrained arguments for a backend whose setup runs inside a tensor-parallel group, else {}."""
    group = tp_rank_size()
    if group is None:
        return {}
    from transformers.distributed import DistributedConfig

    return {"distributed_config": DistributedConfig(tp_size=group[1])}
