"""Table commands that stream: `vidcap merge`, `vidcap diff`, and the rows a run's cost estimate reads. Each reads
its tables through `vidcap.tables` in batches; memory holds a batch and a set of paths, not a table."""

from __future__ import annotations

import pandas as pd

from .errors import UsageError
from .manifest import ABSPATH, RANGE_COLUMNS, resolved_paths, with_ranges
from .tables import as_text, batches, columns, count_rows, schema, stream_rows, unified_schema, write_batches

SAMPLE_ROWS = 100_000  # rows the cost estimate takes its typical frame size from
ESTIMATE_COLUMNS = ("path", "width", "height")  # what it reads of them


# -- merge and diff (streamed) -------------------------------------------------------------------------------
def merge(parts: list, out, dedup: bool = True) -> tuple[int, int]:
    """Concatenate tables (the seed's `datautil` merge); later parts win on duplicate clips (paths, and ranges
    for range rows). Two passes over the parts, so memory holds one batch and the set of clip keys. Returns
    (rows written, rows dropped)."""
    schemas = [schema(p) for p in parts]
    target = unified_schema(schemas)
    has_path = dedup and "path" in target.names
    last: dict = {}
    total = 0
    for i, p in enumerate(parts):
        if not has_path or "path" not in schemas[i].names:
            total += count_rows(p)
            continue
        n = 0
        for b in batches(p, _key_columns(p)):
            for j, v in enumerate(_clip_keys(b)):
                last[v] = (i, n + j)
            n += len(b)
        total += n
    offsets = [0] * len(parts)

    def keep(i: int, b: pd.DataFrame) -> pd.Series:
        start = offsets[i]
        offsets[i] += len(b)
        if not has_path or "path" not in b.columns:
            return pd.Series(True, index=b.index)
        return pd.Series([last[v] == (i, start + j) for j, v in enumerate(_clip_keys(b))], index=b.index)

    written = write_batches(stream_rows(parts, keep), out, target)
    return written, total - written


def _key_columns(table) -> list[str]:
    """What a clip key reads of a table: `path`, and the range columns where it has them."""
    names = columns(table)
    return ["path"] + [c for c in RANGE_COLUMNS if c in names]


def _clip_keys(batch: pd.DataFrame) -> list[str]:
    return with_ranges(list(as_text(batch["path"])), batch)


def diff(a, b, out) -> int:
    """Rows of A whose clip (resolved path, and range for range rows) is not in B (the seed's `--difference`,
    to find what is left)."""
    for name in (a, b):
        if "path" not in columns(name):
            raise UsageError(f"{name} has no 'path' column; diff compares paths.")
    seen = {k for batch in batches(b, _key_columns(b)) for k in with_ranges(resolved_paths(batch, b), batch)}

    def keep(_: int, batch: pd.DataFrame) -> pd.Series:
        return pd.Series([k not in seen for k in with_ranges(resolved_paths(batch, a), batch)], index=batch.index)

    return write_batches(stream_rows([a], keep), out, unified_schema([schema(a)]))


# -- what a run's cost estimate reads ------------------------------------------------------------------------
def selected_sample(path, shard: tuple[int, int] | None = None, limit: int | None = None, rows: int = SAMPLE_ROWS):
    """(rows a run over this manifest selects after --shard and --limit, the first `rows` of them), counted
    and read by streaming: what the cost estimate needs, without the whole manifest in memory. The sample
    has `ABSPATH` (paths resolved against the manifest's folder) as a run's rows do."""
    i, n = shard or (0, 1)
    total, start, have = 0, 0, 0
    kept: list[pd.DataFrame] = []
    wanted = [c for c in ESTIMATE_COLUMNS if c in columns(path)] or None
    for batch in batches(path, wanted):
        picked = batch[[(start + j) % n == i for j in range(len(batch))]]
        start += len(batch)
        total += len(picked)
        if have < rows:
            kept.append(picked)
            have += len(picked)
    if limit is not None:
        total = min(total, max(0, limit))
    sample = pd.concat(kept, ignore_index=True).head(min(rows, total)) if kept else pd.DataFrame()
    if "path" in sample.columns:
        sample[ABSPATH] = resolved_paths(sample, path)
    return total, sample
