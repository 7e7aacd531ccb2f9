"""`vidcap bench --window W`: windows of long videos against separate clips of the same length, same model,
same process. Both runs caption `videos` rows of W seconds: the clip run reads whole W-second files, the
window run reads W-second ranges of videos `--seconds` long (the range rows `vidcap caption --window` makes:
decode seeks into the long file), so the ratio says what captioning a long video window by window costs
against captioning it pre-cut."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .clips import make_bench_clips


def window_manifest(root: Path, cfg, window: float) -> Path:
    """`cfg.videos` range rows of `window` seconds over videos `cfg.seconds` long (the last window of a video
    may be cut short by the video's end only when `seconds` is no multiple of `window`)."""
    per = max(1, int(cfg.seconds // window))
    longs = make_bench_clips(root / "long", math.ceil(cfg.videos / per), cfg.width, cfg.height, cfg.seconds, distinct=4)
    paths = pd.read_csv(longs)["path"].tolist()
    rows = [{"path": p, "start_time": k * window, "end_time": (k + 1) * window} for p in paths for k in range(per)][
        : cfg.videos
    ]
    out = root / f"bench_windows_{cfg.videos}_{window:g}s.csv"
    pd.DataFrame(rows).to_csv(out, index=False)
    return out


def run_windows(cfg, stage, root: Path, workers, one_run, measured) -> tuple[list, dict]:
    """A warm-up, then the clip run and the window run, and their comparison."""
    window = float(cfg.window)
    clips = make_bench_clips(root / "short", cfg.videos, cfg.width, cfg.height, window)
    windows = window_manifest(root, cfg, window)
    warm = make_bench_clips(root / "warmup", cfg.batch_size, cfg.width, cfg.height, window, distinct=2)
    one_run(stage, warm, root / "warmup_windows.parquet", workers, "warm-up")
    runs = []
    for manifest, label, out in (
        (clips, f"{cfg.videos} clips of {window:g} s", "out_clips.parquet"),
        (windows, f"{cfg.videos} windows of {window:g} s in {cfg.seconds:g} s videos", "out_windows.parquet"),
    ):
        runs.append(measured(stage, manifest, root / out, workers, label))
    cut, long = runs
    e1, e2 = cut.get("engine") or {}, long.get("engine") or {}
    summary = {
        "window_s": window,
        "video_s": cfg.seconds,
        "rows": cfg.videos,
        "ok": [cut["ok"], long["ok"]],
        "speed_ratio": long["videos_per_s"] / max(cut["videos_per_s"], 1e-9),  # windows/s over clips/s
        "rows_per_s": [cut["videos_per_s"], long["videos_per_s"]],
        "steady_rows_per_s": [cut.get("steady_videos_per_s"), long.get("steady_videos_per_s")],
        "gpu_busy": [cut.get("gpu_busy"), long.get("gpu_busy")],
        "replays": [e1.get("graph_replays"), e2.get("graph_replays")],
        "ms_per_step": [e1.get("decode_ms_per_step"), e2.get("decode_ms_per_step")],
        "eager_steps": [e1.get("eager_steps"), e2.get("eager_steps")],
    }
    return runs, summary


def format_windows(w: dict) -> list[str]:
    return [
        f"windows of {w['window_s']:g} s in {w['video_s']:g} s videos vs pre-cut clips of {w['window_s']:g} s "
        f"({w['rows']} rows each, ok {w['ok'][0]} / {w['ok'][1]}): {w['speed_ratio']:.2f}x the rows per second "
        f"({_num(w['rows_per_s'][0])} -> {_num(w['rows_per_s'][1])}; steady {_num(w['steady_rows_per_s'][0])} -> "
        f"{_num(w['steady_rows_per_s'][1])})",
        f"    GPU busy {_pct(w['gpu_busy'][0])} -> {_pct(w['gpu_busy'][1])}; graph replays {w['replays'][0]} -> "
        f"{w['replays'][1]}, eager steps {w['eager_steps'][0]} -> {w['eager_steps'][1]}, ms per decode step "
        f"{_num(w['ms_per_step'][0])} -> {_num(w['ms_per_step'][1])}",
    ]


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"
