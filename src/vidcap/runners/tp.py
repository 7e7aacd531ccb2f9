"""Tensor-parallel groups: K processes hold one model sharded over K GPUs (transformers' tensor-parallel plan).
The leader (rank 0) takes and decodes rows and broadcasts each batch; the followers run the same model calls,
and only the leader writes results. Each group is its own torch.distributed world of K ranks, because
transformers shards over the whole default group (the backend loads with parallel.tp_load_kwargs).
"""

from __future__ import annotations

import os
import pickle
import signal
import socket
import sys

from ..errors import first_line
from ..procs import die_with_parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_env(rank: int, size: int, port: int, addr: str = "127.0.0.1") -> dict:
    return {
        "RANK": str(rank),
        "WORLD_SIZE": str(size),
        "LOCAL_RANK": str(rank),
        "LOCAL_WORLD_SIZE": str(size),
        "MASTER_ADDR": addr,
        "MASTER_PORT": str(port),
        "TORCHELASTIC_USE_AGENT_STORE": "False",
    }  # torchrun's agent does not host this group's store


def init_group(device: str) -> None:
    """Join this process's group (env:// from group_env); CPU groups use gloo, GPU groups NCCL plus gloo."""
    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        torch.cuda.set_device(device)
        dist.init_process_group(backend="cpu:gloo,cuda:nccl", init_method="env://")
    else:
        dist.init_process_group(backend="gloo", init_method="env://")
    torch.manual_seed(0)  # every rank samples alike (--temperature > 0), or the group's generate loops drift apart


def broadcast(obj=None):
    """Rank 0's `obj` on every rank of the group."""
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class LeaderStage:
    """The group leader's view of the stage: every batch goes to the followers before the model runs."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def process_batch(self, items):
        broadcast(items)
        return self.inner.process_batch(items)

    def teardown(self) -> None:
        broadcast(None)  # releases the followers
        self.inner.teardown()


def follow(stage, device: str) -> None:
    """A follower's life: load the shard, then run every batch the leader broadcasts until it sends None."""
    stage.setup(device)
    try:
        while True:
            items = broadcast(None)
            if items is None:
                return
            try:
                stage.process_batch(items)
            except Exception:  # noqa: BLE001, S110
                pass  # the leader runs the same call and records the row errors
    finally:
        stage.teardown()


def follower_main(spec, blob: bytes, rank: int, env: dict) -> None:
    die_with_parent(signal.SIGTERM)
    os.environ.update(spec.env())
    os.environ.update(env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = 0
    try:
        init_group(spec.device(rank))
        follow(pickle.loads(blob), spec.device(rank))
    except BaseException as exc:  # noqa: BLE001 (the leader then fails on the broken group; this says why)
        print(
            f"vidcap: tensor-parallel rank {rank} of worker {spec.wid} failed: {first_line(exc, 300)}", file=sys.stderr
        )
        code = 1
    os._exit(code)


def start_group(spec, blob: bytes, stage):
    """In a worker process: start its K-1 followers, join the group as rank 0, return the leader stage."""
    import multiprocessing as mp

    port = free_port()
    ctx = mp.get_context("spawn")
    followers = []
    for rank in range(1, spec.tp):
        p = ctx.Process(
            target=follower_main,
            args=(spec, blob, rank, group_env(rank, spec.tp, port)),
            name=f"vidcap-{spec.wid}-tp{rank}",
            daemon=True,
        )
        p.start()
        followers.append(p)
    os.environ.update(group_env(0, spec.tp, port))
    init_group(spec.device(0))
    return LeaderStage(stage), followers
