"""Parquet dataset outputs: a folder of `part-NNNNN.parquet` files, in manifest order, with `_vidcap.json`.

`-o captions/` (any -o without a .csv/.parquet extension) writes the output as such a folder, for outputs
too large for one file. Each part holds at most VIDCAP_DATASET_ROWS rows (default 1,048,576; ~100-200 MB of
captions); part 0 holds the first rows. The folder is built under a hidden temporary name beside it
(`.captions.XXXXXXXX.tmp`), every file fsynced, `_vidcap.json` (rows, parts, columns, the run's settings and
summary) written last, then renamed into place; an older dataset there is first moved aside
(`.captions.XXXXXXXX.old`) and removed after. A kill leaves the old output or none (the next run of that
output puts a moved-aside one back), never a half dataset: readers take a folder only with its marker and
every part it lists.

Names follow Spark's and datatrove's conventions: files starting with `_` or `.` are not data, so
`pyarrow.dataset`, `pandas.read_parquet`, DuckDB's `read_parquet('captions/*.parquet')`, Spark and HF
`datasets` read the folder as one table.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import UsageError
from .knobs import knob
from .storage import fsync_path, umask_now, write_json

PART_NAME = re.compile(r"part-\d{5,}\.parquet")  # the names vidcap gives its part files
MARKER = "_vidcap.json"
ROWS_ENV = "VIDCAP_DATASET_ROWS"
DEFAULT_ROWS = 1 << 20
GROUP_ROWS = 1 << 17  # rows per Parquet row group (DuckDB's COPY writes ~122,880)
HINT_ROWS = 5_000_000  # a single-file output this large gets a one-line hint about datasets


def rows_per_file() -> int:
    return int(knob(ROWS_ENV, DEFAULT_ROWS))


def is_dataset(path) -> bool:
    """A table path that may name a dataset folder: no file extension (`-o captions/`), or a folder there now
    (`manifest.table_format` takes a folder with a .csv/.parquet name only when it holds the marker)."""
    from .storage import is_remote

    text = str(path)
    if is_remote(path) or "://" in text:
        return False
    p = Path(os.path.expanduser(text))
    return p.is_dir() or Path(p.name).suffix == ""


def check_local(path) -> None:
    """Datasets are local folders (their atomic rename has no equivalent on object stores yet)."""
    from .storage import is_remote

    if is_remote(path) or "://" in str(path):
        raise UsageError(
            f"{path} has no .csv or .parquet extension; a dataset folder must be a local path "
            "for now (write one .parquet file to an object store)."
        )


# -- reading -------------------------------------------------------------------------------------------------
def marker(path) -> dict | None:
    """The finished dataset's `_vidcap.json`, or None if the folder has none."""
    try:
        return json.loads((Path(path) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def files(path) -> list[Path]:
    """The dataset's part files in order; one sentence when the folder is not a finished dataset."""
    path = Path(path)
    meta = marker(path)
    if meta is None:
        if not path.exists():
            raise UsageError(f"{path} does not exist; check the path.")
        if any(path.glob("*.parquet")):
            raise UsageError(
                f"{path} is an incomplete output (it has no {MARKER}: the run writing it did not "
                "finish); rerun the command that writes it to finish it."
            )
        raise UsageError(
            f"{path} is a directory, not a table; pass a .csv or .parquet file, or a dataset folder that vidcap wrote."
        )
    names = [f["name"] for f in meta.get("files", [])]
    lost = [n for n in names if not (path / n).is_file()]
    if lost or not names:
        raise UsageError(
            f"{path} is an incomplete output ({lost[0] if lost else 'no part'} is missing); rerun the "
            "command that writes it: the rows of the missing part are done again."
        )
    return [path / n for n in names]


def read_frame(path):
    """The whole dataset as one pandas frame (the readers that need every row: join, export, report)."""
    import pandas as pd

    frames = [pd.read_parquet(f) for f in files(path)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def columns(path) -> list[str]:
    import pyarrow.parquet as pq

    return list(pq.read_schema(files(path)[0]).names)


def size(path) -> int:
    """Bytes of the dataset's parts (what a single file's size would say)."""
    try:
        return sum(f.stat().st_size for f in files(path))
    except (UsageError, OSError):
        return 0


# -- writing -------------------------------------------------------------------------------------------------
def write(
    path,
    batches: Iterable,
    schema,
    meta: dict | None = None,
    before_rename: Callable | None = None,
    on_part: Callable | None = None,
) -> dict:
    """Write Arrow record batches as a dataset at `path` atomically (see the module text). on_part: called
    after each part file is complete (fault-injection tests). Returns the marker."""
    path = Path(os.path.expanduser(str(path)))
    check_local(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        parts = _write_parts(tmp, batches, schema, rows_per_file(), on_part)
        info = {
            "format": "vidcap-parquet-dataset",
            "version": 1,
            "rows": sum(p["rows"] for p in parts),
            "files": parts,
            "columns": [{"name": f.name, "type": str(f.type)} for f in schema],
            **(meta or {}),
        }
        write_json(tmp / MARKER, info)
        os.chmod(tmp, 0o777 & ~umask_now())  # mkdtemp makes 0700
        fsync_path(tmp)
        if before_rename is not None:
            before_rename()
        _swap(tmp, path)
        return info
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_frame(df, path, meta: dict | None = None, before_rename=None, on_part=None) -> dict:
    """A pandas frame as a dataset (one Arrow conversion, then sliced into parts: one schema for all)."""
    import pyarrow as pa

    table = pa.Table.from_pandas(df, preserve_index=False)
    return write(path, table.to_batches(max_chunksize=1 << 16), table.schema, meta, before_rename, on_part)


def _write_parts(folder: Path, batches: Iterable, schema, limit: int, on_part) -> list[dict]:
    import pyarrow.parquet as pq

    parts: list[dict] = []
    writer: pq.ParquetWriter | None = None
    name, held = "", 0

    def close(writer: pq.ParquetWriter) -> None:
        writer.close()
        fsync_path(folder / name)
        parts.append({"name": name, "rows": held, "bytes": (folder / name).stat().st_size})
        if on_part is not None:
            on_part()

    mode = 0o666 & ~umask_now()
    for group in _groups(batches, limit):  # row groups of up to GROUP_ROWS, none across a part's end
        if writer is None:
            name, held = f"part-{len(parts):05d}.parquet", 0
            writer = pq.ParquetWriter(folder / name, schema, compression="zstd")
            os.chmod(folder / name, mode)
        writer.write_table(group, row_group_size=group.num_rows)
        held += group.num_rows
        if held == limit:
            close(writer)
            writer = None
    if writer is not None:
        close(writer)
    if not parts:  # no rows: one empty part keeps the columns
        name, held = "part-00000.parquet", 0
        writer = pq.ParquetWriter(folder / name, schema, compression="zstd")
        os.chmod(folder / name, mode)
        close(writer)
    return parts


def _groups(batches: Iterable, limit: int):
    """Arrow batches regrouped into tables of up to GROUP_ROWS rows, cut at every `limit` rows (a part's
    end): a reader's batch is small (64k rows), and small row groups compress and scan worse."""
    import pyarrow as pa

    buf: list = []
    have = done = 0  # rows buffered; rows of the current part already handed out
    for batch in batches:
        while batch.num_rows:
            room = min(GROUP_ROWS - have, limit - done - have)
            buf.append(batch.slice(0, room))
            have += min(room, batch.num_rows)
            batch = batch.slice(room)
            if have == GROUP_ROWS or done + have == limit:
                yield pa.Table.from_batches(buf)
                done = (done + have) % limit
                buf, have = [], 0
    if have:
        yield pa.Table.from_batches(buf)


def _swap(tmp: Path, path: Path) -> None:
    """The finished folder into place; an older output there moves aside first and goes after."""
    old = None
    if path.is_dir() and not path.is_symlink():
        old = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
        os.rename(path, old)
    elif path.exists() or path.is_symlink():
        path.unlink()
    os.rename(tmp, path)
    fsync_path(path.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover(path) -> None:
    """After a killed run (the caller holds the output's lock): a dataset moved aside but not replaced goes
    back; the killed run's temporary folders go."""
    path = Path(path)
    prefix = f".{path.name}."
    aside = sorted(path.parent.glob(prefix + "*.old"), key=lambda p: p.stat().st_mtime)
    if not path.exists():
        for old in reversed(aside):
            if marker(old) is not None:
                os.rename(old, path)
                aside.remove(old)
                break
    for stale in aside + [p for p in path.parent.glob(prefix + "*.tmp") if p.is_dir()]:
        shutil.rmtree(stale, ignore_errors=True)


def remove(path) -> None:
    """An output dataset replaced by --overwrite (only a folder vidcap wrote; see `owned`)."""
    shutil.rmtree(path, ignore_errors=True)


def owned(path) -> bool:
    """A folder vidcap may replace: a dataset it wrote (with its marker, or only part files named as vidcap
    names them: one whose marker was lost), or an empty folder."""
    path = Path(path)
    return marker(path) is not None or all(PART_NAME.fullmatch(p.name) for p in path.iterdir())
