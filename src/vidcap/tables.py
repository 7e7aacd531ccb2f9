"""One table contract: how every command reads and writes a table (CSV, Parquet, a dataset folder, fsspec URLs).

- A CSV cell is text, exactly as written (`007`, `NA`, `1e3` stay strings; only an empty cell is missing),
  unless vidcap wrote the column: then it has the type vidcap declares for it (`DTYPES`: nullable integers
  for sizes and token counts, floats for fps and motion). vidcap wrote a CSV's column when the table's run
  settings (`<table>.run.json`, see `fingerprint`) list it among the stage's columns, or it is a run column.
- Parquet (a file or a dataset folder) keeps its types: an integer column with gaps stays a nullable
  integer (pandas `Int64`), never float.
- Tables are read in batches (`batches`); `read` is their concatenation, for the commands that need every
  row at once (join, export, report).

The run's manifest reading can use the same contract: `batches(path)` / `read(path)` give its cells, and
`manifest.read_manifest` adds the resolved paths on top.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import dataset
from .errors import FatalRunError, UsageError, first_line
from .knobs import knob
from .manifest import (
    BLANK_TEXT,
    RANGE_COLUMNS,
    TIME_TEXT,
    csv_ready,
    encodable,
    is_relative,
    resolve_path,
    table_format,
    write_table,
)
from .storage import as_path, atomic_local, file_stamp, get_file, is_remote, open_binary, put_file

BATCH_ROWS = 16_384  # rows a batch holds: ~16 MB of 1 kB captions
# vidcap's own columns and their types (the caption stage's Int64 columns, parts.FILE_DTYPES, motion's floats)
DTYPES: dict[str, str] = {
    **dict.fromkeys(("num_frames", "width", "height", "prompt_tokens", "completion_tokens", "file_size"), "Int64"),
    **dict.fromkeys(
        ("fps", "motion_dx", "motion_dy", "motion_zoom", "motion_confidence", "motion_score", "file_mtime"), "float64"
    ),
    **dict.fromkeys(("near_dup_cluster", "near_dup_size"), "Int64"),
}
# columns every run writes beside its stage's own (file identity, run-level near-duplicate results)
RUN_COLUMNS = ("file_size", "file_mtime", "near_dup_cluster", "near_dup_size")
_ARROW = {"Int64": pa.int64(), "float64": pa.float64()}


# -- what vidcap wrote ---------------------------------------------------------------------------------------
def fingerprint(path) -> dict:
    """The settings of the run that wrote the table (its `<table>.run.json`, Parquet metadata or dataset
    marker), or {} for a table vidcap did not write or cannot say."""
    if is_remote(path):
        return {}
    text = str(path).rstrip("/")
    try:
        sidecar = Path(text + ".run.json")
        if sidecar.is_file():
            return dict(json.loads(sidecar.read_text(encoding="utf-8")).get("fingerprint") or {})
        if text.lower().endswith((".parquet", ".pq")) and Path(text).is_file():
            meta = pq.read_schema(text).metadata or {}
            if b"vidcap" in meta:
                return dict(json.loads(meta[b"vidcap"]).get("fingerprint") or {})
        if Path(text).is_dir():  # a dataset folder: its marker holds the run's settings
            return dict((dataset.marker(text) or {}).get("fingerprint") or {})
    except (OSError, ValueError, AttributeError, pa.ArrowException):  # unreadable: the columns decide
        pass
    return {}


def declared(path, names: Iterable[str]) -> dict[str, str]:
    """The columns of `names` that vidcap wrote into this CSV, with their declared dtypes."""
    settings = fingerprint(path)
    wrote = set(settings.get("columns") or ()) | set(RUN_COLUMNS) if settings else set()
    return {c: DTYPES[c] for c in names if c in wrote and c in DTYPES}


# -- reading -------------------------------------------------------------------------------------------------
def columns(path) -> list[str]:
    """The table's column names, from its header or schema alone."""
    return [f.name for f in schema(path)]


def schema(path) -> pa.Schema:
    """The Arrow schema the table is read with under the contract (CSV: strings and declared types)."""
    path, fmt = _checked(path)
    if fmt == "dataset":
        return pq.read_schema(dataset.files(path)[0])
    with _guard(path, fmt), open_binary(path) as fh:
        if fmt == "parquet":
            return pq.read_schema(fh)
        names = list(pd.read_csv(fh, nrows=0, encoding="utf-8").columns)
    types = declared(path, names)
    return pa.schema([(n, _ARROW.get(types.get(n, ""), pa.string())) for n in names])


