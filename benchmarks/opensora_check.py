"""Open-Sora's own code over a vidcap export (run by opensora_check.sh inside the mid-2024 venv; stdlib and
pandas only, Open-Sora itself runs in subprocesses): every datautil option that applies, `--info` against
the export's columns, and one full pass of the training loader with the bucket sampler.

    python opensora_check.py OPENSORA_SRC TRAIN_CSV OUT_DIR
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pandas as pd

NOT_APPLICABLE = {
    "--count-num-token t5": "downloads the T5 tokenizer",
    "--load-caption json|txt": "reads caption files beside the clips, not the table",
    "--score-to-text, --aesmin, --matchmin, --flowmin": "need aes/match/flow score columns",
}
BUCKETS = {
    "144p": {1: (1.0, 4), 16: (1.0, 2), 51: (1.0, 2)},
    "240p": {1: (1.0, 2), 16: (1.0, 1), 51: (1.0, 1)},
    "360p": {1: (1.0, 1), 16: (1.0, 1), 51: (1.0, 1)},
}
LOADER = """
import json, sys, tempfile, torch.distributed as dist
from opensora.datasets import VariableVideoTextDataset
from opensora.datasets.dataloader import prepare_dataloader
dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
buckets = {k: {int(t): tuple(v) for t, v in d.items()} for k, d in json.loads(sys.argv[2]).items()}
ds = VariableVideoTextDataset(data_path=sys.argv[1], transform_name="resize_crop")
dl = prepare_dataloader(ds, shuffle=True, num_workers=0, process_group=dist.group.WORLD, bucket_config=buckets)
dl = dl[0] if isinstance(dl, tuple) else dl  # v1.2.0 returns (loader, sampler)
batches = samples = 0
shapes = {}
for batch in dl:
    batches += 1
    samples += batch["video"].shape[0]
    assert all(isinstance(t, str) and t for t in batch["text"]), batch["text"]
    key = "x".join(map(str, batch["video"].shape[1:]))
    shapes[key] = shapes.get(key, 0) + 1
