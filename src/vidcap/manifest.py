"""Manifests in and out: CSV or Parquet with a `path` column, row ids, atomic writes, merge and diff."""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
from pathlib import Path
from typing import cast

import pandas as pd

from .errors import UsageError

# a row's resolved-path and range cells live in `rowcells` (no pandas, for decode workers); re-exported here
from .rowcells import ABSPATH as ABSPATH
from .rowcells import BLANK_TEXT as BLANK_TEXT
from .rowcells import RANGE_COLUMNS as RANGE_COLUMNS
from .rowcells import RID as RID
from .rowcells import TIME_TEXT as TIME_TEXT
from .rowcells import range_key as range_key
from .rowcells import read_range as read_range
from .rowcells import row_range as row_range
from .rowcells import time_value as time_value
from .storage import atomic_local

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
# Internal columns of a run's tables (row id, resolved path); never written to an output. Named so a user's
# own columns (`_rid`, `_src`, ...) pass through untouched.
INTERNAL = (RID, ABSPATH)


def table_format(path: str | os.PathLike) -> str:
    """ "csv", "parquet", or "dataset" (a folder of Parquet parts: `vidcap.dataset`)."""
    from . import dataset

    ext = Path(str(path).rstrip("/").rsplit("/", 1)[-1]).suffix.lower()
    if dataset.is_dataset(path) and (ext not in FORMATS or dataset.marker(os.path.expanduser(str(path)))):
        return "dataset"  # no extension, or a dataset vidcap wrote under a file's name (`out.parquet/`)
    if ext not in FORMATS:
        if not ext:
            dataset.check_local(path)
        raise UsageError(
            f"{path} has extension '{ext or '(none)'}'; vidcap reads and writes .csv or .parquet manifests "
            "(or, with no extension, a folder of Parquet files)."
        )
    return FORMATS[ext]


