"""`vidcap export --to opensora`: one CSV that Open-Sora v1.2.0's `tools.datasets.datautil` and its training
loader (`VariableVideoTextDataset` + the bucket sampler) take with no further pass.

What their code needs, and what this module guarantees for every row it writes:
- `text` is a non-empty str: `--refine-llm-caption` calls `caption.startswith`, `--remove-url` and
  `--lang` filter with `~str.contains(...)`/a detector before any empty-caption filter, and
  `--clean-caption` writes `str(nan)` as the caption `nan`. A caption that is only one of their stock
  openings ("The video shows") is left out too: `remove_caption_prefix` indexes its first character.
- `num_frames`, `height`, `width` are integers above 0 (the bucket builder compares them, a NaN or NA
  breaks it; a failed row made them floats on every pandas round trip), `fps` a float.
- `aspect_ratio = height / width` and `resolution = height * width`, as `--info` computes them.
- `path` is absolute: `--ext`, the loader and every tool resolve paths against their working directory.
- `cmotion` is one of the seven keys `--merge-cmotion` knows (see `opensora_cmotion` for the rule).
- tag columns hold Open-Sora's cell (`dog, person`, `NONE_FOUND` for none); other list cells are JSON.
- the file is CSV (`--difference`/`--intersection` read CSV only); every row is ok, so no status/error
  columns with the same name in several stages are left for `--intersection` to drop silently.
Rows that cannot meet this go to a side file with the reason in `export_error`.
"""

from __future__ import annotations

import io
import json
import math
import os
import re

import pandas as pd

from . import export_media, export_ranges
from . import tables as tbl
from .checks import LLAVA_PREFIX
from .errors import UsageError
from .join import KEY, RESOLVED, joined_frame, stage_name, with_stage_status
from .manifest import resolved_paths, table_bytes, table_format
from .tags.parse import tags_from_cell

