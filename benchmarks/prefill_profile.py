"""On a GPU: where one prefill call of the engine (a refill of 16 clips) spends its time, at a real model
size (random weights): wall time, the share of it the GPU is busy, and the top CUDA kernels and CPU ops.

usage: python3 benchmarks/prefill_profile.py SHAPE [CLIPS] [HEIGHT] [WIDTH]   (frames of HEIGHTxWIDTH)
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

from vidcap.backends.base import CaptionRequest
from vidcap.bench.run import BenchConfig, _model_dir, _stage
from vidcap.engine import Engine, ListSource


def main(shape: str, n: int, height: int, width: int) -> None:
    cfg = BenchConfig(shape=shape, batch_size=n, new_tokens=8, work_dir=f"/tmp/prefill-profile-{shape}")
    model_dir, preset = _model_dir(cfg, Path(cfg.work_dir))
    stage = _stage(cfg, model_dir, preset, fast=True)
    stage.setup("cuda")
    backend = stage.backend
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(stage.num_frames, height, width, 3), dtype=np.uint8)
    prompt = stage.picker(None, False)
    t0 = time.perf_counter()
    items = [(i, backend.prepare_item(CaptionRequest(frames, prompt, meta={"path": f"p{i}"}))) for i in range(n)]
    print(
        f"{shape}: preprocessing {1e3 * (time.perf_counter() - t0) / n:.1f} ms per clip on one core "
        f"({int(items[0][1]['input_ids'].shape[1])} prompt tokens)"
    )
    engine = Engine(
        backend.model,
        slots=n,
        max_new_tokens=8,
        eos=backend.eos,
        pad_id=backend.pad_id,
        device="cuda",
        dtype=backend.dtype,
        collate=backend._collate_right,
        ignore_eos=True,
    )
    list(engine.run(ListSource(items)))  # allocates the cache, captures the graphs, warms up
    shared = engine.lm.prefix_len > 0
    chunk = [(f"x{i}", item, 8) for i, (_, item) in enumerate(items[:16])]
    n = len(chunk)
    fused_state = engine.fused.state
    firsts = []
    with torch.inference_mode():
        for label, state in (("transformers' elementwise", "off: compared"), ("fused kernels", fused_state)):
            engine.fused.state = state  # the same process, the same clips: with and without the fused kernels
            for _ in range(3):
                engine.active.clear()
                torch.cuda.synchronize()
                t0 = time.perf_counter()
                engine._prefill(chunk, shared)
                torch.cuda.synchronize()
                dt = time.perf_counter() - t0
            firsts.append(engine.lm.tok[:n].tolist())
            print(f"prefill of {n} clips, {label}: {1e3 * dt:.0f} ms ({1e3 * dt / n:.1f} ms per clip)")
        same = sum(a == b for a, b in zip(*firsts, strict=False))
        print(f"first tokens equal with and without the fused kernels: {same} of {n}")
        print("prefill kernels:", engine.fused.summary())
        engine.active.clear()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            engine._prefill(chunk, shared)
            torch.cuda.synchronize()
        engine.active.clear()
    events = prof.key_averages()
    gpu_ms = sum(e.self_device_time_total for e in events) / 1e3
    print(
        f"prefill of {n} clips: {1e3 * dt:.0f} ms wall ({1e3 * dt / n:.1f} ms per clip); GPU kernels "
        f"{gpu_ms:.0f} ms ({gpu_ms / (1e3 * dt):.0%} busy); vision attention: {engine.stats.vision_attention}"
    )
    print(events.table(sort_by="self_cuda_time_total", row_limit=14, max_name_column_width=60))
    print(events.table(sort_by="self_cpu_time_total", row_limit=16, max_name_column_width=60))


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], int(a[1]) if len(a) > 1 else 32, int(a[2]) if len(a) > 2 else 720, int(a[3]) if len(a) > 3 else 1280)
