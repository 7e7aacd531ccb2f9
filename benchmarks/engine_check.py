"""On a GPU: vidcap's engine with CUDA graphs against generate() on the tiny model of every family
(float32, so both paths must pick the same greedy tokens). Prints one line per family; exit 1 on a mismatch.

usage: python3 benchmarks/engine_check.py [WORKDIR]
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
        engine = Engine(backend.model, slots=4, max_new_tokens=NEW, eos=backend.eos, pad_id=backend.pad_id,
                        device="cuda", dtype=torch.float32, collate=backend._collate_right)
        got = {o.key: o.tokens for o in engine.run(ListSource(list(enumerate(items))))}
        same = [got.get(i) == w for i, w in enumerate(want)]
        s = engine.stats.summary()
        print(f"{family:16} equal {sum(same)}/{len(same)}  replays {s['graph_replays']} eager {s['eager_steps']} "
              f"prefix {s['shared_prefix_tokens']} attention {s['attention']} fast_path {s['fast_path']} ({s['fast_path_reason']})", flush=True)
        bad += not all(same) or s["graph_replays"] == 0
        backend.teardown()
    return 1 if bad else 0


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        sys.exit(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tmp)))