# Open-Sora v1.2.0 datautil.CMOTION_TEXT's keys: the only labels --merge-cmotion accepts.
CMOTION_KEYS = ("static", "pan_right", "pan_left", "zoom_in", "zoom_out", "tilt_up", "tilt_down")
SIZES = ("num_frames", "height", "width")
COUNTS = ("prompt_tokens", "completion_tokens")  # whole numbers that failed rows' NaN turned into floats
FIRST = ("path", "text", "num_frames", "fps", "height", "width", "aspect_ratio", "resolution", "cmotion")
NONE_FOUND = "NONE_FOUND"  # Open-Sora's tag cell for "no tags"
UNCLASSIFIED_RULES = ("drop", "static")
ROTATED_RULES = ("drop", "keep")
# pandas.read_csv's default na_values (pandas 2.2, as Open-Sora's tools read the table): a caption that is
# one of these reads back as NaN
_CJK = re.compile("[\u31c0-\u9fff]+")  # the ranges clean_caption deletes (CJK strokes to unified ideographs)
_DIGIT_TOKEN = re.compile(r"\S*\d\S*")
_WORD = re.compile(r"[^\W\d_]{2,}")
PANDAS_NA = frozenset(
    ("", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>", "N/A")
    + ("NA", "NULL", "NaN", "None", "n/a", "nan", "null")
)


def export_opensora(
    inputs: list,
    out,
    excluded=None,
    unclassified: str = "drop",
    rotated: str = "drop",
    *,
    text_column: str | None = None,
    clips=None,
    workers: int = 1,
) -> dict:
    """Write the Open-Sora table to `out` and the rows left out to `excluded` (default
    `<out stem>_excluded.csv`). Returns counts: rows, excluded, and excluded rows by reason.
    rotated: "drop" leaves out a clip whose display rotation differs from its stored frames; "keep" exports
    it with the stored size (what the loader decodes) and a note in `export_note`.
    text_column: the column (or JSON field, COLUMN.FIELD) that becomes `text` (export_ranges.pick_text).
    clips: where range rows are cut into clip files (default `<out stem>_clips/`); workers: cutting processes."""
    if not inputs:
        raise UsageError("export needs at least one table (a caption output, or its join with motion and tags).")
    if table_format(out) != "csv":
        raise UsageError(
            f"{out}: Open-Sora's --difference and --intersection read CSV only; write the export to a .csv file."
        )
    if unclassified not in UNCLASSIFIED_RULES:
        raise UsageError(f"--unclassified must be drop or static, not '{unclassified}'.")
    if rotated not in ROTATED_RULES:
        raise UsageError(f"--rotated must be drop or keep, not '{rotated}'.")
    df, tag_cols = _one_table(inputs)
    df = export_ranges.pick_text(df, text_column)
    missing = [c for c in ("text", *SIZES) if c not in df.columns]
    if missing:
        raise UsageError(
            f"the inputs have no '{missing[0]}' column; export needs a `vidcap caption` output among them "
            "(captions and frame sizes), joined with motion and tag outputs if you have them."
        )
    reasons = pd.Series([_row_problem(row, unclassified) for row in df.to_dict("records")], index=df.index)
    cut = {}
    if export_ranges.has_ranges(df):  # Open-Sora reads whole files: each range becomes its own clip
        cut = export_ranges.cut_rows(df, reasons, clips or export_ranges.default_clips(out), workers)
    views = _file_problems(df, reasons, rotated)
    good = _train_columns(df[reasons.isna()].copy(), tag_cols, views)
    unread = _read_back_problems(good)
    reasons[unread.index] = unread
    good = good.drop(index=unread.index)
    left = df[reasons.notna()].assign(export_error=reasons[reasons.notna()])
    excluded = excluded or default_excluded(out)
    tbl.write(good, out)
    tbl.write(left, excluded)
    by_reason = left["export_error"].str.split(":", n=1).str[0].value_counts().to_dict() if len(left) else {}
    counts = {"rows": len(good), "excluded": len(left), "reasons": by_reason, "excluded_path": str(excluded)}
    return counts | ({"clips": cut} if cut else {})


def default_excluded(out) -> str:
    text = str(out)
    stem, ext = os.path.splitext(text)
    return f"{stem}_excluded{ext}"


def _one_table(inputs: list) -> tuple[pd.DataFrame, list[str]]:
    """The inputs side by side (one of them as it is) with `path` resolved absolute, and the tag columns."""
    tag_cols: list[str] = []
    for table in inputs:
        head = pd.DataFrame(columns=tbl.columns(table))
        name = stage_name(table, head)
        if name not in (None, "caption", "motion") and name in head.columns:
            tag_cols.append(name)
    if len(inputs) == 1:
        df = with_stage_status(tbl.read(inputs[0]), inputs[0])
        if "path" not in df.columns:
            raise UsageError(f"{inputs[0]} has no 'path' column; export needs one video path per row.")
        df["path"] = resolved_paths(df, inputs[0])
    else:
        df, _ = joined_frame(inputs)
        df["path"] = df.pop(RESOLVED)  # the file, absolute; KEY also holds a range row's `#t=` part
        df = df.drop(columns=[KEY])
    tag_cols += [c for c in ("objects", "actions") if c in df.columns and c not in tag_cols]
    return df.reset_index(drop=True), tag_cols


def _file_problems(df: pd.DataFrame, reasons: pd.Series, rotated: str) -> dict:
    """Rows whose file Open-Sora's loader cannot take as it is (its extension, a second row of one file,
    unreadable, turned for display) get their reason; returns how the loader sees each file left."""
    first: dict[str, int] = {}
    todo = []
    for i in df.index[reasons.isna()]:
        path = str(df.at[i, "path"])
        if export_media.kind(path) is None:
            reasons[i] = export_media.unsupported(path)
            continue
        key = path if "://" in path else os.path.realpath(path)
        if key in first:
            reasons[i] = f"duplicate: the same file as row {first[key] + 1} of the inputs ({key}), which is exported"
            continue
        first[key] = i
        todo.append(i)
    views = dict(zip(todo, export_media.views([str(df.at[i, "path"]) for i in todo]), strict=False))
    for i, v in views.items():
        if v.error or v.height <= 0 or v.width <= 0:
            reasons[i] = f"unreadable: Open-Sora's reader cannot decode it ({v.error or 'no frame'})"
        elif v.turned and rotated == "drop":
            reasons[i] = (
                f"rotated: shown turned ({v.turned}) but Open-Sora's --info and loader read the stored "
                f"{v.width}x{v.height} frames; `--rotated keep` exports it as stored"
            )
    return {i: v for i, v in views.items() if pd.isna(reasons[i])}


def _read_back_problems(good: pd.DataFrame) -> pd.Series:
    """Rows whose caption `pandas.read_csv` (default settings, as Open-Sora reads) would not give back as
    the same string, with the reason."""
    if good.empty:
        return pd.Series(dtype=object)
    back = pd.read_csv(io.BytesIO(table_bytes(good, "csv")), usecols=["text"])["text"]
    bad = {
        i: f"na_text: pandas.read_csv reads the caption {a!r} back as {b!r}"
        for i, a, b in zip(good.index, good["text"], back, strict=False)
        if not (isinstance(b, str) and a == b)
    }
    return pd.Series(bad, dtype=object)


def _status_columns(row: dict) -> list[str]:
    """Every stage's status in the row, the ones named after their stage (`caption_status`) first, then
    `status`, `status_input[_N]` (a chained stage's) and `status_<table>` (join's)."""
    named = [c for c in row if isinstance(c, str) and c.endswith("_status")]
    plain = [c for c in row if isinstance(c, str) and (c == "status" or c.startswith("status_"))]
    return named + [c for c in plain if c not in named]


def _row_problem(row: dict, unclassified: str) -> str | None:
    """Why the row cannot go to Open-Sora as it is (one `code: sentence`), or None."""
    for col in _status_columns(row):
        value = row[col]
        if _missing(value):
            return f"missing: the row is not in every input (its '{col}' is empty)"
        if value != "ok":
            err = row.get(col.replace("status", "error"), "")
            return f"failed: {col} is {value}" + (f" ({err})" if not _missing(err) and err else "")
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        return "empty_text: the caption is empty" + (f" (only whitespace: {text!r})" if text else "")
    if text in PANDAS_NA:
        return f"na_text: the caption {text!r} is one of pandas.read_csv's NA tokens; Open-Sora would read NaN"
    if not has_words(text):
        return (
            f"no_words: the caption {text[:60]!r} has no word of letters; Open-Sora's --clean-caption would empty "
            "it (its NaN then reaches the next tool)"
        )
    stripped = _strip_stock_opening(text)
    if stripped is not None and not stripped.strip():
        return f"empty_text: the caption is only the stock opening '{text.strip()}'"
    for col in SIZES:
        if _as_int(row.get(col)) is None:
            return f"no_size: {col} is {row.get(col)!r}, not a whole number above 0"
    if not str(row.get("path") or "").strip():
        return "empty_path: the row has no path"
    cm = row.get("cmotion", "static") if "cmotion" in row else "static"
    if opensora_cmotion(cm, row) is None and unclassified == "drop":
        note = row.get("note")
        why = f" ({note})" if isinstance(note, str) and note else ""
        return (
            f"unclassified: camera motion {cm!r}{why} has no --merge-cmotion key; "
            "`--unclassified static` keeps such rows labelled static"
        )
    return None


def has_words(text: str) -> bool:
    """A word of two letters or more is left once what Open-Sora's `--clean-caption` deletes outright is gone:
    CJK characters and tokens holding a digit (`1e3`, `007`, `jc6640`, `640x480`)."""
    kept = _DIGIT_TOKEN.sub(" ", _CJK.sub(" ", text))
    return _WORD.search(kept) is not None


def _strip_stock_opening(text: str) -> str | None:
    for prefix in LLAVA_PREFIX:  # Open-Sora's remove_caption_prefix, which then reads caption[0]
        if text.startswith((prefix, prefix.lower())):
            return text[len(prefix) :].strip()
    return None


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def _as_int(value) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(number) or number != int(number) or number <= 0:
        return None
    return int(number)


def opensora_cmotion(label, row: dict | None = None) -> str | None:
    """One of the seven --merge-cmotion keys for vidcap's label, or None for `unclassified`/empty/unknown.

    A single label passes as it is. A combined label (`pan_left+zoom_in`) becomes the component that moved
    the frame's pixels most: pan by |motion_dx|, tilt by |motion_dy| (fractions of the frame), zoom by how
    far it moved the frame's edge, (max(z, 1/z) - 1) / 2; with those numbers absent, the first component
    (pan, then tilt, then zoom). The full label stays in `cmotion_vidcap`.
    """
    if _missing(label):
        return None
    parts = [p.strip().lower() for p in str(label).split("+") if p.strip()]
    if not parts or any(p not in CMOTION_KEYS for p in parts):
        return None
    if len(parts) == 1:
        return parts[0]
    row = row or {}

    def moved(part: str) -> float:
        try:
            if part.startswith("pan"):
                return abs(float(row["motion_dx"]))
            if part.startswith("tilt"):
                return abs(float(row["motion_dy"]))
            zoom = float(row["motion_zoom"])
            return (max(zoom, 1 / zoom) - 1) / 2
        except (KeyError, TypeError, ValueError, ZeroDivisionError):
            return -1.0

    amounts = [moved(p) for p in parts]
    best = max(amounts)
    if not math.isfinite(best) or best < 0:
        return parts[0]
    return parts[amounts.index(best)]


def tag_cell(value) -> str:
    """Open-Sora's tag cell: the tags joined by ', ' as its Llama-3 script wrote the list, or NONE_FOUND."""
    tags = tags_from_cell(value)
    return ", ".join(tags) if tags else NONE_FOUND


def _json_cell(value):
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value), ensure_ascii=False)
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
        return json.dumps(value, ensure_ascii=False) if isinstance(value, list) else value
    return value


