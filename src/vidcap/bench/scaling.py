"""`vidcap bench --gpus 1,2`: the same clips on 1 GPU, then on N GPUs, through the multi-GPU runner.

Each GPU worker is its own process (its own model, decode workers and compiled graphs), so timings come
from the part files: with one part per batch, a part's mtime is when that batch finished. Steady state
is measured after every worker's first batch (model build and compilation excluded).
"""

from __future__ import annotations

import time
from pathlib import Path


def _parts_rate(parts_dir: Path) -> dict:
    import pandas as pd

    from ..manifest import RID

    by_worker: dict[str, list[tuple[float, int]]] = {}
    for p in parts_dir.glob("part-*.parquet"):
        worker = p.name.split("-")[1]
        by_worker.setdefault(worker, []).append((p.stat().st_mtime, len(pd.read_parquet(p, columns=[RID]))))
    if not by_worker:
        return {}
    spans = {w: sorted(v) for w, v in by_worker.items()}
    start = max(v[0][0] for v in spans.values())  # every worker has finished its first batch
    end = max(v[-1][0] for v in spans.values())
    rows = sum(n for v in spans.values() for t, n in v if t > start)
    return {
        "workers": len(spans),
        "steady_videos_per_s": rows / (end - start) if end > start else None,
        "first_batch_spread_s": start - min(v[0][0] for v in spans.values()),
    }


def run_scaling(cfg, stage, manifest: Path, root: Path, specs: list[str]) -> list[dict]:
    from ..runner import RunOptions, run

    runs = []
    for n in specs:
        out = root / f"out_{n.replace(':', '')}gpu.parquet"
        opts = RunOptions(
            workers=cfg.workers,
            overwrite=True,
            progress=False,
            keep_parts=True,
            part_rows=cfg.batch_size,
            part_seconds=1e9,
            gpus=n,
        )
        t0 = time.perf_counter()
        summary = run(stage, manifest, out, opts)
        wall = time.perf_counter() - t0
        rate = _parts_rate(out.with_name(out.name + ".parts"))
        runs.append(
            {
                "label": f"--gpus {n}",
                "gpus": n,
                "videos": summary["processed"],
                "ok": summary["ok"],
                "wall_s": wall,
                "videos_per_s": summary["processed"] / wall,
                **rate,
            }
        )
    base = runs[0].get("steady_videos_per_s")
    for r in runs:
        if base and r.get("steady_videos_per_s"):
            r["scaling_vs_first"] = r["steady_videos_per_s"] / base
    return runs


def format_scaling(runs: list[dict]) -> str:
    lines = []
    for r in runs:
        steady = r.get("steady_videos_per_s")
        lines.append(
            f"[{r['label']}] {r['videos']} videos ({r['ok']} ok) in {r['wall_s']:.1f} s: "
            f"{r['videos_per_s']:.2f} videos/s end to end"
            + (f", {steady:.2f} videos/s steady state" if steady else "")
            + (f", scaling {r['scaling_vs_first']:.2f}x" if r.get("scaling_vs_first") else "")
        )
    return "\n".join(lines)
