"""Score camera-motion sets and keep every clip's numbers: per source, per builder, the misses with truth.

    python benchmarks/motion_eval.py OUT.csv LABELS.csv [LABELS.csv ...] [--workers 2]

Writes OUT.csv (one row per clip: the label file's columns plus pred, p_dx, p_dy, p_zoom, p_conf,
p_score, p_note) and prints accuracy overall, per set, per source, per kind and the misses.
"""

from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

from vidcap.motion.evaluate import predict_paths


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("labels", nargs="+")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    frames = []
    for path in args.labels:
        df = pd.read_csv(path)
        df["set"] = os.path.basename(os.path.dirname(os.path.abspath(path)))
        df["file"] = [os.path.join(os.path.dirname(os.path.abspath(path)), p) for p in df["path"]]
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    timing: dict = {}
    labels, results, _, seconds = predict_paths(list(df["file"]), workers=args.workers, timing=timing)
    df["pred"] = labels
    for col, attr in (
        ("p_dx", "dx"),
        ("p_dy", "dy"),
        ("p_zoom", "zoom"),
        ("p_conf", "confidence"),
        ("p_score", "score"),
    ):
        df[col] = [round(getattr(r, attr), 4) if r is not None else float("nan") for r in results]
    df["p_note"] = [(r.reason or r.note) if r is not None else "error" for r in results]
    df["ok"] = df["pred"] == df["label"]
    df.to_csv(args.out, index=False)
    print(
        f"clips {len(df)}  accuracy {df['ok'].mean():.1%} ({int(df['ok'].sum())}/{len(df)})  "
        f"{len(df) / seconds:.1f} clips/s wall, CPU {timing['cpu'] / len(df) * 1000:.0f} ms/clip"
    )
    for key in ("set", "source", "kind"):
        stats = df.groupby(key)["ok"].agg(["mean", "sum", "count"]).sort_values("mean")
        print(
            f"by {key}: "
            + ", ".join(f"{k} {r['mean']:.1%} ({int(r['sum'])}/{int(r['count'])})" for k, r in stats.iterrows())
        )
    cols = ["path", "label", "pred", "dx", "dy", "zoom", "p_dx", "p_dy", "p_zoom", "p_conf", "p_note"]
    cols += [c for c in ("size", "condition", "low_light", "scene") if c in df.columns]
    with pd.option_context("display.width", 250, "display.max_colwidth", 60, "display.max_rows", 200):
        print(df.loc[~df["ok"], cols].to_string(index=False))


if __name__ == "__main__":
    sys.exit(main())