def read_table(path: str | os.PathLike, text: bool = False) -> pd.DataFrame:
    """Read a CSV/Parquet file or dataset folder (a local path or an fsspec URL), turning every way it can be
    unreadable into one UsageError sentence. text: CSV cells as written (no type guessing; only an empty cell
    is missing), as a run reads a manifest."""
    from . import dataset
    from .errors import first_line
    from .storage import as_path, is_remote, open_binary

    path = cast(Path, as_path(path))  # a Path, or a UPath (the same API) for a remote URL
    fmt = table_format(path)
    if fmt == "dataset":
        dataset.check_local(path)
        if not path.exists():
            raise UsageError(f"{path} does not exist; check the path.")
        return dataset.read_frame(path)
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except Exception as exc:  # a remote store that cannot be reached or refuses the credentials
        raise UsageError(f"cannot read {path} ({first_line(exc)}); check the URL and its credentials.") from None
    if not exists:
        raise UsageError(f"{path} does not exist; check the path.")
    if is_dir:
        raise UsageError(f"{path} is a directory; pass a .csv or .parquet file.")
    try:
        src = open_binary(path) if is_remote(path) else path
        if fmt == "csv" and text:
            df = pd.read_csv(src, encoding="utf-8", dtype=str, keep_default_na=False, na_values=[""])
        elif fmt == "csv":
            df = pd.read_csv(src, encoding="utf-8", low_memory=False)
        else:
            df = pd.read_parquet(src)
    except pd.errors.EmptyDataError:
        raise UsageError(
            f"manifest {path} is empty; it needs a header with a 'path' column and one row per video."
        ) from None
    except UnicodeDecodeError:
        raise UsageError(f"manifest {path} is not UTF-8 text; re-save it as UTF-8 CSV.") from None
    except (pd.errors.ParserError, OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(f"manifest {path} could not be read as {fmt} ({first}); check the file.") from None
    return df


def row_key_path(abspath: str, span: tuple[float, float] | str | None = None) -> str:
    """A row's id: 20 hex digits of the resolved path's SHA-1, plus `#t=START,END` (Media Fragments, each time
    as Python's `repr`) for a range row (`span`, or the text `range_key` gives). `vidcap.tables.key_sql` is the
    same rule in SQL."""
    key = hashlib.sha1(abspath.encode("utf-8", "surrogatepass")).hexdigest()[:20]
    if span is None:
        return key
    return f"{key}#t={span}" if isinstance(span, str) else f"{key}#t={span[0]!r},{span[1]!r}"


def _path_text(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def is_relative(value) -> bool:
    """A path cell that resolves against its table's folder (not empty, not a URL, not absolute after ~)."""
    text = _path_text(value)
    return bool(text) and "://" not in text and not os.path.isabs(os.path.expanduser(text))


def resolve_path(value, base: str | os.PathLike) -> str:
    """A path cell resolved against its table's folder `base` (a local folder, or a URL's folder: a relative
    cell of a remote manifest names a file beside it)."""
    text = _path_text(value)
    if not text or "://" in text:  # URLs and fsspec paths are kept as given
        return text
    p = Path(os.path.expanduser(text))
    if p.is_absolute():
        return os.path.normpath(str(p))
    folder = str(base)
    if "://" in folder:
        proto, rest = folder.split("://", 1)
        return f"{proto}://{posixpath.normpath(posixpath.join(rest, text))}"
    resolved = os.path.normpath(os.path.join(folder, text))
    raw = str(value) if isinstance(value, str) else ""
    if raw != text and not os.path.exists(resolved):  # a file whose own name begins or ends with a space
        spaced = os.path.normpath(os.path.join(folder, os.path.expanduser(raw)))
        if os.path.isfile(spaced):
            return spaced
    return resolved


def check_columns(path, names: list[str], require: tuple[str, ...], reserved: tuple[str, ...] = INTERNAL) -> None:
    """A manifest's header refused in one sentence: a required column missing, or a name vidcap keeps."""
    missing = [c for c in require if c not in names]
    if missing:
        have = ", ".join(names[:40]) + (f" and {len(names) - 40} more" if len(names) > 40 else "") or "none"
        what = {
            "path": " holding one video path per row.",
            "text": " holding the captions (tag the output of `vidcap caption`, or name the caption column with "
            "--text-column).",
        }
        sep = next((s for s in ";\t|" if len(names) == 1 and s in names[0]), None)  # one column holding the others
        if sep is not None:
            raise UsageError(
                f"manifest {path} has no '{missing[0]}' column: its header ({names[0][:80]!r}) looks separated by "
                f"{sep!r}; vidcap reads comma-separated CSV, so re-save it with commas (or as Parquet)."
            )
        raise UsageError(
            f"manifest {path} has no '{missing[0]}' column (columns: {have}); add one" + what.get(missing[0], ".")
        )
    taken = [c for c in names if c in reserved]
    if taken:
        raise UsageError(f"manifest {path} has a column named '{taken[0]}', a name vidcap keeps for itself; rename it.")


def read_manifest(path: str | os.PathLike, require: tuple[str, ...] = ("path",)) -> pd.DataFrame:
    """The manifest with every input column kept, plus `_abspath` (resolved path) for the stages."""
    path = Path(os.path.expanduser(str(path)))
    df = read_table(path, text=True)  # a CSV cell is written back as it was given ("007", "NA", "1e3")
    check_columns(path, list(map(str, df.columns)), require)
    if len(df) == 0:
        raise UsageError(f"manifest {path} has a header but no rows; nothing to do.")
    if "path" in df.columns:
        base = path.resolve().parent
        df[ABSPATH] = [resolve_path(v, base) for v in df["path"]]
    return df.reset_index(drop=True)


def default_output(manifest: str | os.PathLike, suffix: str):
    """`<stem>_<suffix>.<ext>` beside the manifest (a local Path, or a URL's UPath)."""
    from .storage import as_path

    p = as_path(manifest)
    return p.with_name(f"{p.stem}_{suffix}{p.suffix}")


def _to_csv_cell(v):
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v), ensure_ascii=False)
    if hasattr(v, "tolist") and not isinstance(v, (str, bytes)):
        return json.dumps(v.tolist(), ensure_ascii=False)
    return v


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value):
    """A str with each lone surrogate replaced by U+FFFD (anything else unchanged)."""
    if isinstance(value, str) and _SURROGATE.search(value):
        return _SURROGATE.sub("\ufffd", value)
    return value


def encodable(df: pd.DataFrame) -> pd.DataFrame:
    """Lone surrogates (a JSON API can return "\\ud800") cannot be written as UTF-8 by either format: each
    becomes U+FFFD, so a run never fails at write time after its work is done."""
    out = df
    for col in df.columns:
        if df[col].dtype != object:
            continue
        bad = df[col].map(lambda v: isinstance(v, str) and _SURROGATE.search(v) is not None)
        if bad.any():
            out = out.copy() if out is df else out
            out[col] = df[col].where(~bad, df[col][bad].map(lambda v: _SURROGATE.sub("\ufffd", v)))
    return out


