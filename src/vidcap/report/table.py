"""What a review page needs from an output table: its kinds of columns, filters, and the row sample.

Works on caption, motion and tag outputs and on tables that merge them: every part is optional.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from ..checks import FLAGS, parse_flags
from ..errors import UsageError, error_code
from ..heal import ECHO

KNOWN = {"path", "text", "flags", "frame_idx", "cmotion", "status", "error", "note", "model", "prompt"}
TAG_KEYS = ("objects", "actions", "tags")


def list_cell(cell) -> list[str] | None:
    """A list-valued cell (Parquet list or our CSV's JSON array string) -> list of str; None otherwise."""
    if cell is None or (isinstance(cell, float) and cell != cell):
        return None
    if hasattr(cell, "tolist") and not isinstance(cell, str):
        cell = cell.tolist()
    if isinstance(cell, str):
        s = cell.strip()
        if not s.startswith("["):
            return None
        try:
            cell = json.loads(s)
        except ValueError:
            return None
    if isinstance(cell, (list, tuple)) and all(isinstance(v, str) for v in cell):
        return list(cell)
    return None


def tag_columns(df: pd.DataFrame) -> list[str]:
    """Columns holding lists of strings (tag outputs: `objects`, `actions`, or any other key)."""
    out = []
    for col in df.columns:
        dtype = df[col].dtype
        if (
            col in KNOWN
            or str(col).startswith("_")
            or not (dtype is np.dtype(object) or pd.api.types.is_string_dtype(dtype))
        ):
            continue
        sample = [v for v in df[col].head(200) if v is not None and not (isinstance(v, float) and v != v)]
        if sample and sum(list_cell(v) is not None for v in sample) >= 0.8 * len(sample):
            out.append(col)
    return sorted(out, key=lambda c: (c not in TAG_KEYS, TAG_KEYS.index(c) if c in TAG_KEYS else 0, c))


def error_columns(df: pd.DataFrame) -> list[str]:
    """`error`, plus `error_input` etc. when a table went through several stages."""
    return [c for c in df.columns if str(c) == "error" or str(c).startswith("error_")]


def row_errors(df: pd.DataFrame) -> pd.Series:
    """Per row, its error texts joined with "; " ("" when none)."""
    cols = error_columns(df)
    cleaned = [[v.strip() if isinstance(v, str) else "" for v in df[c]] for c in cols]
    if not cleaned:
        return pd.Series([""] * len(df), index=df.index, dtype=object)
    joined = ["; ".join(dict.fromkeys(e for e in vals if e)) for vals in zip(*cleaned, strict=False)]
    return pd.Series(joined, index=df.index, dtype=object)


def row_flags(df: pd.DataFrame) -> pd.Series:
    if "flags" not in df.columns:
        return pd.Series([[] for _ in range(len(df))], index=df.index, dtype=object)
    return df["flags"].map(parse_flags)


def parse_filter(text: str | None) -> tuple[str, str] | None:
    """`flag=repetition` -> ("flag", "repetition")."""
    if text is None or not str(text).strip():
        return None
    key, sep, value = str(text).partition("=")
    if not sep or not key.strip() or not value.strip():
        raise UsageError(f"--filter '{text}' is not KEY=VALUE, e.g. flag=repetition, error=decode or cmotion=pan_left.")
    return key.strip(), value.strip()


def filter_mask(df: pd.DataFrame, key: str, value: str) -> pd.Series:
    """Rows matching KEY=VALUE: flag, error (code or `any`), status, cmotion (a label part), a tag, or a column."""
    v = value.casefold()
    if key in ("flag", "flags"):
        flags = row_flags(df)
        known = list(dict.fromkeys([*FLAGS, ECHO, *(f for fs in flags for f in fs)]))
        if v != "any" and v not in {f.casefold() for f in known}:
            raise UsageError(f"--filter flag={value} is not a flag vidcap sets; use one of: any, {', '.join(known)}.")
        return flags.map(lambda fs: bool(fs) if v == "any" else v in {f.casefold() for f in fs})
    if key == "error":
        errs = row_errors(df)
        if v == "any":
            return errs != ""
        return errs.map(lambda e: v in {error_code(p).casefold() for p in e.split("; ") if p})
    if key not in df.columns:
        first = [k for k in ("flag", "error", "status", "cmotion") if k in ("flag", "error") or k in df.columns]
        rest = [str(c) for c in df.columns if not str(c).startswith("_") and str(c) not in first]
        more = f" (and {len(rest) - 12} more columns)" if len(rest) > 12 else ""
        raise UsageError(
            f"--filter key '{key}' is not in this table; use one of: {', '.join(first + rest[:12])}{more}."
        )
    col = df[key]
    if key in tag_columns(df):
        return col.map(lambda c: v in {t.casefold() for t in (list_cell(c) or [])})
    if key == "cmotion":
        return col.map(lambda c: isinstance(c, str) and (c.casefold() == v or v in c.casefold().split("+")))
    return col.map(lambda c: str(c).casefold() == v)


def choose_rows(errors: pd.Series, flagged: pd.Series, n: int, seed: int = 0) -> list[int]:
    """Up to n row positions, in table order; errors and flagged rows get up to a quarter each first."""
    total = len(errors)
    if n <= 0 or total <= n:
        return list(range(min(total, n if n > 0 else total)))
    rng = np.random.default_rng(seed)
    err = np.flatnonzero(errors.to_numpy())
    flg = np.setdiff1d(np.flatnonzero(flagged.to_numpy()), err)
    chosen: list[int] = []
    for group in (err, flg):
        cap = min(len(group), n // 4)
        chosen.extend(rng.choice(group, cap, replace=False).tolist() if cap else [])
    rest = np.setdiff1d(np.arange(total), np.asarray(chosen, dtype=int))
    normal = np.setdiff1d(rest, np.union1d(err, flg))
    need = n - len(chosen)
    take = rng.choice(normal, min(need, len(normal)), replace=False).tolist() if len(normal) else []
    chosen.extend(take)
    if len(chosen) < n:  # not enough clean rows: fill with more of the problem rows
        left = np.setdiff1d(rest, np.asarray(take, dtype=int))
        chosen.extend(rng.choice(left, min(n - len(chosen), len(left)), replace=False).tolist())
    return sorted(int(i) for i in chosen)
