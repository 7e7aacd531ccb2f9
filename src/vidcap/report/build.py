"""build_report(): one self-contained HTML page to review a run's output before training on it."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

from .. import tables
from ..errors import UsageError, error_code
from ..manifest import resolve_path
from .guard import add_sections
from .page import card, has_captions, page, summary_charts
from .table import choose_rows, filter_mask, parse_filter, row_errors, row_flags, tag_columns
from .thumbs import UNREADABLE, ThumbJob, Thumbs, plan_job, run_jobs
from .timeline import add_timelines, span_of

DEFAULT_SAMPLE = 200


def default_html(output_path) -> Path:
    p = Path(output_path)
    return p.with_name(f"{p.stem}_report.html")


def _resolve(value, root: Path) -> str:
    """The file a row's `path` names: absolute, or relative to `root` (the output's folder), else the cwd."""
    path = resolve_path(value, root)
    if path and "://" not in path and not os.path.exists(path):
        alt = resolve_path(value, Path.cwd())
        if os.path.exists(alt):
            return alt
    return path


def _normalize_filter(filter) -> tuple[str, str] | None:
    if filter is None or isinstance(filter, tuple):
        return filter
    if isinstance(filter, list) and len(filter) == 2:
        return tuple(filter)
    return parse_filter(str(filter))


def _plan(rows: pd.DataFrame, errors: pd.Series, root: Path, max_thumbs: int, width: int, quality: int):
    """A thumbnail job per shown row; for rows with no file to read, Thumbs saying why."""
    jobs: list[ThumbJob | Thumbs] = []
    for (_, row), err in zip(rows.iterrows(), errors, strict=False):
        codes = {error_code(e) for e in err.split("; ") if e}
        if "path" not in rows.columns or pd.isna(row.get("path")) or not str(row.get("path")).strip():
            jobs.append(Thumbs([], error="no path given"))
            continue
        if codes & UNREADABLE:
            jobs.append(Thumbs([], error="the file could not be read (see the error)"))
            continue
        jobs.append(
            plan_job(
                _resolve(row["path"], root),
                row.get("frame_idx"),
                row.get("num_frames"),
                max_thumbs=max_thumbs,
                width=width,
                quality=quality,
                span=span_of(row.to_dict()),
            )
        )
    return jobs


def build_report(
    output_path,
    html_path=None,
    sample: int = DEFAULT_SAMPLE,
    filter=None,
    seed: int = 0,
    workers: int | None = None,
    root=None,
    max_thumbs: int = 8,
    thumb_width: int = 160,
    quality: int = 70,
) -> dict:
    """Write the review page for a vidcap output (caption, motion, tag, or merged) and return its stats.

    sample: rows shown (0 = all); errors and flagged rows take up to a quarter of them each.
    filter: ("flag", "repetition"), "error=decode", ... (see `table.filter_mask`); charts cover every row.
    root: folder that relative paths are resolved against (default: the output's folder).
    """
    t0 = time.monotonic()
    output_path = Path(output_path)
    html_path = Path(html_path) if html_path else default_html(output_path)
    if html_path.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"the report file {html_path} must end in .html.")
    if sample < 0:
        raise UsageError(f"--sample must be 0 (all rows) or more, not {sample}.")
    df = tables.numbers(tables.read(output_path)).reset_index(drop=True)
    root = Path(root) if root else output_path.resolve().parent
    errors, flags, tag_cols = row_errors(df), row_flags(df), tag_columns(df)
    flt = _normalize_filter(filter)
    mask = filter_mask(df, *flt) if flt else pd.Series(True, index=df.index)
    matched = df.index[mask.to_numpy(dtype=bool)]
    picks = choose_rows(errors[matched] != "", flags[matched].map(bool), sample, seed)
    shown = df.loc[matched[picks]]
    shown_err, shown_flags = errors[shown.index], flags[shown.index]
    jobs = _plan(shown, shown_err, root, max_thumbs, thumb_width, quality)
    nworkers = min(8, os.cpu_count() or 1) if workers is None else workers
    todo = [j for j in jobs if isinstance(j, ThumbJob)]
    done = iter(run_jobs(todo, nworkers))
    thumbs = [next(done) if isinstance(j, ThumbJob) else j for j in jobs]
    captions = has_captions(df)
    cards = [
        card(int(i), row.to_dict(), e, f, t, tag_cols, captions)
        for (i, row), e, f, t in zip(shown.iterrows(), shown_err, shown_flags, thumbs, strict=False)
    ]
    lines = [
        (
            f"{output_path.name}: {len(df):,} rows, {int((errors != '').sum()):,} failed, "
            f"{int(flags.map(bool).sum()):,} flagged."
        ),
        (f"filter {flt[0]}={flt[1]}: {len(matched):,} rows match; " if flt else "")
        + f"showing {len(shown):,} (errors and flagged rows first picked, seed {seed}). "
        "Charts cover all rows.",
    ]
    html = page(f"vidcap review: {output_path.name}", lines, summary_charts(df, errors, flags, tag_cols), cards)
    html = add_sections(html, df)  # healed captions and near-duplicate clusters, where the output has them
    html = add_timelines(html, df, errors, {int(i) for i in shown.index})  # range rows, video by video
    html_path.parent.mkdir(parents=True, exist_ok=True)
    _write_text(html_path, html)
    images = sum(len(t.images) for t in thumbs)
    return {
        "html": str(html_path),
        "rows": len(df),
        "matched": len(matched),
        "shown": len(shown),
        "errors_shown": int((shown_err != "").sum()),
        "flagged_shown": int(shown_flags.map(bool).sum()),
        "thumbnails": images,
        "thumbnail_failures": sum(1 for j, t in zip(jobs, thumbs, strict=False) if isinstance(j, ThumbJob) and t.error),
        "bytes": html_path.stat().st_size,
        "seconds": round(time.monotonic() - t0, 3),
    }


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
