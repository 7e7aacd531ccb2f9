"""Measure the classifier on a labelled set: accuracy, per-class confusion, clips per second."""

from __future__ import annotations

import time
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING

from vidcap.errors import UsageError, VidcapError
from vidcap.motion.result import CLASSES, DEFAULT_THRESHOLD, MotionResult, classify, normalize_label

if TYPE_CHECKING:
    import pandas as pd


def analyze(path: str, max_frames: int = 64, work_width: int = 160) -> MotionResult:
    """Decode `path` densely and estimate its camera motion (raises VidcapError for a bad file)."""
    from vidcap.motion.dense import estimate
    from vidcap.motion.reader import read_gray

    clip = read_gray(path, max_frames=max_frames, width=work_width, lazy=True)
    return estimate(clip.frames, work_width=work_width, times=clip.times, fps=clip.fps or None)


def _analyze_row(path: str) -> tuple[MotionResult | None, str]:
    try:
        return analyze(path), ""
    except VidcapError as exc:
        return None, exc.text


def evaluate(pred_labels, true_labels) -> tuple[float, pd.DataFrame]:
    """Exact-label accuracy and a confusion table of base classes (rows: truth, columns: predicted).

    A combined label (`pan_left+zoom_in`) counts once per base class it holds in its truth row, so
    the table shows which component went wrong; accuracy compares whole labels.
    """
    import pandas as pd  # here, not at the top: `vidcap.motion` loads this module, and its decode workers need no pandas

    pred = [normalize_label(p) for p in pred_labels]
    true = [normalize_label(t) for t in true_labels]
    if len(pred) != len(true):
        raise ValueError(f"{len(pred)} predictions for {len(true)} labels")
    accuracy = sum(p == t for p, t in zip(pred, true, strict=False)) / len(true) if true else 0.0
    table = pd.DataFrame(0, index=list(CLASSES), columns=list(CLASSES), dtype=int)
    for p, t in zip(pred, true, strict=False):
        p_parts, t_parts = p.split("+"), t.split("+")
        for tc in t_parts:
            if tc in p_parts:
                table.loc[tc, tc] += 1
            else:
                wrong = [pc for pc in p_parts if pc not in t_parts] or [p_parts[0]]
                table.loc[tc, wrong[0]] += 1
    table = table.loc[(table.sum(axis=1) > 0) | (table.sum(axis=0) > 0)]
    table = table.loc[:, (table.sum(axis=0) > 0) | table.columns.isin(table.index)]
    return accuracy, table


def _cpu_seconds() -> float:
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core; OpenCV's own threads only contend


def predict_paths(paths: list[str], threshold: float = DEFAULT_THRESHOLD, workers: int = 2, timing: dict | None = None):
    """(labels, results, errors, seconds) for `paths`, decoded and estimated in `workers` processes.

    `timing`, if given, receives the wall and CPU seconds (all processes) of the work.
    """
    start, cpu0 = time.perf_counter(), _cpu_seconds()
    if workers > 1:
        with ProcessPoolExecutor(workers, initializer=_init_worker) as pool:
            out = list(pool.map(_analyze_row, paths, chunksize=4))
    else:
        _init_worker()
        out = [_analyze_row(p) for p in paths]
    seconds = time.perf_counter() - start
    if timing is not None:
        timing.update(wall=seconds, cpu=_cpu_seconds() - cpu0)
    results = [r for r, _ in out]
    labels = [classify(r, threshold) if r is not None else "unclassified" for r in results]
    return labels, results, [e for _, e in out], seconds


def _by_group(name: str, groups, labels, truth) -> list[str]:
    """Lines of accuracy per value of `groups` (e.g. footage source), worst first."""
    import pandas as pd  # see `evaluate`

    df = pd.DataFrame({"g": list(groups), "ok": [p == t for p, t in zip(labels, truth, strict=False)]})
    stats = df.groupby("g")["ok"].agg(["mean", "sum", "count"]).sort_values("mean")
    return [f"accuracy by {name}:"] + [
        f"  {g:<24} {r['mean']:7.1%} ({int(r['sum'])}/{int(r['count'])})" for g, r in stats.iterrows()
    ]


def run_eval(labels_csv: str, threshold: float = DEFAULT_THRESHOLD, workers: int = 2) -> str:
    """The report `vidcap motion --eval LABELS.csv` prints (columns path,label; paths relative to it).

    Optional columns `source` and `kind` (as `python -m vidcap.motion.evalset` writes them) add
    accuracy per footage source and per kind of clip (move, cut, dissolve, fade).
    """
    from vidcap.manifest import ABSPATH, read_manifest

    df = read_manifest(labels_csv, require=("path", "label"))
    try:
        truth = [normalize_label(x) for x in df["label"]]
    except ValueError as exc:
        raise UsageError(f"{labels_csv}: {exc}; use {', '.join(CLASSES)} or `+` joins.") from None
    timing: dict = {}
    labels, _, errs, seconds = predict_paths(list(df[ABSPATH]), threshold, workers, timing)
    accuracy, table = evaluate(labels, truth)
    right = sum(p == t for p, t in zip(labels, truth, strict=False))
    lines = [
        f"clips: {len(df)}  threshold: {threshold}  workers: {workers}",
        f"exact-label accuracy: {accuracy:.1%} ({right}/{len(truth)})",
        (
            f"speed: {len(df) / seconds:.1f} clips/s ({seconds:.1f} s wall, decode included); "
            f"CPU {timing['cpu'] / len(df) * 1000:.0f} ms per clip"
        ),
        f"failed rows: {sum(bool(e) for e in errs)}",
    ]
    for column, name in (("source", "source"), ("kind", "kind")):
        if column in df.columns:
            lines += ["", *_by_group(name, df[column].astype(str), labels, truth)]
    lines += ["", "confusion (rows: true class, columns: predicted):", table.to_string()]
    wrong = [(p, t, path) for p, t, path in zip(labels, truth, df["path"], strict=False) if p != t]
    if wrong:
        lines += ["", "misclassified:"] + [f"  {path}: true {t}, got {p}" for p, t, path in wrong[:30]]
    return "\n".join(lines)