print("LOADER " + json.dumps({"batches": batches, "samples": samples, "rows": len(ds), "shapes": shapes}))
"""


def datautil(src: str, args: list[str], out: str) -> dict:
    cmd = [sys.executable, "-m", "tools.datasets.datautil", *args, "--disable-parallel", "--output", out]
    proc = subprocess.run(  # noqa: PLW1510 (the exit code is the result)
        cmd, cwd=src, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": src}
    )
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    res = {"rc": proc.returncode, "error": lines[-1][:160] if proc.returncode and lines else ""}
    stem, ext = os.path.splitext(out)
    shards = sorted(f"{stem}_{i}{ext}" for i in range(64) if os.path.exists(f"{stem}_{i}{ext}"))  # --shard
    if proc.returncode == 0 and shards:
        parts = [pd.read_csv(s) for s in shards]
        text = pd.concat([p["text"] for p in parts])
        rows = "+".join(str(len(p)) for p in parts)
        return {**res, "rows": rows, "nan_text": int(text.isna().sum()), "nan_word": int((text == "nan").sum())}
    if proc.returncode == 0 and os.path.exists(out):
        data = pd.read_parquet(out) if out.endswith(".parquet") else pd.read_csv(out)  # as Open-Sora reads it
        text = data["text"] if "text" in data.columns else pd.Series(dtype=object)
        res.update(rows=len(data), nan_text=int(text.isna().sum()), nan_word=int((text.astype(str) == "nan").sum()))
    return res


def options(train: str, work: str) -> list[tuple[str, list[str]]]:
    prev = os.path.join(work, "refine.csv")
    runs = [
        (o, [train, *o.split()])
        for o in (
            "--info",
            "--video-info",
            "--ext",
            "--remove-url",
            "--lang en",
            "--refine-llm-caption",
            "--clean-caption",
            "--merge-cmotion",
            "--remove-empty-caption",
            "--remove-empty-path",
            "--remove-path-duplication",
            "--remove-text-duplication",
            "--fmin 1",
            "--fmax 100000",
            "--hwmax 10000000",
            "--fpsmax 60",
            "--vid-only",
            "--img-only",
            "--sort num_frames",
            "--sort-ascending num_frames",
            "--path-to-id",
            "--shuffle --head 3",
            "--shard 2",
            "--relpath /",
            "--path-subset /",
            "--filesize",
            "--filesize --fsmax 100",
            "--train-column",
        )
    ]
    runs += [
        ("--difference <its --refine-llm-caption output>", [train, "--difference", prev]),
        ("--intersection <its --refine-llm-caption output>", [train, "--intersection", prev]),
        ("--update-text <its --refine-llm-caption output>", [train, "--update-text", prev]),
        ("--append-text ' end.'", [train, "--append-text", " end."]),
        ("merge (the export twice)", [train, train]),
        ("--format parquet", [train, "--format", "parquet"]),
        (
            (
                "--refine-llm-caption --merge-cmotion --clean-caption --remove-url --lang en --remove-empty-caption "
                "--train-column"
            ),
            [
                train,
                "--refine-llm-caption",
                "--merge-cmotion",
                "--clean-caption",
                "--remove-url",
                "--lang",
                "en",
                "--remove-empty-caption",
                "--train-column",
            ],
        ),
    ]
    return runs


def info_against_export(train: str, info_csv: str) -> dict:
    """Columns where --info differs from the export, with the number of rows."""
    mine, theirs = pd.read_csv(train).set_index("path"), pd.read_csv(info_csv).set_index("path")
    diffs = {}
    for col in ("num_frames", "height", "width", "aspect_ratio", "resolution", "fps"):
        a, b = mine[col], theirs.loc[mine.index, col]
        same = [
            (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-9) for x, y in zip(a, b, strict=False)
        ]
        diffs[col] = {
            "rows": len(same),
            "differ": len(same) - sum(same),
            "examples": [f"{p}: {x} vs {y}" for p, x, y, s in zip(a.index, a, b, same, strict=False) if not s][:3],
        }
    return diffs


def main(src: str, train: str, work: str) -> None:
    results, info = [], {}
    for i, (name, args) in enumerate(options(train, work)):
        out = os.path.join(work, "refine.csv" if name == "--refine-llm-caption" else f"opt{i}.csv")
        if name == "--format parquet":
            out = os.path.join(work, f"opt{i}.parquet")
        res = datautil(src, args, out)
        results.append({"option": name, **res})
        if name == "--info" and res["rc"] == 0:
            info = info_against_export(train, out)
        if name.startswith("--refine-llm-caption --merge") and res["rc"] == 0:
            chained = datautil(src, [out, "--info"], os.path.join(work, "chain_info.csv"))
            results.append({"option": "--info on that chain's output", **chained})
    proc = subprocess.run(  # noqa: PLW1510 (the exit code is the result)
        [sys.executable, "-c", LOADER, train, json.dumps(BUCKETS)],
        cwd=src,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": src},
    )
    found = [ln for ln in proc.stdout.splitlines() if ln.startswith("LOADER ")]
    loader = json.loads(found[-1][7:]) if found else {"rc": proc.returncode, "error": proc.stderr.strip()[-400:]}
    print("| datautil options | exit | rows | NaN captions | `nan` captions | error |\n|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| `{r['option']}` | {r['rc']} | {r.get('rows', '')} | {r.get('nan_text', '')} | "
            f"{r.get('nan_word', '')} | {r['error']} |"
        )
    print("\n--info against the export:", json.dumps(info, indent=1))
    print("loader:", json.dumps(loader))
    with open(os.path.join(work, "results.json"), "w") as fh:
        json.dump({"datautil": results, "info": info, "loader": loader, "not_applicable": NOT_APPLICABLE}, fh, indent=1)


if __name__ == "__main__":
    main(*sys.argv[1:4])