def _train_columns(df: pd.DataFrame, tag_cols: list[str], views: dict) -> pd.DataFrame:
    for col in SIZES:
        df[col] = [_as_int(v) for v in df[col]]
        df[col] = df[col].astype("int64")
    seen = [views[i] for i in df.index]  # sizes and fps as Open-Sora's --info and loader read the file
    df["height"] = pd.Series([v.height for v in seen], index=df.index, dtype="int64")
    df["width"] = pd.Series([v.width for v in seen], index=df.index, dtype="int64")
    df["fps"] = pd.Series([v.fps for v in seen], index=df.index, dtype="float64")
    turned = [v.turned for v in seen]
    if any(turned):
        df["export_note"] = [
            f"rotated: shown turned ({t}); exported as stored, which Open-Sora trains on" if t else "" for t in turned
        ]
    for col in COUNTS:
        if col in df.columns and df[col].notna().all() and (pd.to_numeric(df[col], errors="coerce") % 1 == 0).all():
            df[col] = pd.to_numeric(df[col]).astype("int64")
    df["aspect_ratio"] = df["height"] / df["width"]
    df["resolution"] = (df["height"] * df["width"]).astype("int64")
    df["text"] = df["text"].astype(object)
    if "cmotion" in df.columns:
        rows = df.to_dict("records")
        df["cmotion_vidcap"] = df["cmotion"]
        df["cmotion"] = [opensora_cmotion(r["cmotion"], r) or "static" for r in rows]
    for col in tag_cols:
        df[col] = [tag_cell(v) for v in df[col]]
    for col in df.columns:
        if df[col].dtype == object:
            df[col] = df[col].map(_json_cell)
    drop = [c for c in df.columns if c == "error" or c.startswith("error_") or c.endswith("_error")]
    drop += [c for c in df.columns if c == "status" or c.startswith("status_")]
    df = df.drop(columns=drop)
    return df[[c for c in FIRST if c in df.columns] + [c for c in df.columns if c not in FIRST]]


def describe(counts: dict, out) -> str:
    msg = f"wrote {counts['rows']} rows for Open-Sora to {out}"
    if counts.get("clips"):
        c = counts["clips"]
        msg += f" ({c['copied'] + c['encoded']} ranges cut into clips: {c['copied']} copied, {c['encoded']} re-encoded)"
    if counts["excluded"]:
        why = ", ".join(f"{k}: {v}" for k, v in sorted(counts["reasons"].items()))
        msg += f"; {counts['excluded']} rows left out ({why}) to {counts['excluded_path']} with their reasons"
    return msg + "."
