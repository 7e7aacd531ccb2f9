"""`vidcap join`: stage outputs (caption, motion, tags, ...) as one table, one row per clip.

Rows match on the resolved path (as runs resolve it: against each table's own folder), or on a key column
the user names. A clip listed twice in a table matches the same occurrence in the others. Columns keep
their names; a column that two inputs both have with different values is kept from the first and
suffixed with the input's name from the second (`status_videos_cmotion`); identical columns appear once.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .errors import UsageError
from .manifest import read_table, resolved_paths, write_table

_KEY = "_vidcap_join_key"
_NTH = "_vidcap_join_nth"


def _keyed(table, on: str | None) -> pd.DataFrame:
    df = read_table(table)
    col = on or "path"
    if col not in df.columns:
        raise UsageError(f"{table} has no '{col}' column to join on; pass --on with a column every input has.")
    keys = [str(v) for v in df[col]] if on else resolved_paths(df, table)
    df[_KEY] = keys
    df[_NTH] = df.groupby(_KEY).cumcount()
    return df


def _label(table) -> str:
    name = str(table).rstrip("/").rsplit("/", 1)[-1]
    return Path(name).stem or name


def join_tables(tables: list, out, on: str | None = None) -> dict:
    """Outer join of `tables` into `out`; returns counts: rows, and rows missing from some input."""
    if len(tables) < 2:
        raise UsageError("join needs at least two tables.")
    joined = _keyed(tables[0], on)
    present = pd.DataFrame({_KEY: joined[_KEY], _NTH: joined[_NTH], "n": 1})
    for table in tables[1:]:
        df = _keyed(table, on)
        suffix = _label(table)
        common = [c for c in df.columns if c in joined.columns and c not in (_KEY, _NTH)]
        # both tables' shared columns on the rows both have, aligned once
        both = joined[[_KEY, _NTH]].merge(df[[_KEY, _NTH]], on=[_KEY, _NTH], how="inner")
        left = both.merge(joined[[_KEY, _NTH, *common]], on=[_KEY, _NTH], how="left")
        right = both.merge(df[[_KEY, _NTH, *common]], on=[_KEY, _NTH], how="left")
        rename = {}
        for col in common:
            if (col == "path" and on is None) or _same(left[col], right[col]):  # the key: one column
                continue  # the same values where both have the row: one column
            name, k = f"{col}_{suffix}", 2
            while name in joined.columns or name in df.columns:
                name, k = f"{col}_{suffix}_{k}", k + 1
            rename[col] = name
        df = df.rename(columns=rename)
        shared = [c for c in df.columns if c in joined.columns and c not in (_KEY, _NTH)]
        joined = joined.merge(df, on=[_KEY, _NTH], how="outer", suffixes=("", "\0dup"), sort=False)
        for col in shared:  # identical where both have the row: fill the rows only the new table has
            joined[col] = joined[col].where(joined[col].notna(), joined[col + "\0dup"])
            joined = joined.drop(columns=col + "\0dup")
        present = pd.concat([present, df[[_KEY, _NTH]].assign(n=1)])
    counts = present.groupby([_KEY, _NTH])["n"].sum()
    partial = int((counts < len(tables)).sum())
    joined = joined.drop(columns=[_KEY, _NTH])
    write_table(joined, out)
    return {"rows": len(joined), "partial": partial}


def _same(left: pd.Series, right: pd.Series) -> bool:
    return bool(((left == right) | (left.isna() & right.isna())).all()) or (
        left.astype(str).tolist() == right.astype(str).tolist()
    )


def describe(tables: list, counts: dict, out) -> str:
    msg = f"wrote {counts['rows']} rows joined from {len(tables)} tables to {out}"
    if counts["partial"]:
        msg += f"; {counts['partial']} rows are missing from some of the inputs (their columns there are empty)"
    return msg + "."
