"""On a GPU: where one decode step of the engine spends its time, at a real model size (random weights).

Fills every slot with clips of the shape's real prompt, then times CUDA-graph replays of the full-slot step
with CUDA events (ms per step, bytes moved per step -> share of the copy bandwidth), and profiles a few
eager steps to split the step into matrix products, decode attention and the rest. (Prefill:
benchmarks/prefill_profile.py.)

usage: python3 benchmarks/decode_profile.py [SHAPE] [SLOTS]
"""

import sys
import time
from pathlib import Path

import numpy as np
import torch

from vidcap.backends.base import CaptionRequest
from vidcap.bench.run import BenchConfig, _model_dir, _stage
from vidcap.engine import Engine, ListSource


def main(shape: str, slots: int) -> None:
    cfg = BenchConfig(shape=shape, batch_size=slots, new_tokens=150, work_dir="/tmp/decode-profile")
    model_dir, preset = _model_dir(cfg, Path(cfg.work_dir))
    stage = _stage(cfg, model_dir, preset, fast=True)
    stage.setup("cuda")
    backend = stage.backend
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, size=(stage.num_frames, 336, 336, 3), dtype=np.uint8)
    prompt = stage.picker(None, False)
    items = [(i, backend.prepare_item(CaptionRequest(frames, prompt, meta={"path": f"p{i}"}))) for i in range(slots)]
    engine = Engine(
        backend.model,
        slots=slots,
        max_new_tokens=150,
        eos=backend.eos,
        pad_id=backend.pad_id,
        device="cuda",
        dtype=backend.dtype,
        collate=backend._collate_right,
        ignore_eos=True,
    )
    t0 = time.perf_counter()
    outs = list(engine.run(ListSource(items)))
    print(f"{shape}: {len(outs)} clips in {time.perf_counter() - t0:.1f} s; engine: {engine.stats.summary()}")
    lm = engine.lm
    # refill every slot, then time the full-slot graph on a realistic cache length
    with torch.inference_mode():
        lm.pos.fill_(int(items[0][1]["input_ids"].shape[1]) - lm.prefix_len + 75)
        lm.use_prefix.fill_(lm.prefix_len > 0)
        b = lm.slots
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        for _ in range(3):
            lm.step(b)
        start.record()
        for _ in range(20):
            lm.step(b)
        end.record()
        torch.cuda.synchronize()
        ms = start.elapsed_time(end) / 20
        p = engine.parts
        weights = (
            sum(
                t.numel() * t.element_size()
                for n, t in backend.model.named_parameters()
                if "language_model" in n and "embed" not in n
            )
            + p.head.weight.numel() * 2
        )
        kv = 2 * len(p.layers) * p.kv_heads * p.head_dim * 2 * (b * lm.length + lm.prefix_len)
        print(
            f"graph step, {b} slots: {ms:.2f} ms; reads >= {(weights + kv) / 1e9:.1f} GB "
            f"(weights {weights / 1e9:.1f}, KV {kv / 1e9:.1f}) -> {(weights + kv) / ms / 1e9:.2f} TB/s"
        )
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                lm._step(b)
            torch.cuda.synchronize()
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=18, max_name_column_width=70))
        # the prefill side: benchmarks/prefill_profile.py


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "pllava-13b", int(sys.argv[2]) if len(sys.argv) > 2 else 64)
