"""On a GPU: vidcap's engine with CUDA graphs against generate() on the tiny model of every family
(float32, so both paths must pick the same greedy tokens). Prints one line per family; exit 1 on a mismatch.

usage: python3 benchmarks/engine_check.py [WORKDIR]
       python3 benchmarks/engine_check.py [WORKDIR] --shapes qwen3-vl-8b,internvl3-8b [--clips 16] [--new 32]
           [--json FILE]
The second form checks bench shapes (random weights at real size, float32 by default) or tiny-<family>
models: the first NEW greedy tokens of CLIPS random clips, engine against generate() one clip at a time.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from vidcap.backends.base import CaptionOptions, CaptionRequest
from vidcap.backends.registry import make_backend, resolve_model
from vidcap.dev.tiny import build_tiny_model
from vidcap.engine import Engine, ListSource
from vidcap.prompts.caption import get_prompt, render

NEW = 24


def main(root: Path) -> int:
    bad = 0
    rng = np.random.default_rng(0)
    for family in ("pllava", "llava-next", "qwen2-vl", "llava-onevision"):
        path = build_tiny_model(root / family, family)
        preset = resolve_model(str(path))
        backend = make_backend(preset, CaptionOptions(max_new_tokens=NEW, batch_size=4, dtype="float32"))
        backend.setup("cuda")
        long = render(get_prompt(preset.prompt or "video"), "")
        reqs = []
        for i in range(9):
            h, w = [(120, 160), (128, 96), (112, 200)][i % 3]
            frames = rng.integers(0, 255, size=(preset.num_frames, h, w, 3), dtype=np.uint8)
            reqs.append(CaptionRequest(frames, long if i % 4 else "Say what happens.", meta={"path": f"c{i}"}))
        items = [backend.prepare_item(r) for r in reqs]
        cfg = backend.generation_config()
        want = []
        for item in items:
            inputs = {k: v.to("cuda") if hasattr(v, "to") else v for k, v in backend.collate([item]).inputs.items()}
            n = inputs["input_ids"].shape[1]
            with torch.inference_mode():
                ids = backend.model.generate(**inputs, generation_config=cfg)[0, n:].tolist()
            cut = next((i + 1 for i, t in enumerate(ids) if t in backend.eos), len(ids))
            want.append(ids[:cut])
        engine = Engine(
            backend.model,
            slots=4,
            max_new_tokens=NEW,
            eos=backend.eos,
            pad_id=backend.pad_id,
            device="cuda",
            dtype=torch.float32,
            collate=backend._collate_right,
        )
        got = {o.key: o.tokens for o in engine.run(ListSource(list(enumerate(items))))}
        same = [got.get(i) == w for i, w in enumerate(want)]
        s = engine.stats.summary()
        print(
            f"{family:16} equal {sum(same)}/{len(same)}  replays {s['graph_replays']} eager {s['eager_steps']} "
            f"prefix {s['shared_prefix_tokens']} attention {s['attention']} fast_path {s['fast_path']} ({s['fast_path_reason']})",
            flush=True,
        )
        bad += not all(same) or s["graph_replays"] == 0
        backend.teardown()
    return 1 if bad else 0


def _shape_backend(root: Path, spec: str, new: int, dtype: str, device: str):
    """The backend of a bench shape (real-size skeleton, random weights) or of a tiny-<family> model."""
    from dataclasses import replace

    from vidcap.backends.registry import PRESETS
    from vidcap.bench.shapes import SHAPES, write_skeleton

    if spec.startswith("tiny-"):
        preset = resolve_model(str(build_tiny_model(root / spec, spec[len("tiny-") :])))
    else:
        path = write_skeleton(root / spec, spec)
        preset = replace(PRESETS[SHAPES[spec][1]], name=spec, model_id=str(path))
    backend = make_backend(preset, CaptionOptions(max_new_tokens=new, batch_size=4, dtype=dtype, ignore_eos=True))
    backend.setup(device)
    return preset, backend


def check_shapes(
    root: Path, specs: list[str], clips: int, new: int, dtype: str, device: str, slots: int
) -> tuple[int, list]:
    """First `new` greedy tokens of `clips` random clips (EOS ignored), engine against generate()."""
    import time

    bad, report = 0, []
    rng = np.random.default_rng(0)
    sizes = [(252, 448), (360, 640), (224, 224), (448, 252)]
    for spec in specs:
        t0 = time.perf_counter()
        preset, backend = _shape_backend(root, spec, new, dtype, device)
        long = render(get_prompt(preset.prompt or "video"), "")
        reqs = []
        for i in range(clips):
            h, w = sizes[i % len(sizes)]
            frames = rng.integers(0, 255, size=(preset.num_frames, h, w, 3), dtype=np.uint8)
            reqs.append(CaptionRequest(frames, long if i % 4 else "Say what happens.", meta={"path": f"c{i}"}))
        items = [backend.prepare_item(r) for r in reqs]
        cfg = backend.generation_config()
        cfg.eos_token_id = None  # first `new` tokens, whatever they are
        cfg.max_new_tokens = new
        want, t1 = [], time.perf_counter()
        for item in items:
            inputs = {k: v.to(device) if hasattr(v, "to") else v for k, v in backend.collate([item]).inputs.items()}
            n = inputs["input_ids"].shape[1]
            with torch.inference_mode():
                want.append(backend.model.generate(**inputs, generation_config=cfg)[0, n : n + new].tolist())
        t2 = time.perf_counter()
        engine = Engine(
            backend.model,
            slots=slots,
            max_new_tokens=new,
            eos=[],
            pad_id=backend.pad_id,
            device=device,
            dtype=getattr(torch, dtype),
            collate=backend._collate_right,
        )
        got = {o.key: o.tokens for o in engine.run(ListSource(list(enumerate(items))))}
        t3 = time.perf_counter()
        same = [got.get(i) == w for i, w in enumerate(want)]
        # where they differ: the first step that differs (a near-tie in random weights shows as a late split)
        first_diff = [
            next((j for j, (a, b) in enumerate(zip(got.get(i) or [], w, strict=False)) if a != b), None)
            for i, w in enumerate(want)
            if not same[i]
        ]
        s = engine.stats.summary()
        row = {
            "shape": spec,
            "dtype": dtype,
            "clips": clips,
            "new_tokens": new,
            "slots": slots,
            "equal": sum(same),
            "first_differing_step": first_diff,
            "prompt_tokens": [int(it["input_ids"].shape[1]) for it in items],
            "graph_replays": s["graph_replays"],
            "eager_steps": s["eager_steps"],
            "shared_prefix_tokens": s["shared_prefix_tokens"],
            "attention": s["attention"],
            "fast_path": s["fast_path"],
            "fast_path_reason": s["fast_path_reason"],
            "fused_kernels": s.get("fused_kernels"),
            "vision_attention": s.get("vision_attention"),
            "setup_s": t1 - t0,
            "generate_s": t2 - t1,
            "engine_s": t3 - t2,
        }
        report.append(row)
        print(
            f"{spec:16} equal {sum(same)}/{len(same)} (first {new} tokens; differing at steps {first_diff})  "
            f"replays {s['graph_replays']} eager {s['eager_steps']} prefix {s['shared_prefix_tokens']} "
            f"attention {s['attention']} fast_path {s['fast_path']} ({s['fast_path_reason']})",
            flush=True,
        )
        bad += not all(same) or (str(device).startswith("cuda") and s["graph_replays"] == 0)
        backend.teardown()
        del backend, engine
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return bad, report


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser()
    ap.add_argument("workdir", nargs="?")
    ap.add_argument("--shapes", help="bench shapes or tiny-<family>, comma-separated")
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--json")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.workdir or tmp)
        if not a.shapes:
            sys.exit(main(root))
        bad, report = check_shapes(
            root, [x for x in a.shapes.split(",") if x], a.clips, a.new, a.dtype, a.device, a.slots
        )
        if a.json:
            Path(a.json).write_text(json.dumps(report, indent=2, default=str))
        sys.exit(1 if bad else 0)