def csv_ready(df: pd.DataFrame) -> pd.DataFrame:
    """List-valued columns become JSON array strings, since CSV has no list type."""
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object and any(isinstance(v, (list, tuple)) or hasattr(v, "tolist") for v in out[col]):
            out[col] = out[col].map(_to_csv_cell)
    return out


def write_table(
    df: pd.DataFrame, path: str | os.PathLike, metadata: dict | None = None, before_rename=None, on_part=None
) -> None:
    """Write atomically: a temporary file in the same folder, fsync, rename. Readers never see half a file.

    before_rename: called with the temp file complete but not yet renamed (fault-injection tests).
    An fsspec URL is written as storage.put_bytes does (one PUT on object stores). A dataset folder is
    written as `vidcap.dataset.write` does (on_part: called after each part file).
    """
    from .storage import as_path, is_remote, put_bytes

    path = cast(Path, as_path(path))  # a Path, or a UPath (the same API) for a remote URL
    fmt = table_format(path)
    if fmt == "dataset":
        from . import dataset

        dataset.write_frame(encodable(df), path, metadata, before_rename, on_part)
        return
    if is_remote(path):
        put_bytes(path, table_bytes(df, fmt, metadata), before_rename)
        return
    atomic_local(path, lambda tmp: _write_format(df, fmt, metadata, tmp), before_rename)


def _write_format(df: pd.DataFrame, fmt: str, metadata: dict | None, target) -> None:
    df = encodable(df)
    if fmt == "csv":
        # CRLF line ends (RFC 4180): the writer then quotes every field holding a \r or \n, so a caption with
        # a bare \r reads back as one field, not as a new row
        csv_ready(df).to_csv(target, index=False, lineterminator="\r\n")
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta[b"vidcap"] = json.dumps(metadata).encode()
        table = table.replace_schema_metadata(meta)
    pq.write_table(table, target)


def table_bytes(df: pd.DataFrame, fmt: str, metadata: dict | None = None) -> bytes:
    if fmt == "csv":
        return csv_ready(encodable(df)).to_csv(index=False, lineterminator="\r\n").encode("utf-8")
    buf = io.BytesIO()
    _write_format(df, fmt, metadata, buf)
    return buf.getvalue()


def column_plan(input_columns, output_columns) -> dict:
    """How input columns are renamed so that no name repeats in the output: an input column named like an
    output column is kept as `<name>_input`, or `<name>_input_2`, ... (the first name free), so any stage
    runs on any stage's output, any number of times."""
    outputs = set(output_columns)
    taken = set(input_columns) | outputs
    plan = {}
    for col in input_columns:
        if col in outputs:
            name, k = f"{col}_input", 2
            while name in taken:
                name, k = f"{col}_input_{k}", k + 1
            plan[col] = name
            taken.add(name)
    return plan


def rebase_paths(df: pd.DataFrame, manifest, output) -> pd.DataFrame:
    """Relative `path` values written absolute when the output does not live in the manifest's folder, so an
    output's paths resolve wherever it is (every vidcap command resolves relative paths against the table's
    own folder); beside the manifest they stay as given."""
    from .storage import is_remote

    if "path" not in df.columns or ABSPATH not in df.columns:
        return df
    if (
        not is_remote(output)
        and not is_remote(manifest)
        and Path(os.path.abspath(str(output))).parent == Path(os.path.abspath(str(manifest))).parent
    ):
        return df

    df = df.copy()
    df["path"] = [a if a and is_relative(v) else v for v, a in zip(df["path"], df[ABSPATH], strict=False)]
    return df


def public_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Every column but vidcap's internal ones."""
    return df[[c for c in df.columns if c not in INTERNAL]]


def with_ranges(keys: list[str], df: pd.DataFrame) -> list[str]:
    """Clip keys: each key (a path) with `#t=START,END` added on a range row, so the scenes or windows of one
    file are told apart (merge, diff, join, the report); unchanged where the table has no range columns."""
    if not set(RANGE_COLUMNS) <= set(df.columns):
        return list(keys)
    spans = [range_key(r) for r in df[list(RANGE_COLUMNS)].to_dict("records")]
    return [k if s is None else f"{k}#t={s}" for k, s in zip(keys, spans, strict=True)]


def resolved_paths(df: pd.DataFrame, table) -> list[str]:
    """The table's `path` values resolved as runs resolve them (against the table's own folder)."""
    from .storage import is_remote

    base = Path(os.path.abspath(str(table))).parent if not is_remote(table) else Path(".")
    return [resolve_path(v, base) for v in df["path"]]
