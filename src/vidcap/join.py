"""`vidcap join`: stage outputs (caption, motion, tags, ...) as one table, one row per clip.

Rows match on the resolved path (as runs resolve it: against each table's own folder) and, for range rows
(`start_time`/`end_time`: scenes, windows), their range, or on a key column the user names. A clip listed twice in a table matches the same occurrence in the others. Columns keep
their names; a column that two inputs both have with different values is kept from the first and
suffixed with the input's name from the second (`status_videos_cmotion`); identical columns appear once.

Each stage output's `status` and `error` appear under the stage's own name (`caption_status`,
`motion_status`, `<key>_status` for a tag output such as `objects_status`, and the same with `_error`),
and the joined table has one `status` (ok when every stage is ok) and one `error` (each failing stage's,
named: `caption: missing ...; motion: ...`), nothing else, so the table says which stage failed a row and
Open-Sora's `--intersection`, which keeps the first table's column of a name, cannot drop one stage's
status for another's.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from . import tables as tbl
from .errors import UsageError
from .manifest import resolved_paths, with_ranges

KEY = "_vidcap_join_key"
RESOLVED = "_vidcap_join_file"  # the resolved path without a range part
_NTH = "_vidcap_join_nth"
_ORD = "_vidcap_join_order"


def stage_name(table, df: pd.DataFrame) -> str | None:
    """`caption`, `motion` or a tag output's key: from the run's sidecar (`<table>.run.json`) or Parquet
    metadata, else from the columns only that stage writes; None for a table no stage wrote."""
    fp = tbl.fingerprint(table)
    stage = fp.get("stage")
    if stage == "tag" and fp.get("key"):
        return str(fp["key"])
    if stage in ("caption", "motion"):
        return str(stage)
    if "status" not in df.columns:
        return None
    # a table holding both (a join, or a chain whose sidecar is gone) cannot say whose `status` it is
    if "motion_confidence" in df.columns and "frame_idx" not in df.columns:
        return "motion"
    if "frame_idx" in df.columns and "text" in df.columns and "cmotion" not in df.columns:
        return "caption"
    return None


def with_stage_status(df: pd.DataFrame, table) -> pd.DataFrame:
    """`status`/`error` copied to `<stage>_status`/`<stage>_error` (names the table already has are left)."""
    stage = stage_name(table, df)
    if stage is None or "status" not in df.columns:
        return df
    for col in ("status", "error"):
        name = f"{stage}_{col}"
        if col in df.columns and name not in df.columns:
            df[name] = df[col]
    return df


def _keyed(table, on: str | None) -> pd.DataFrame:
    df = with_stage_status(tbl.read(table), table)
    col = on or "path"
    if col not in df.columns:
        raise UsageError(f"{table} has no '{col}' column to join on; pass --on with a column every input has.")
    if on:
        df[KEY] = [str(v) for v in df[col]]
    else:  # the clip's key (path and range) to match on, and the file itself (export cuts ranges from it)
        df[RESOLVED] = resolved_paths(df, table)
        df[KEY] = with_ranges(list(df[RESOLVED]), df)
    df[_NTH] = df.groupby(KEY).cumcount()
    return df


def _label(table) -> str:
    name = str(table).rstrip("/").rsplit("/", 1)[-1]
    return Path(name).stem or name


def join_tables(tables: list, out, on: str | None = None) -> dict:
    """Outer join of `tables` into `out`; returns counts: rows, and rows missing from some input."""
    if len(tables) < 2:
        raise UsageError("join needs at least two tables.")
    joined, partial = joined_frame(tables, on)
    joined = one_status(joined.drop(columns=[KEY, RESOLVED], errors="ignore"), [_label(t) for t in tables])
    tbl.write(joined, out)
    return {"rows": len(joined), "partial": partial}


def one_status(joined: pd.DataFrame, labels: list[str]) -> pd.DataFrame:
    """One `status` (ok when every stage is ok) and one `error` (each failing stage's, named), beside each
    stage's `<stage>_status` / `<stage>_error`; the inputs' other status and error columns go (a tag output's
    `status_input` repeats its caption's, `status_<table>` another table's)."""
    stages = [c[: -len("_status")] for c in joined.columns if c.endswith("_status") and f"{c[:-7]}_error" in joined]
    if not stages:
        return joined
    names = "|".join(["input", *map(re.escape, labels)])
    extra = re.compile(rf"(status|error)(_({names}))+(_\d+)?")
    drop = [c for c in joined.columns if c in ("status", "error") or extra.fullmatch(str(c))]
    state = joined[[f"{s}_status" for s in stages]].astype("string")
    errors = joined[[f"{s}_error" for s in stages]].astype("string").fillna("")
    missing = state.isna()
    ok = (state == "ok").fillna(False).all(axis=1)
    detail = [
        "; ".join(
            f"{stage}: {err or ('no row' if gone else st)}"
            for stage, st, err, gone in zip(stages, row_state, row_err, row_missing, strict=True)
            if gone or st != "ok"
        )
        for row_state, row_err, row_missing in zip(
            state.itertuples(index=False), errors.itertuples(index=False), missing.itertuples(index=False), strict=True
        )
    ]
    joined = joined.drop(columns=drop)
    joined["status"] = ["ok" if good else "failed" for good in ok]
    joined["error"] = ["" if good else d for good, d in zip(ok, detail, strict=True)]
    return joined


def joined_frame(tables: list, on: str | None = None) -> tuple[pd.DataFrame, int]:
    """The outer join of `tables` with the match key (the resolved path without `on`) in column KEY, and
    the number of rows missing from some input."""
    joined = _keyed(tables[0], on)
    present = pd.DataFrame({KEY: joined[KEY], _NTH: joined[_NTH], "n": 1})
    for table in tables[1:]:
        df = _keyed(table, on)
        suffix = _label(table)
        common = [c for c in df.columns if c in joined.columns and c not in (KEY, _NTH)]
        # both tables' shared columns on the rows both have, aligned once
        both = joined[[KEY, _NTH]].merge(df[[KEY, _NTH]], on=[KEY, _NTH], how="inner")
        left = both.merge(joined[[KEY, _NTH, *common]], on=[KEY, _NTH], how="left")
        right = both.merge(df[[KEY, _NTH, *common]], on=[KEY, _NTH], how="left")
        rename = {}
        for col in common:
            if (col == "path" and on is None) or tbl.same_cells(left[col], right[col]):  # the key: one column
                continue  # the same values where both have the row: one column
            name, k = f"{col}_{suffix}", 2
            while name in joined.columns or name in df.columns:
                name, k = f"{col}_{suffix}_{k}", k + 1
            rename[col] = name
        df = df.rename(columns=rename)
        shared = [c for c in df.columns if c in joined.columns and c not in (KEY, _NTH)]
        # an outer merge sorts its keys: keep the first table's row order, rows new to this table after
        joined[_ORD] = range(len(joined))
        df[_ORD + "new"] = range(len(df))
        joined = joined.merge(df, on=[KEY, _NTH], how="outer", suffixes=("", "\0dup"), sort=False)
        joined = joined.sort_values([_ORD, _ORD + "new"], na_position="last", kind="stable")
        joined = joined.drop(columns=[_ORD, _ORD + "new"]).reset_index(drop=True)
        for col in shared:  # identical where both have the row: fill the rows only the new table has
            mine, theirs = tbl.common_dtype(joined[col], joined[col + "\0dup"])
            joined[col] = mine.where(mine.notna(), theirs)
            joined = joined.drop(columns=col + "\0dup")
        present = pd.concat([present, df[[KEY, _NTH]].assign(n=1)])
    counts = present.groupby([KEY, _NTH])["n"].sum()
    partial = int((counts < len(tables)).sum())
    return joined.drop(columns=[_NTH]), partial


def describe(tables: list, counts: dict, out) -> str:
    msg = f"wrote {counts['rows']} rows joined from {len(tables)} tables to {out}"
    if counts["partial"]:
        msg += f"; {counts['partial']} rows are missing from some of the inputs (their columns there are empty)"
    return msg + "."
