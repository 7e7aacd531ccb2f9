"""Tensor parallelism on real GPUs (issue 8): real-size random-weight checkpoints written to disk in the
layout users have (Qwen2.5-VL-7B as transformers saves it; PLLaVA-13B in the published PEFT layout), then
loaded through `vidcap caption`'s own path with one GPU, with `--gpus 0,1 --tp 2`, and with `--gpus 0,1`.

usage (on a 2-GPU device):  python3 benchmarks/tp_bench.py SHAPE [VIDEOS] [BATCH]   -> $OUT/tp-SHAPE.json
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

WORK = Path("/tmp/tp-bench")
NEW_TOKENS = 128


def materialize(shape: str) -> Path:
    """A checkpoint directory with real (random) weights, loadable by the ordinary non-benchmark path."""
    import torch

    from vidcap.backends.hf_common import RANDOM_MARKER, random_model
    from vidcap.bench.shapes import write_skeleton

    real = WORK / f"{shape}-real"
    if (real / "done").exists():
        return real
    skel = write_skeleton(WORK / f"{shape}-skel", shape)
    shutil.rmtree(real, ignore_errors=True)
    shutil.copytree(skel, real, ignore=shutil.ignore_patterns(RANDOM_MARKER))
    t0 = time.time()
    if shape.startswith("pllava"):
        from vidcap.backends.hf_pllava import parse_pooling
        from vidcap.backends.pllava_model import random_pllava

        raw = json.loads((skel / "config.json").read_text())
        model = random_pllava(skel, "cuda:0", torch.bfloat16, parse_pooling(raw.get("pooling_shape", (4, 12, 12))), 4)
        save_pllava_layout(model, real)
    else:
        from transformers import AutoModelForImageTextToText

        model = random_model(AutoModelForImageTextToText, skel, "cuda:0", torch.bfloat16)
        model.save_pretrained(real, max_shard_size="5GB")
    del model
    torch.cuda.empty_cache()
    (real / "done").write_text(f"{time.time() - t0:.1f}")
    print(f"wrote {real} in {time.time() - t0:.0f} s", flush=True)
    return real


def save_pllava_layout(model, out: Path, r: int = 128) -> None:
    """The ermu2001/pllava-* key layout: PEFT prefixes on the LM, q/v as base_layer plus lora_A/lora_B."""
    import torch
    from safetensors.torch import save_file

    state, shards, size, index = {}, [], 0, {}
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(1)

    def put(key, t):
        nonlocal size, state
        state[key] = t.detach().contiguous().cpu()
        size += t.numel() * t.element_size()
        if size > 4 << 30:
            flush()

    def flush():
        nonlocal size, state
        if state:
            shards.append(state)
            state, size = {}, 0

    for key, t in model.state_dict().items():
        if key.startswith("model.language_model."):
            rest = key[len("model.language_model.") :]
            base = "language_model.base_model.model.model." + rest
            if rest.endswith(("q_proj.weight", "v_proj.weight")):
                mod = base[: -len(".weight")]
                put(mod + ".base_layer.weight", t)
                put(
                    mod + ".lora_A.default.weight",
                    torch.randn(r, t.shape[1], generator=gen, device=t.device, dtype=t.dtype) * 0.01,
                )
                put(
                    mod + ".lora_B.default.weight",
                    torch.randn(t.shape[0], r, generator=gen, device=t.device, dtype=t.dtype) * 0.01,
                )
            else:
                put(base, t)
        elif key.startswith("lm_head."):
            put("language_model.base_model.model." + key, t)
        elif key.startswith("model.vision_tower."):
            put("vision_tower." + key[len("model.vision_tower.") :], t)
        elif key.startswith("model.multi_modal_projector."):
            put("multi_modal_projector." + key[len("model.multi_modal_projector.") :], t)
    flush()
    n = len(shards)
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file(shard, str(out / name), metadata={"format": "pt"})
        index.update({k: name for k in shard})
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}))


def caption(model: Path, manifest: Path, out: Path, batch: int, extra: list[str]) -> dict:
    args = [
        sys.executable,
        "-m",
        "vidcap",
        "caption",
        str(manifest),
        "-o",
        str(out),
        "--model",
        str(model),
        "-b",
        str(batch),
        "--max-new-tokens",
        str(NEW_TOKENS),
        "-q",
        "--overwrite",
        *extra,
    ]
    t0 = time.time()
    proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": "src"})
    wall = time.time() - t0
    tail = "\n".join(proc.stderr.strip().splitlines()[-12:])
    print(f"--- {' '.join(extra) or '1 GPU'}: rc={proc.returncode} {wall:.1f} s\n{tail}", flush=True)
    res = {"args": extra, "rc": proc.returncode, "wall_s": wall}
    if proc.returncode == 0:
        import pandas as pd

        df = pd.read_parquet(out)
        meta = json.loads(out.with_name(out.name + ".run.json").read_text())["summary"]
        res.update(
            ok=int((df["status"] == "ok").sum()),
            completion_tokens=int(df["completion_tokens"].fillna(0).sum()),
            run_wall_s=meta["wall_s"],
            rows_per_s=meta["rows_per_s"],
            texts=df["text"].tolist(),
            summary={k: v for k, v in meta.items() if k not in ("flags",)},
        )
        res["tokens_per_s"] = res["completion_tokens"] / meta["wall_s"]
    return res


def main() -> None:
    shape = sys.argv[1]
    videos = int(sys.argv[2]) if len(sys.argv) > 2 else 96
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    from vidcap.bench.clips import make_bench_clips

    manifest = make_bench_clips(WORK / "clips", videos, 640, 360, 4.0)
    model = materialize(shape)
    wanted = sys.argv[4].split(",") if len(sys.argv) > 4 else ["tp2", "one", "dp2"]
    configs = {"tp2": ["--gpus", "0,1", "--tp", "2"], "one": ["--device", "cuda:0"], "dp2": ["--gpus", "0,1"]}
    results = {
        name: caption(model, manifest, WORK / f"{shape}-{name}.parquet", batch, configs[name]) for name in wanted
    }
    runs = list(results.values())
    one, tp2 = results.get("one", {}), results.get("tp2", {})
    same = None
    if one.get("texts") and tp2.get("texts"):
        same = sum(a == b for a, b in zip(one["texts"], tp2["texts"], strict=False)) / len(one["texts"])
    report = {
        "shape": shape,
        "videos": videos,
        "batch": batch,
        "new_tokens": NEW_TOKENS,
        "identical_captions_tp2_vs_one": same,
        "runs": [{k: v for k, v in r.items() if k != "texts"} for r in runs],
        "first_captions": {"one": (one.get("texts") or [""])[:2], "tp2": (tp2.get("texts") or [""])[:2]},
    }
    print(json.dumps(report, indent=1), flush=True)
    out = Path(os.environ.get("OUT", "/tmp"))
    (out / f"tp-{shape}-{'-'.join(wanted)}.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
