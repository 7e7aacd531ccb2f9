"""What `vidcap export --to opensora` does for range rows and chosen captions (docs/opensora.md).

Open-Sora's loader reads whole files, so a range row (`start_time`/`end_time`, e.g. a scenes table captioned
scene by scene) is cut into its own clip file (vidcap.cut) and the row's `path` names the clip; the source
stays in `source_path` with the range, and num_frames/fps/height/width are the clip's.
`--text-column NAME` picks the caption Open-Sora trains on: a column (a variant such as `text_dense`), or a
field of a JSON caption column, `COLUMN.FIELD` (dots go down nested objects: `text.cinematography.camera`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd

from .cut import Clip, cut_ranges
from .errors import UsageError
from .manifest import RANGE_COLUMNS, read_range

TEXT_KEPT = "text_vidcap"  # the `text` column a chosen one replaced


def pick_text(df: pd.DataFrame, name: str | None) -> pd.DataFrame:
    """`df` with `text` taken from column `name` or a JSON field `COLUMN.FIELD...` (None: as it is). A cell
    without the field becomes empty, which the export then leaves out as empty_text with its reason."""
    if not name:
        return df
    column, path = _split(name, [str(c) for c in df.columns])
    values = df[column] if not path else df[column].map(lambda cell: _field(cell, path))
    df = df.copy()
    if "text" in df.columns and column != "text" or "text" in df.columns and path:
        df[TEXT_KEPT] = df["text"]
    df["text"] = values
    return df


def _split(name: str, columns: list[str]) -> tuple[str, list[str]]:
    if name in columns:
        return name, []
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:i])
        if head in columns:
            return head, parts[i:]
    shown = ", ".join(columns[:30]) + (" ..." if len(columns) > 30 else "")
    raise UsageError(
        f"--text-column {name}: the inputs have no such column (nor COLUMN.FIELD of a JSON column); columns: {shown}."
    )


def _field(cell, path: list[str]):
    """The text at `path` in a JSON caption cell (an object, or its JSON text); None where it is missing."""
    value = cell
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    for key in path:
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def has_ranges(df: pd.DataFrame) -> bool:
    return set(RANGE_COLUMNS) <= set(map(str, df.columns))


def cut_rows(df: pd.DataFrame, reasons: pd.Series, clips_dir, workers: int = 1) -> dict:
    """Cut every range row not yet left out into `clips_dir`; its `path` becomes the clip (`source_path` keeps
    the file it came from) and num_frames the clip's count. A row whose range cannot be cut gets its reason.
    Returns how many clips were copied and encoded."""
    todo, jobs = [], []
    for i in df.index[reasons.isna()]:
        row = df.loc[i].to_dict()
        try:
            span = read_range(row)
        except Exception as exc:  # noqa: BLE001 - a VidcapError: the row's own reason
            reasons[i] = f"range: {getattr(exc, 'message', exc)}"
            continue
        if span is not None:
            todo.append(i)
            jobs.append((str(row["path"]), span))
    counts = {"copied": 0, "encoded": 0}
    if not jobs:
        return counts
    Path(clips_dir).mkdir(parents=True, exist_ok=True)
    if "source_path" not in df.columns:
        df["source_path"] = df["path"]
    # whole columns set at once, as objects: a column read as text (a chained output) takes no int cell
    paths, frames = df["path"].astype(object), df["num_frames"].astype(object)
    for i, res in zip(todo, cut_ranges(jobs, clips_dir, workers=workers), strict=True):
        if not isinstance(res, Clip):
            reasons[i] = f"cut: {res.code}: {res.message}"
            continue
        paths[i], frames[i] = os.path.abspath(res.path), res.num_frames
        counts["copied" if res.copied else "encoded"] += 1
    df["path"], df["num_frames"] = paths, frames
    return counts


def default_clips(out) -> str:
    stem, _ = os.path.splitext(str(out))
    return f"{stem}_clips"
