"""All-reduce latency between the GPUs of a host at the sizes a tensor-parallel decode step uses
(batch x hidden in bf16). usage: torchrun --nproc_per_node 2 benchmarks/nccl_latency.py"""

import time

import torch
import torch.distributed as dist

dist.init_process_group("nccl")
rank = dist.get_rank()
torch.cuda.set_device(rank)
for batch, hidden in ((16, 5120), (16, 3584), (1, 5120)):
    x = torch.randn(batch, 1, hidden, device="cuda", dtype=torch.bfloat16)
    for _ in range(20):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    n = 400
    t0 = time.perf_counter()
    for _ in range(n):
        dist.all_reduce(x)
    torch.cuda.synchronize()
    us = (time.perf_counter() - t0) / n * 1e6
    if rank == 0:
        print(f"all_reduce {batch}x{hidden} bf16 ({x.numel() * 2 / 1024:.0f} KiB): {us:.1f} us", flush=True)
dist.destroy_process_group()