def batches(path, cols: list[str] | None = None, rows: int = BATCH_ROWS) -> Iterator[pd.DataFrame]:
    """The table in frames of up to `rows` rows, in order, typed by the contract; `cols`: only those."""
    path, fmt = _checked(path)
    if fmt == "dataset":
        for part in dataset.files(path):
            yield from _parquet_batches(part, cols, rows)
        return
    if fmt == "parquet":
        with _guard(path, fmt), open_binary(path) as fh:
            yield from _parquet_batches(fh, cols, rows)
        return
    with _guard(path, fmt), open_binary(path) as fh:
        reader = pd.read_csv(
            fh, encoding="utf-8", dtype=str, keep_default_na=False, na_values=[""], usecols=cols, chunksize=rows
        )
        types: dict[str, str] | None = None
        for chunk in reader:
            types = declared(path, chunk.columns) if types is None else types
            yield _typed(chunk, types)
        if types is None:  # a header and no rows
            names = list(pd.read_csv(open_binary(path), nrows=0, encoding="utf-8", usecols=cols).columns)
            yield _typed(pd.DataFrame({n: pd.Series(dtype=str) for n in names}), declared(path, names))


def record_batches(path, cols: list[str] | None = None, rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The table as Arrow record batches of `schema(path)` (for DuckDB and Arrow readers): Parquet's own
    batches as stored, a CSV's cells as strings with vidcap's declared columns typed."""
    path, fmt = _checked(path)
    if fmt in ("parquet", "dataset"):
        sources = dataset.files(path) if fmt == "dataset" else [path]
        for source in sources:
            with _guard(path, fmt), open_binary(source) as fh:
                yield from pq.ParquetFile(fh).iter_batches(batch_size=rows, columns=cols)
        return
    full = schema(path)
    target = pa.schema([full.field(c) for c in cols]) if cols else full
    for df in batches(path, cols, rows):
        yield from conform(df, target).to_batches()


def read(path, cols: list[str] | None = None) -> pd.DataFrame:
    """The whole table (for the commands that need every row at once)."""
    frames = list(batches(path, cols))
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


def count_rows(path) -> int:
    """Rows in the table: from Parquet metadata, else by streaming the first column."""
    path, fmt = _checked(path)
    if fmt == "dataset":
        return sum(pq.ParquetFile(p).metadata.num_rows for p in dataset.files(path))
    if fmt == "parquet":
        with _guard(path, fmt), open_binary(path) as fh:
            return int(pq.ParquetFile(fh).metadata.num_rows)
    first = columns(path)[:1]
    return sum(len(b) for b in batches(path, first or None, rows=1 << 20))


def _checked(path):
    path = as_path(path)
    fmt = table_format(path)
    if fmt == "dataset":
        dataset.check_local(path)
        return path, fmt
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except Exception as exc:  # noqa: BLE001 (a remote store that cannot be reached or refuses the credentials)
        raise UsageError(f"cannot read {path} ({first_line(exc)}); check the URL and its credentials.") from None
    if not exists:
        raise UsageError(f"{path} does not exist; check the path.")
    if is_dir:
        raise UsageError(f"{path} is a directory; pass a .csv or .parquet file.")
    return path, fmt


class _guard:
    """Every way a table can be unreadable as one UsageError sentence."""

    def __init__(self, path, fmt: str):
        self.path, self.fmt = path, fmt

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, (UsageError, GeneratorExit)):
            return False
        p = self.path
        if isinstance(exc, pd.errors.EmptyDataError):
            raise UsageError(f"table {p} is empty; it needs a header with a 'path' column and one row per video.")
        if isinstance(exc, UnicodeDecodeError):
            raise UsageError(f"table {p} is not UTF-8 text; re-save it as UTF-8 CSV.") from None
        if isinstance(exc, (pd.errors.ParserError, OSError, ValueError, pa.ArrowException)):
            raise UsageError(
                f"table {p} could not be read as {self.fmt} ({first_line(exc)}); check the file."
            ) from None
        return False


def _parquet_batches(source, cols, rows: int) -> Iterator[pd.DataFrame]:
    pf = pq.ParquetFile(source)
    empty = True
    for batch in pf.iter_batches(batch_size=rows, columns=cols):
        empty = False
        yield arrow_to_pandas(pa.Table.from_batches([batch]))
    if empty:
        yield arrow_to_pandas(pf.schema_arrow.empty_table().select(cols or pf.schema_arrow.names))


def arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    """Integers stay integers (nullable `Int64` where Arrow has gaps), never float."""
    return table.to_pandas(types_mapper=_int_mapper, ignore_metadata=False)


def _int_mapper(t: pa.DataType):
    if pa.types.is_integer(t):
        return pd.Int64Dtype() if not pa.types.is_uint64(t) else pd.UInt64Dtype()
    return None


def _typed(df: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """Declared columns cast to their dtype; a column with a cell that is not of its type stays text."""
    for col, dtype in types.items():
        if col not in df.columns:
            continue
        try:
            values = pd.to_numeric(df[col], errors="raise")
            df[col] = values.astype(dtype)
        except (ValueError, TypeError):
            continue
    return df


def numbers(df: pd.DataFrame) -> pd.DataFrame:
    """vidcap's numeric columns that are still text (a CSV without its sidecar) as numbers where a cell parses,
    for pages and charts that only show them; never for a table that is written back."""
    for col, dtype in DTYPES.items():
        if col in df.columns and not numeric(df[col]):
            values = pd.to_numeric(df[col], errors="coerce")
            df[col] = values.astype("Float64" if dtype == "float64" else "Int64", errors="ignore")
    return df


# -- cells ---------------------------------------------------------------------------------------------------
def cell_text(value) -> str | None:
    """A cell as CSV text (what `write` puts in a CSV): None for a missing cell, lists as JSON arrays."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else repr(float(value))
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        items = value.tolist() if hasattr(value, "tolist") else list(value)
        return json.dumps(items, ensure_ascii=False) if isinstance(items, list) else cell_text(items)
    return str(value)


def as_text(series: pd.Series) -> pd.Series:
    """A column as text cells (object dtype, None for missing)."""
    return pd.Series([cell_text(v) for v in series], index=series.index, dtype=object)


def numeric(series: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)


def same_cells(left: pd.Series, right: pd.Series) -> bool:
    """The two columns hold the same cells (numbers compared as numbers, the rest as CSV text)."""
    if numeric(left) and numeric(right):
        a, b = left.astype("Float64"), right.astype("Float64")
        return bool(((a == b).fillna(False) | (a.isna() & b.isna())).all())
    return as_text(left).tolist() == as_text(right).tolist()


def common_dtype(left: pd.Series, right: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Both columns in one dtype, so filling one from the other keeps a column of one type."""
    if left.dtype == right.dtype:
        return left, right
    if numeric(left) != numeric(right):  # numbers and text that spells the same numbers: the numbers' type
        num, txt = (left, right) if numeric(left) else (right, left)
        parsed = _parsed_as(txt, num.dtype)
        if parsed is not None:
            return (num, parsed) if num is left else (parsed, num)
    if numeric(left) and numeric(right):
        both = "Int64" if pd.api.types.is_integer_dtype(left) and pd.api.types.is_integer_dtype(right) else "Float64"
        return left.astype(both), right.astype(both)
    return as_text(left), as_text(right)


def _parsed_as(text: pd.Series, dtype) -> pd.Series | None:
    """`text` as `dtype` when every cell reads back as the same text, else None."""
    try:
        parsed = pd.to_numeric(text, errors="raise").astype(dtype)
    except (ValueError, TypeError):
        return None
    return parsed if as_text(parsed).tolist() == as_text(text).tolist() else None


# -- writing -------------------------------------------------------------------------------------------------
def write(df: pd.DataFrame, path, metadata: dict | None = None) -> None:
    """The whole frame, atomically (see `manifest.write_table`)."""
    write_table(df, path, metadata)


def unified_schema(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for tables read one after the other: every column in first-seen order; a column whose
    types differ between tables becomes text."""
    fields: dict[str, pa.DataType] = {}
    for s in schemas:
        for f in s:
            t = pa.string() if pa.types.is_large_string(f.type) else f.type
            if f.name not in fields or pa.types.is_null(fields[f.name]):
                fields[f.name] = t
            elif fields[f.name] != t and not pa.types.is_null(t):
                fields[f.name] = pa.string()
    return pa.schema(list(fields.items()))


def conform(df: pd.DataFrame, target: pa.Schema) -> pa.Table:
    """The frame as an Arrow table of exactly `target` (missing columns empty, mismatched ones as text)."""
    out = {}
    for f in target:
        col = df[f.name] if f.name in df.columns else pd.Series([None] * len(df), index=df.index, dtype=object)
        if pa.types.is_string(f.type) and not (pd.api.types.is_string_dtype(col.dtype) and col.dtype != object):
            col = as_text(col)
        out[f.name] = col
    return pa.Table.from_pandas(encodable(pd.DataFrame(out, index=df.index)), schema=target, preserve_index=False)


def write_batches(frames: Iterable[pd.DataFrame], path, target: pa.Schema, metadata: dict | None = None) -> int:
    """Stream frames into one table at `path` (atomic: a temporary file renamed, as `write`); returns rows."""
    path = as_path(path)
    fmt = table_format(path)
    target = target.remove_metadata()
    counted = [0]

    def counting() -> Iterator[pd.DataFrame]:
        for df in frames:
            counted[0] += len(df)
            yield df

    if fmt == "dataset":
        dataset.write(path, (b for df in counting() for b in conform(df, target).to_batches()), target, metadata)
        return counted[0]
    if is_remote(path):
        with tempfile.TemporaryDirectory() as tmp:
            local = os.path.join(tmp, "table")
            _write_file(counting(), local, fmt, target, metadata)
            put_file(path, local)
        return counted[0]
    atomic_local(path, lambda tmp: _write_file(counting(), tmp, fmt, target, metadata))
    return counted[0]


def _write_file(frames: Iterator[pd.DataFrame], target_file: str, fmt: str, target: pa.Schema, metadata) -> None:
    if fmt == "csv":  # text already: each frame written as it is, under the target's columns
        with open(target_file, "w", encoding="utf-8", newline="") as fh:
            header = True
            for df in frames:
                out = csv_ready(encodable(df.reindex(columns=target.names)))
                out.to_csv(fh, index=False, header=header, lineterminator="\r\n")
                header = False
            if header:
                pd.DataFrame(columns=target.names).to_csv(fh, index=False, lineterminator="\r\n")
        return
    if metadata:
        target = target.with_metadata({**(target.metadata or {}), b"vidcap": json.dumps(metadata).encode()})
    with pq.ParquetWriter(target_file, target) as writer:
        for df in frames:
            writer.write_table(conform(df, target).replace_schema_metadata(target.metadata))


def stream_rows(paths: list, keep: Callable[[int, pd.DataFrame], pd.Series]) -> Iterator[pd.DataFrame]:
    """Each table's batches, filtered by `keep(table_index, batch)` (a boolean mask)."""
    for i, p in enumerate(paths):
        for b in batches(p):
            mask = keep(i, b)
            yield b[mask.to_numpy(dtype=bool)] if len(b) else b


# -- the same contract in DuckDB SQL (vidcap.ledger reads manifests and outputs through it) ---------------
EMPTY = "is empty; it needs a header with a 'path' column and one row per video."


# DuckDB's words for a row it could not read: its line, then the header's and the row's cells (or a bad quote)
_CSV_ROW = re.compile(r"CSV Error on Line: (\d+)(?:.*?Expected Number of Columns: (\d+) Found: (\d+))?", re.S)


def table_error(path, exc: Exception | None = None) -> UsageError:
    """A table DuckDB could not read (vidcap.ledger) (or one with no header: `exc` None), in one sentence."""
    text = str(exc).lower()
    if exc is not None and ("unicode" in text or (table_format(path) == "csv" and _wide_text(path))):
        return UsageError(f"manifest {path} is not UTF-8 text; re-save it as UTF-8 CSV.")
    if (row := _CSV_ROW.search(str(exc))) is not None:  # a row with other cells than the header, or a bad quote
        where, want, got = f"manifest {path} line {row.group(1)}", row.group(2), row.group(3)
        if want and int(got) > int(want):  # (DuckDB stops counting one past the header)
            return UsageError(
                f"{where} has more cells than its header's {want}; put a cell that holds a comma in double "
                'quotes ("a,b.mp4"), or fix that row, and run again.'
            )
        if want:
            return UsageError(
                f"{where} has {got} of its header's {want} cells; add the missing ones (a trailing comma is an "
                "empty cell) and run again."
            )
        return UsageError(
            f'{where} has a quote that never closes; close it (a quote inside a cell is "") and run again.'
        )
    if exc is None or "empty" in text:
        return UsageError(f"manifest {path} {EMPTY}")
    return UsageError(f"{path} could not be read as {table_format(path)} ({first_line(exc)}); check the file.")


def _wide_text(path) -> bool:
    """A text file in UTF-16 or UTF-32 (a byte-order mark, or NUL bytes in its first 4 kB), which DuckDB
    reports only as a file it could not sniff."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except (OSError, TypeError):
        return False
    return head.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in head


def folder(path) -> str:
    """The folder a table's relative paths resolve against ."""
    return str(path.parent) if is_remote(path) else str(Path(os.path.abspath(path)).parent)


def csv_header(path: Path) -> list[str]:
    """A CSV file's header cells as written (RFC 4180 quoting); [] when it cannot be read as UTF-8."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # a byte-order mark is no part of a name
            return next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def reader_sql(path: Path, header: list[str] | None = None) -> str:
    """DuckDB's reader for a CSV (every cell as text, RFC 4180 quoting) or Parquet file, or a dataset folder
    (the parts its marker lists, in order: DuckDB keeps a list's order). A CSV's first line is its header, as
    Python's csv module reads it (DuckDB's sniffer would take a later line for it when rows are ragged, or
    fail without saying which line; `header`: its cells, when the caller read them already). A row with fewer
    cells than the header is refused, naming its line (DuckDB's null padding would break cells that hold a
    line break)."""
    fmt = table_format(path)
    if fmt == "dataset":
        return "read_parquet([" + ", ".join(f"'{sql_text(str(f))}'" for f in dataset.files(path)) + "])"
    if fmt == "parquet":
        return f"read_parquet('{sql_text(str(path))}')"
    dialect = "header=true, delim=',', quote='\"', escape='\"'"
    header = csv_header(path) if header is None else header
    if not header:  # not UTF-8 (table_error names the encoding) or empty
        return f"read_csv('{sql_text(str(path))}', all_varchar=true, {dialect})"
    cols = ", ".join(f"'{sql_text(name)}': 'VARCHAR'" for name in _column_names(header))
    return f"read_csv('{sql_text(str(path))}', columns={{{cols}}}, {dialect}, auto_detect=false)"


def _column_names(header: list[str]) -> list[str]:
    """Unique, non-blank names for a CSV's header cells, as DuckDB's sniffer names them: a blank cell is
    column<i>, a repeated one <name>_1, <name>_2 ..."""
    names: list[str] = []
    for i, cell in enumerate(header):
        name = base = cell if cell else f"column{i}"
        k = 0
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.append(name)
    return names


_NEEDS_PYTHON = r"(^\s|\s$|^~|://|//|(^|/)\.\.?(/|$)|/$)"  # cells os.path.normpath/expanduser would change


def _changed(path, size, mtime) -> bool:
    now = file_stamp(path)
    return now[0] is not None and (now[0] != size or abs(now[1] - mtime) > 1e-6)


def _json_list(cell) -> str | None:
    return None if cell is None else json.dumps(list(cell), ensure_ascii=False)


# name: (Python function, argument types, result type, NULLs reach the function, calls have effects)
UDFS: dict[str, tuple[Callable[..., Any], list[str], str, bool, bool]] = {
    "vidcap_resolve": (resolve_path, ["VARCHAR", "VARCHAR"], "VARCHAR", False, False),
    "vidcap_relative": (is_relative, ["VARCHAR"], "BOOLEAN", False, False),
    "vidcap_changed": (_changed, ["VARCHAR", "BIGINT", "DOUBLE"], "BOOLEAN", False, True),  # stats the file now
    "vidcap_json": (_json_list, ["VARCHAR[]"], "VARCHAR", True, False),  # a list cell of a CSV output
}


def duck_connect(workdir: Path):
    """A DuckDB database for a run's tables: a memory cap (VIDCAP_LEDGER_MEMORY, default 512MB) past which it
    spills to `workdir`, and the contract's SQL functions (`UDFS`)."""
    import duckdb  # here: commands that never open DuckDB do not pay for importing it

    con = duckdb.connect(":memory:")  # tables spill to temp_directory past memory_limit (faster than a file)
    con.execute(f"SET memory_limit='{knob('VIDCAP_LEDGER_MEMORY')}'")
    con.execute(f"SET temp_directory='{workdir / 'spill'}'")
    con.execute("SET preserve_insertion_order=true")
    for name, (fn, args, result, nulls, effects) in UDFS.items():
        types: list[Any] = [con.type(a) for a in args]
        nulls_to: Any = "special" if nulls else "default"  # DuckDB's stubs want its enum; each version takes the name
        con.create_function(name, fn, types, con.type(result), null_handling=nulls_to, side_effects=effects)
    return con


def memory_error(exc: BaseException) -> FatalRunError | None:
    """DuckDB's out-of-memory error (past the cap `duck_connect` sets) as one sentence naming the setting to
    raise; None for any other error. Told by name: the layers that see it need not import DuckDB."""
    if type(exc).__name__ != "OutOfMemoryException":
        return None
    return FatalRunError(
        f"the run's bookkeeping needs more memory than VIDCAP_LEDGER_MEMORY={knob('VIDCAP_LEDGER_MEMORY')} gives "
        "it (DuckDB's cap); set VIDCAP_LEDGER_MEMORY higher (such as 2GB) and run the same command again: "
        "finished rows are saved."
    )


def resolved_sql(src: str, col: str | None, base: str, abspath: str, rel: str) -> str:
    """SELECT every column of `src` with `manifest.resolve_path` of column `col` against `base` (as `abspath`)
    and `manifest.is_relative` of it (as `rel`): clean cells by string operations, the rest (~, ./, //,
    spaces, URLs) through those functions (`UDFS`)."""
    c = f"{sql_ident(col)}::VARCHAR" if col is not None else "''"
    b = sql_text(base)
    return (
        f"SELECT * EXCLUDE (_vidcap_odd), CASE WHEN {c} IS NULL OR {c} = '' THEN '' WHEN _vidcap_odd THEN "
        f"vidcap_resolve({c}, '{b}') WHEN starts_with({c}, '/') THEN {c} ELSE '{b.rstrip('/')}/' || {c} END AS "
        f"{abspath}, CASE WHEN {c} IS NULL OR {c} = '' THEN false WHEN _vidcap_odd THEN vidcap_relative({c}) "
        f"ELSE NOT starts_with({c}, '/') END AS {rel} "
        f"FROM (SELECT *, regexp_matches({c}, '{_NEEDS_PYTHON}') AS _vidcap_odd FROM {src})"
    )


def duck_run(con, sql: str, path):
    """A DuckDB statement reading the table at `path`; what DuckDB cannot parse is one sentence naming it."""
    import duckdb  # here: commands that never open DuckDB do not pay for importing it

    try:
        return con.execute(sql)
    except duckdb.Error as exc:
        raise memory_error(exc) or table_error(path, exc) from None


def duck_table(con, path: Path) -> tuple[list[str], str]:
    """(a table's column names, the SQL that reads it): a CSV's as its header cells give them (`reader_sql`;
    a blank or repeated cell named as DuckDB names it)."""
    if table_format(path) != "dataset" and path.stat().st_size == 0:
        raise table_error(path)
    header = csv_header(path) if table_format(path) == "csv" else None
    reader = reader_sql(path, header)
    names = [r[0] for r in duck_run(con, f"DESCRIBE SELECT * FROM {reader}", path).fetchall()]
    if not any(c.strip() for c in (names if header is None else header)):
        raise table_error(path)
    return names, reader


def copy_options(fmt: str, meta: dict | None = None) -> str:
    """DuckDB COPY options that write a CSV as Python's csv module writes it (CRLF line ends, RFC 4180; no
    comment character, or DuckDB would quote every cell holding a '#'), or a zstd Parquet file carrying
    the run's record (`meta`, read back by `join`)."""
    if fmt == "csv":
        return "FORMAT csv, HEADER true, NEW_LINE '\\r\\n', COMMENT ''"
    opts = "FORMAT parquet, COMPRESSION zstd"
    if meta is not None:
        opts += f", KV_METADATA {{vidcap: '{sql_text(json.dumps(meta, default=str))}'}}"
    return opts


def copy_to(con, sql: str, opts: str, path, work: Path, before_rename=None) -> None:
    """DuckDB's COPY of a query to a file, atomically: to a temp name renamed into place, or (a remote path)
    to `work` and uploaded whole."""

    def copy(target: str) -> None:
        con.execute(f"COPY ({sql}) TO '{sql_text(target)}' ({opts})")

    if is_remote(path):
        local = str(work / f"out-{path.name}")
        copy(local)
        put_file(path, local, before_rename)
    else:
        atomic_local(path, copy, before_rename, fresh=True)


def key_sql(abspath: str, names: list[str], cols: dict[str, str] | None = None) -> str:
    """`manifest.row_key_path` in SQL (vidcap.ledger keys every row with it): the path's key, plus
    `#t=START,END` on a range row of a manifest with range columns (`cols`: where a name is another column;
    each cell read by manifest.TIME_TEXT, written as Python's repr, which DuckDB's DOUBLE to VARCHAR cast
    matches), or `#t=?` and a hash of the cells' text on a row whose cells are set but make no range
    (`manifest.range_key`; tests/test_ranges.py checks the two agree)."""
    key = f"left(sha1({abspath}), 20)"
    if not set(RANGE_COLUMNS) <= set(names):
        return key  # a whole-file manifest: the key as it always was
    t, raw = [], []
    for col in RANGE_COLUMNS:  # each cell parsed and written once (nullif: not a finite number is NULL)
        cell = sql_ident((cols or {}).get(col, col))
        d = f"try_cast(regexp_extract({cell}::VARCHAR, '{sql_text(TIME_TEXT)}', 1) AS DOUBLE)"
        t.append(f"nullif(nullif(nullif(nullif(({d} + 0.0)::VARCHAR, 'inf'), '-inf'), 'nan'), '-nan')")
        empty = (  # NULL, blank text or a float NaN (rowcells._empty_cell)
            f"{cell} IS NULL OR regexp_full_match({cell}::VARCHAR, '{sql_text(BLANK_TEXT)}') OR "
            f"(typeof({cell}) IN ('DOUBLE', 'FLOAT') AND isnan(try_cast({cell} AS DOUBLE)))"
        )
        raw.append(f"CASE WHEN {empty} THEN '' ELSE {cell}::VARCHAR END")
    unusable = f"'#t=?' || left(sha1({raw[0]} || chr(31) || {raw[1]}), 8)"
    whole = f"CASE WHEN {raw[0]} = '' AND {raw[1]} = '' THEN '' ELSE {unusable} END"
    return f"{key} || coalesce('#t=' || {t[0]} || ',' || {t[1]}, {whole})"  # no range: the NULL drops out


def sql_ident(name: str) -> str:
    """A column name as a quoted SQL identifier (any name a user's table may have)."""
    return '"' + str(name).replace('"', '""') + '"'


def sql_text(text: str) -> str:
    return text.replace("'", "''")


def local_copy(path, workdir: Path, name: str) -> tuple[Path, str]:
    """(a local file to read, the folder its relative paths resolve against): a remote table is copied
    into `workdir` once (DuckDB and Arrow then read a local file)."""
    if not is_remote(path):
        if not os.path.exists(path):
            raise UsageError(f"{path} does not exist; check the path.")
        if os.path.isdir(path) and table_format(path) != "dataset":
            raise UsageError(f"{path} is a directory; pass a .csv or .parquet file.")
        if any(c in str(path) for c in "*?[{") and table_format(path) != "dataset":  # DuckDB would glob it
            link = workdir / f"{name}{''.join(Path(path).suffixes[-1:])}"
            link.symlink_to(os.path.abspath(path))
            return link, folder(path)
        return Path(path), folder(path)
    local = workdir / f"{name}{''.join(Path(path.name).suffixes[-1:])}"
    try:
        get_file(path, str(local))
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist; check the URL.") from None
    except Exception as exc:
        raise UsageError(f"cannot read {path} ({first_line(exc)}); check the URL and its credentials.") from None
    return local, folder(path)


def write_rows(rows: list[dict], path, before_rename=None) -> None:
    """One part from result records: straight to Arrow (no pandas frame); records Arrow cannot type (mixed
    values, lone surrogates) and remote stores take `write_table`, which cleans them."""
    try:
        table = None if is_remote(path) else pa.Table.from_pylist(rows)
    except Exception:
        table = None
    if table is None:
        write_table(pd.DataFrame(rows), path, before_rename=before_rename)
    else:
        write_arrow(table, path, before_rename)


def write_arrow(table, path: Path, before_rename=None) -> None:
    """An Arrow table to a local Parquet file atomically (temp name, fsync, rename)."""
    atomic_local(path, lambda tmp: pq.write_table(table, tmp), before_rename)
