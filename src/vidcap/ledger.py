"""Every run's bookkeeping, for 10 rows and for 100M: DuckDB over the manifest and the saved results.

The manifest is read once into an on-disk DuckDB table (one row per manifest row, with its row id and
resolved path); saved results (the run's parts, or a finished output by the same settings) are read from
Parquet with only the columns each step needs. What is done, what to redo, the rows left, the run-level
step and the final merge are SQL over those tables, so memory stays bounded by DuckDB's memory limit (it
spills to the ledger's folder), not by the number of rows.

Row ids are the stage's row key: for every built-in path-keyed stage a 20-hex-digit (80-bit) SHA-1 prefix,
computed here in DuckDB (the same value `Stage.row_key` gives in Python).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from .errors import RETRYABLE, UsageError, first_line
from .knobs import knob
from .manifest import ABSPATH, INTERNAL, RANGE_COLUMNS, RID, TIME_TEXT, atomic_local, check_columns, table_format
from .parts import FILE_DTYPES, fault_point, read_json
from .rows import ListSource
from .storage import as_path, file_stamp, get_file, is_remote, put_file

ROW = "_vidcap_row"  # the row's position among the selected manifest rows (the output's order)
REL = "_vidcap_rel"  # the row's path is relative (written absolute when the output lives elsewhere)
SQL_TYPES = {"Int64": "BIGINT", "float64": "DOUBLE"}  # a stage's declared column types (pandas names) in SQL
SEL = "_vidcap_sel"  # the row is one --shard/--limit chose to work on (the output keeps the others it has)
BATCH_ROWS = 65_536
_NEEDS_PYTHON = r"(^\s|\s$|^~|://|//|(^|/)\.\.?(/|$)|/$)"  # cells os.path.normpath/expanduser would change


def connect(workdir: Path):
    """A DuckDB database in `workdir` with a memory cap (VIDCAP_LEDGER_MEMORY, default 512MB); it spills there."""
    try:
        import duckdb
    except ImportError:
        raise UsageError("vidcap's bookkeeping needs DuckDB; install it with `pip install duckdb`.") from None
    con = duckdb.connect(":memory:")  # tables spill to temp_directory past memory_limit (faster than a file)
    mem = knob("VIDCAP_LEDGER_MEMORY")
    con.execute(f"SET memory_limit='{mem}'")
    con.execute(f"SET temp_directory='{workdir / 'spill'}'")
    con.execute("SET preserve_insertion_order=true")
    return con


# -- reading the manifest ----------------------------------------------------------------------------
def manifest_batches(path: Path, batch_rows: int = BATCH_ROWS):
    """The manifest's rows in Arrow batches. CSV cells are read as text (a value is written back exactly as
    it was given); Parquet keeps its types."""
    fmt = table_format(path)
    try:
        if fmt in ("parquet", "dataset"):
            import pyarrow.parquet as pq

            from . import dataset

            for f in dataset.files(path) if fmt == "dataset" else [path]:
                yield from pq.ParquetFile(f).iter_batches(batch_size=batch_rows)
            return
        import csv

        import pyarrow.csv as pcsv

        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), None)
        if not header:
            raise UsageError(f"manifest {path} is empty; it needs a header with a 'path' column and one row per video.")
        # only an empty cell is missing ("NA", "null" stay text), as DuckDB's reader reads it
        conv = pcsv.ConvertOptions(
            column_types={c: pa.string() for c in header}, strings_can_be_null=True, null_values=[""]
        )
        reader = pcsv.open_csv(
            path,
            read_options=pcsv.ReadOptions(block_size=1 << 24),
            parse_options=pcsv.ParseOptions(newlines_in_values=True),
            convert_options=conv,
        )
        yield from reader
    except UsageError:
        raise
    except UnicodeDecodeError:
        raise UsageError(f"manifest {path} is not UTF-8 text; re-save it as UTF-8 CSV.") from None
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(f"manifest {path} could not be read as {fmt} ({first_line(exc)}); check the file.") from None


def resolve_batch(paths: pa.Array, base: str) -> tuple[pa.Array, pa.Array]:
    """(resolved path, is relative) for a column of path cells, as `manifest.resolve_path`/`is_relative`
    give them. Cells that are already clean are handled by Arrow kernels; the rest (~, ./, //, spaces) go
    through the same Python functions one by one."""
    import pyarrow.compute as pc

    from .manifest import is_relative, resolve_path

    text = pc.fill_null(paths.cast(pa.string()), "")
    odd = pc.match_substring_regex(text, _NEEDS_PYTHON)
    absolute = pc.starts_with(text, "/")
    empty = pc.equal(text, "")
    joined = pc.binary_join_element_wise(pa.scalar(base.rstrip("/")), text, "/")
    out = pc.if_else(pc.or_(absolute, empty), text, joined)
    rel = pc.and_(pc.invert(absolute), pc.invert(empty))
    if pc.any(odd).as_py():
        idx = pc.indices_nonzero(odd).to_numpy()
        cells = paths.take(pa.array(idx)).to_pylist()
        fixed = pa.array([resolve_path(c, base) for c in cells], pa.string())
        fixed_rel = pa.array([is_relative(c) for c in cells], pa.bool_())
        out, rel = _scatter(out, idx, fixed), _scatter(rel, idx, fixed_rel)
    return out, rel


def _scatter(arr: pa.Array, idx, values: pa.Array) -> pa.Array:
    import numpy as np

    full = np.full(len(arr), -1, dtype=np.int64)
    full[idx] = np.arange(len(idx))
    pos = pa.array(full)
    import pyarrow.compute as pc

    picked = values.take(pc.if_else(pc.less(pos, 0), 0, pos)) if len(values) else arr
    return pc.if_else(pc.greater_equal(pos, 0), picked, arr)


# -- the ledger ----------------------------------------------------------------------------------------
class Ledger:
    """One run's bookkeeping in DuckDB: table `m` (the selected manifest rows), views `res` (every saved
    result row) and `best` (one per row id: an ok row wins, else the latest; `redo` as `parts.needs_redo`)."""

    def __init__(self, stage, manifest, store):
        from .stages.base import Stage

        self.stage, self.store = stage, store
        if store.remote:  # the ledger is local scratch whatever the output is
            self.work = Path(tempfile.mkdtemp(prefix="vidcap-ledger-"))
        else:
            for old in store.dir.glob(".ledger-*"):  # a killed run's ledger (we hold the lock)
                shutil.rmtree(old, ignore_errors=True)
            self.work = Path(tempfile.mkdtemp(prefix=".ledger-", dir=store.dir))
        self.con = connect(self.work)
        self.manifest, self.base = self._local_copy(as_path(manifest), "manifest")
        self.path_keyed = type(stage).row_key is Stage.row_key  # the key is computed in SQL
        self.rows = 0
        self.names: list[str] = []
        self._fetched: dict[str, str] = {}  # remote part -> its local copy (a part never changes once written)
        self._readers: dict[str, str] = {}  # a CSV whose header DuckDB would rename -> SQL that keeps the names

    def _local_copy(self, path, name: str) -> tuple[Path, str]:
        """(a local file to read, the folder its relative paths resolve against): a remote table is copied
        into the ledger's folder once (DuckDB and Arrow then read a local file)."""
        if not is_remote(path):
            if not os.path.exists(path):
                raise UsageError(f"{path} does not exist; check the path.")
            if os.path.isdir(path) and table_format(path) != "dataset":
                raise UsageError(f"{path} is a directory; pass a .csv or .parquet file.")
            base = str(Path(os.path.abspath(path)).parent)
            if any(c in str(path) for c in "*?[{") and table_format(path) != "dataset":  # DuckDB would glob it
                link = self.work / f"{name}{''.join(Path(path).suffixes[-1:])}"
                link.symlink_to(os.path.abspath(path))
                return link, base
            return Path(path), base
        local = self.work / f"{name}{''.join(Path(path.name).suffixes[-1:])}"
        try:
            get_file(path, str(local))
        except FileNotFoundError:
            raise UsageError(f"{path} does not exist; check the URL.") from None
        except Exception as exc:
            raise UsageError(f"cannot read {path} ({first_line(exc)}); check the URL and its credentials.") from None
        return local, str(path.parent)

    def part_paths(self) -> list[str]:
        """Every readable part as a local file (remote parts are fetched once)."""
        parts = self.store.readable_parts()
        if not self.store.remote:
            return [str(f) for f in parts]
        got = []
        for f in parts:
            key = str(f)
            if key not in self._fetched:
                local = self.work / "parts" / f.name
                local.parent.mkdir(exist_ok=True)
                try:
                    get_file(f, str(local))
                except Exception:  # removed meanwhile: its rows are redone
                    continue
                self._fetched[key] = str(local)
            got.append(self._fetched[key])
        return got

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None
        shutil.rmtree(self.work, ignore_errors=True)

    # -- plan ----------------------------------------------------------------------------------------
    def ingest(self, shard=None, limit=None) -> int:
        """Read the manifest once into table `m`: the selected rows (every `shard` row, the first `limit`),
        each with its position, resolved path, relative-path flag and row id."""
        self.names = self._header(self.manifest)
        check_columns(self.manifest, self.names, tuple(self.stage.required_columns), (*INTERNAL, ROW, REL, SEL))
        # --shard and --limit choose the rows to work on; an output that has results keeps every row it has,
        # so then the whole manifest is read and the choice is column SEL (else only the chosen rows are read)
        self.whole = whole = (shard is not None or limit is not None) and self._has_results()
        if self.path_keyed:  # DuckDB reads, resolves (Python only for odd cells) and keys in one statement
            self._register_udfs()
            base = _sql_text(self.base)
            chosen = [f"{ROW} % {shard[1]} = {shard[0]}"] if shard else []
            if limit is not None:
                chosen.append(f"{ROW} // {shard[1]} < {max(0, limit)}" if shard else f"{ROW} < {max(0, limit)}")
            sel = " AND ".join(chosen) or "true"
            where = f"WHERE {ROW} % {shard[1]} = {shard[0]}" if shard and not whole else ""
            top = f"ORDER BY {ROW} LIMIT {max(0, limit)}" if limit is not None and not whole else ""
            src = self._reader(self.manifest)
            resolved = (
                (f"SELECT *, {abspath_sql('path', base)} AS {ABSPATH}, {relative_sql('path')} AS {REL} FROM {src}")
                if "path" in self.names
                else f"SELECT *, '' AS {ABSPATH}, false AS {REL} FROM {src}"
            )
            # row_number over the scan, after the per-row work: DuckDB keeps the file's order (insertion order)
            key = key_sql(ABSPATH, self.names)
            keyed = f"SELECT *, {key} AS {RID}, row_number() OVER () - 1 AS {ROW} FROM ({resolved})"
            sel = sel if whole else "true"
            self._sql(f"CREATE TABLE m AS SELECT *, {sel} AS {SEL} FROM ({keyed}) {where} {top}", self.manifest)
        else:
            self._ingest_batches(shard, limit, whole)
        self.rows = self.con.execute(f"SELECT count(*) FROM m WHERE {SEL}").fetchone()[0]
        if self.rows == 0 and shard is None and limit is None:
            raise UsageError(f"manifest {self.manifest} has a header but no rows; nothing to do.")
        self.con.execute(
            f"CREATE TABLE firsts AS SELECT {RID}, min({ROW}) AS {ROW}, bool_or({SEL}) AS {SEL} FROM m GROUP BY {RID}"
        )
        return self.rows

    def _has_results(self) -> bool:
        """Whether this output has saved results (parts, or a finished output a rerun builds on)."""
        store = self.store
        if store.part_files():
            return True
        return not store.overwrite and store.output.exists() and store.sidecar().exists()

    def _header(self, path: Path) -> list[str]:
        if table_format(path) != "dataset" and path.stat().st_size == 0:
            raise UsageError(f"manifest {path} is empty; it needs a header with a 'path' column and one row per video.")
        import duckdb

        try:
            names = [r[0] for r in self.con.execute(f"DESCRIBE SELECT * FROM {reader_sql(path)}").fetchall()]
        except duckdb.Error as exc:
            if "unicode" in str(exc).lower():
                raise UsageError(f"manifest {path} is not UTF-8 text; re-save it as UTF-8 CSV.") from None
            if "empty" in str(exc).lower() or (path.is_file() and path.stat().st_size == 0):
                raise UsageError(
                    f"manifest {path} is empty; it needs a header with a 'path' column and one row per video."
                ) from None
            raise UsageError(
                f"manifest {path} could not be read as {table_format(path)} ({first_line(exc)}); check the file."
            ) from None
        given = csv_header(path) if table_format(path) == "csv" else names
        if table_format(path) == "csv" and not any(c.strip() for c in given):
            raise UsageError(f"manifest {path} is empty; it needs a header with a 'path' column and one row per video.")
        if len(given) == len(names) and len(set(given)) == len(given) and given != names:
            # DuckDB renames blank header cells (`column1`); the table keeps the names its file gives
            cols = ", ".join(f"{_ident(d)} AS {_ident(g)}" for d, g in zip(names, given, strict=False))
            self._readers[str(path)] = f"(SELECT {cols} FROM {reader_sql(path)})"
            return given
        return names

    def _reader(self, path: Path) -> str:
        """The SQL that reads a table with the column names `_header` gave."""
        return self._readers.get(str(path)) or reader_sql(path)

    def _sql(self, sql: str, path: Path) -> None:
        """A statement reading `path`; what DuckDB cannot parse is one sentence naming the file."""
        import duckdb

        try:
            self.con.execute(sql)
        except duckdb.Error as exc:
            if "unicode" in str(exc).lower() or "utf" in str(exc).lower():
                raise UsageError(f"manifest {path} is not UTF-8 text; re-save it as UTF-8 CSV.") from None
            raise UsageError(
                f"{path} could not be read as {table_format(path)} ({first_line(exc)}); check the file."
            ) from None

    def _register_udfs(self) -> None:
        BOOLEAN, VARCHAR = _types("BOOLEAN", "VARCHAR")

        from .manifest import is_relative, resolve_path

        self.con.create_function(
            "vidcap_resolve",
            lambda p, base: resolve_path(p, base),
            [VARCHAR, VARCHAR],
            VARCHAR,
            side_effects=False,
        )
        self.con.create_function("vidcap_relative", is_relative, [VARCHAR], BOOLEAN, side_effects=False)

    def _ingest_batches(self, shard, limit, whole: bool) -> None:
        """A stage with its own row key (tags: path and caption): Arrow batches, the key one row at a time."""
        base = self.base
        seen = kept = chosen = 0
        for batch in manifest_batches(self.manifest):
            n = batch.num_rows
            pick = np.ones(n, dtype=bool)
            if shard:
                i, cnt = shard
                pick = (np.arange(seen, seen + n) % cnt) == i
            if limit is not None:
                pick &= np.cumsum(pick) + chosen <= max(0, limit)
            chosen += int(pick.sum())
            seen += n
            tbl = pa.Table.from_batches([batch])
            if not whole:
                tbl, pick = tbl.filter(pa.array(pick)), pick[pick]
            if tbl.num_rows:
                self._add(tbl, base, kept, pick)
                kept += tbl.num_rows
            if limit is not None and chosen >= limit and not whole:
                break
        if kept == 0 and shard is None and limit is None:
            raise UsageError(f"manifest {self.manifest} has a header but no rows; nothing to do.")

    def _add(self, tbl: pa.Table, base: str, start: int, sel=None) -> None:
        n = tbl.num_rows
        if "path" in tbl.column_names:
            abspath, rel = resolve_batch(tbl["path"].combine_chunks(), base)
        else:
            abspath, rel = pa.array([""] * n, pa.string()), pa.array([False] * n)
        tbl = tbl.append_column(ABSPATH, abspath).append_column(REL, rel)
        tbl = tbl.append_column(ROW, pa.array(np.arange(start, start + n, dtype=np.int64)))
        tbl = tbl.append_column(SEL, pa.array(np.ones(n, dtype=bool) if sel is None else sel))
        if self.path_keyed:
            key = f"{key_sql(ABSPATH, tbl.column_names)} AS {RID}"
        else:  # a stage's own key (tags: path and caption) is its Python function, one row at a time
            tbl = tbl.append_column(RID, pa.array([self.stage.row_key(r) for r in tbl.to_pylist()], pa.string()))
            key = RID
        sql = f"SELECT * EXCLUDE ({RID}), {key} FROM tbl" if not self.path_keyed else f"SELECT *, {key} FROM tbl"
        if start == 0:
            self.con.execute(f"CREATE TABLE m AS {sql}")
        else:
            self.con.execute(f"INSERT INTO m {sql}")

    def refresh(self, prior: bool = False, full: bool = False) -> None:
        """(Re)build table `best` from every saved result: the parts as they are now and, once loaded
        (prior=True, the first call), a finished output by the same settings. Planning reads only the id,
        status and error columns; `full` (the merge) reads the result columns too. A part whose data a
        crash or a disk damaged is moved aside (its rows are done again)."""
        import duckdb

        if prior:
            self._load_prior()
        try:
            self._refresh(full)
        except duckdb.Error:
            if not self._quarantine():
                raise
            self._refresh(full)

    def _quarantine(self) -> bool:
        """Move aside every part that does not read whole; True if there was one."""
        import pyarrow.parquet as pq

        moved = False
        for part in self.store.part_files():
            local = self._fetched.get(str(part), str(part))
            try:
                pq.read_table(local)
            except Exception:
                aside = part.with_name(part.name + ".damaged")
                part.rename(aside)
                self._fetched.pop(str(part), None)
                print(
                    f"vidcap: part {part.name} is damaged; moved it to {aside.name} and doing its rows again.",
                    file=sys.stderr,
                )
                moved = True
        return moved

    def _refresh(self, full: bool) -> None:
        files = self.part_paths()
        head = [RID, "status", "error"]
        parts = (
            f"SELECT NULL::VARCHAR AS {RID}, NULL::VARCHAR AS status, NULL::VARCHAR AS error, 0::BIGINT AS _seq "
            "WHERE false"
        )
        if files:
            self.con.execute(
                "CREATE OR REPLACE TABLE pfiles AS SELECT unnest($1) AS filename, generate_subscripts($1, 1) AS fidx",
                [files],
            )
            listed = "[" + ", ".join(f"'{_sql_text(f)}'" for f in files) + "]"
            parts = (
                f"SELECT p.* EXCLUDE (filename, file_row_number), (f.fidx << 32) + p.file_row_number AS _seq "
                f"FROM read_parquet({listed}, union_by_name=true, filename=true, file_row_number=true) p "
                f"JOIN pfiles f USING (filename)"
            )
        sources = [parts] + (["SELECT * FROM prior"] if self._has_prior else [])
        self.con.execute("CREATE OR REPLACE VIEW res AS " + " UNION ALL BY NAME ".join(sources))
        have = {r[0] for r in self.con.execute("DESCRIBE res").fetchall()}
        self.res_cols = [c for c in self.stage.columns if c in have]
        stamps = [c for c in ("file_size", "file_mtime") if c in have]  # the file a result was made from
        self.res_cols += [c for c in stamps if c not in self.res_cols]
        cols = ", ".join(_ident(c) for c in head + (self.res_cols if full else stamps))
        retry = ", ".join(f"'{c}'" for c in sorted(RETRYABLE))
        # materialised: the plan, the completeness check, the counts and the merge each read it
        self.con.execute(f"""CREATE OR REPLACE TABLE best AS SELECT * EXCLUDE (_rn, _seq),
            coalesce(status, '') <> 'ok' AND trim(split_part(coalesce(error, ''), ':', 1)) IN ({retry}) AS redo
            FROM (SELECT {cols}, _seq, row_number() OVER (PARTITION BY {RID} ORDER BY coalesce(status = 'ok', false)
            DESC, _seq DESC) AS _rn FROM res WHERE {RID} IN (SELECT {RID} FROM firsts) AND status IS NOT NULL)
            WHERE _rn = 1""")  # a saved row with no status is no result: its row is done again

    _has_prior = False
    whole = False  # ingest read the whole manifest (--shard/--limit over an output that has results)
    _full = False
    _json = False

    def _load_prior(self) -> None:
        """A finished output by the same settings (and the --failed-out file its run wrote): its rows keyed
        as the stage keys them now."""
        store = self.store
        if store.overwrite or not store.output.exists() or not store.sidecar().exists():
            return
        tables = [store.output]
        failed = read_json(store.sidecar()).get("summary", {}).get("failed_out")
        if failed and as_path(failed).exists():
            tables.append(as_path(failed))
        done = 0
        for i, table in enumerate(tables):
            try:
                done = self._load_table(table, f"prior{i}", done)
            except UsageError as exc:  # e.g. a dataset folder that lost a part: its rows are done again
                print(
                    f"vidcap: {str(exc).split('; ')[0]}; its rows are done again and it is written anew.",
                    file=sys.stderr,
                )
        self._has_prior = done > 0

    def _load_table(self, table, name: str, start: int) -> int:
        """Add one finished table's results to table `prior`; returns the rows loaded so far."""
        from .manifest import column_plan

        out, out_base = self._local_copy(table, name)
        results = [*self.stage.columns, "status", "error", "file_size", "file_mtime"]
        if self.path_keyed:
            names = self._header(out)
            if "path" not in names or not {"status", "error"} <= set(names):
                return start
            if self.stage.expands:
                return self._load_expanded(out, out_base, names, start)
            cols = ", ".join(_ident(c) for c in names if c in results)
            key = key_sql(abspath_sql("path", _sql_text(out_base)), names)
            body = (
                f"SELECT {key} AS {RID}, {cols}, row_number() OVER () + {start} - (1::BIGINT << 62) AS _seq "
                f"FROM {self._reader(out)}"
            )
            self._sql(f"CREATE TABLE prior AS {body}" if start == 0 else f"INSERT INTO prior BY NAME {body}", out)
            return self.con.execute("SELECT count(*) FROM prior").fetchone()[0]
        back = {new: old for old, new in column_plan([c for c in self.names if c not in INTERNAL], results).items()}
        done = start
        for batch in manifest_batches(out):
            names = batch.schema.names
            if "path" not in names or not {"status", "error"} <= set(names):
                return done
            tbl = pa.Table.from_batches([batch])
            inputs = tbl.select([c for c in names if c not in results])  # under the names the stage keys them by
            inputs = inputs.rename_columns([back.get(c, c) for c in inputs.column_names])
            self._add_prior(inputs, tbl.select([c for c in names if c in results]), out_base, done)
            done += tbl.num_rows
        return done

    def _load_expanded(self, out: Path, base: str, names: list[str], start: int) -> int:
        """A finished output of a stage whose result is a list (`Stage.expands`: one output row per item),
        gathered back into one result per input row, keyed from the output's input columns only (its own
        start_time/end_time are results, not the input's range)."""
        from .manifest import column_plan

        ex, fields = self.stage.expands, self.stage.expand_fields
        order = next(iter(fields))
        if order not in names:
            return start
        results = [c for c in (*self.stage.columns, "status", "error", "file_size", "file_mtime") if c != ex]
        inputs = [c for c in self.names if c not in INTERNAL]
        plan = column_plan(inputs, [*fields, *results])
        keyed = ["path", *(c for c in RANGE_COLUMNS if c in inputs and plan.get(c, c) in names)]
        inner = [f"{_ident(plan.get(c, c))} AS {_ident(c)}" for c in keyed]
        inner += [f"{_ident(c)} AS {_ident('_r_' + c)}" for c in names if c in fields or c in results]

        def r(c: str) -> str:
            return _ident("_r_" + c)

        struct = ", ".join(f"{_ident(f)} := TRY_CAST({r(f)} AS {t})" for f, t in fields.items())
        items = f"list(struct_pack({struct}) ORDER BY TRY_CAST({r(order)} AS {fields[order]}))"
        agg = [
            f"CASE WHEN count({r(order)}) = 0 THEN NULL ELSE to_json({items} FILTER (WHERE {r(order)} IS NOT NULL))::VARCHAR END AS {_ident(ex)}"
        ]
        agg += [f"any_value({r(c)}) AS {_ident(c)}" for c in results if c in names]
        key = key_sql(abspath_sql("path", _sql_text(base)), keyed)
        body = (
            f"SELECT {key} AS {RID}, {', '.join(agg)}, min(_n) + {start} - (1::BIGINT << 62) AS _seq FROM "
            f"(SELECT {', '.join(inner)}, row_number() OVER () AS _n FROM {self._reader(out)}) GROUP BY 1"
        )
        self._sql(f"CREATE TABLE prior AS {body}" if start == 0 else f"INSERT INTO prior BY NAME {body}", out)
        return self.con.execute(f"SELECT coalesce(max(_seq) + (1::BIGINT << 62), {start}) FROM prior").fetchone()[0]

    def _add_prior(self, inputs: pa.Table, results: pa.Table, base: str, start: int) -> None:
        """A batch of a finished output (a stage with its own key): its results keyed from its inputs."""
        abspath, _ = resolve_batch(inputs["path"].combine_chunks(), base)
        seq = pa.array(np.arange(start, start + inputs.num_rows, dtype=np.int64) - (1 << 62))
        rows = inputs.append_column(ABSPATH, abspath).to_pylist()
        body = results.append_column("_seq", seq)
        body = body.append_column(RID, pa.array([self.stage.row_key(r) for r in rows], pa.string()))
        self.con.execute(
            ("CREATE TABLE prior AS " if start == 0 else "INSERT INTO prior BY NAME ") + "SELECT * FROM body"
        )

    def plan(self, check_files: bool = False, retry_failed: bool = False) -> dict:
        """Counts of the plan and table `todo`: the first row of each id with no saved result, or whose
        best result is to be redone (with check_files: also when its file's size or mtime changed since;
        with retry_failed: every failed row, whatever its error)."""
        if self.whole:  # rows --shard/--limit left out stay in the output only where they have a result
            kept = f"{SEL} OR {RID} IN (SELECT {RID} FROM best)"
            self.con.execute(f"DELETE FROM m WHERE NOT ({kept})")
            self.con.execute(f"DELETE FROM firsts WHERE NOT ({kept})")
            self.rows = self.con.execute("SELECT count(*) FROM m").fetchone()[0]
        redo = "coalesce({}status, '') <> 'ok'" if retry_failed else "{}redo"
        done = f"SELECT {RID} FROM best WHERE NOT {redo.format('')}"
        if check_files and {"file_size", "file_mtime"} <= self._best_cols():

            def changed(path, size, mtime) -> bool:
                now = file_stamp(path)
                return now[0] is not None and (now[0] != size or abs(now[1] - mtime) > 1e-6)

            BIGINT, BOOLEAN, DOUBLE, VARCHAR = _types("BIGINT", "BOOLEAN", "DOUBLE", "VARCHAR")
            self.con.create_function("vidcap_changed", changed, [VARCHAR, BIGINT, DOUBLE], BOOLEAN, side_effects=True)
            done = (
                f"SELECT b.{RID} FROM best b JOIN firsts f USING ({RID}) JOIN m ON m.{ROW} = f.{ROW} "
                f"WHERE NOT {redo.format('b.')} AND (b.file_size IS NULL OR NOT vidcap_changed(m.{ABSPATH}, "
                f"b.file_size::BIGINT, b.file_mtime::DOUBLE))"
            )
        self.con.execute(f"""CREATE OR REPLACE TABLE todo AS SELECT {ROW} FROM firsts
            ANTI JOIN ({done}) USING ({RID}) WHERE {SEL} ORDER BY {ROW}""")
        unique = self.con.execute("SELECT count(*) FROM firsts").fetchone()[0]
        todo = self.con.execute("SELECT count(*) FROM todo").fetchone()[0]
        return {
            "rows": self.rows,
            "unique": unique,
            "duplicates": self.rows - unique,
            "todo": todo,
            "skipped": unique - todo,
        }

    def _best_cols(self) -> set:
        return {r[0] for r in self.con.execute("DESCRIBE best").fetchall()}

    def missing(self) -> tuple[int, str]:
        """Rows of the manifest with no saved result (as table `todo`), and the first one's path."""
        self.con.execute(
            f"CREATE OR REPLACE TABLE todo AS SELECT {ROW} FROM firsts ANTI JOIN best USING ({RID}) ORDER BY {ROW}"
        )
        n = self.con.execute("SELECT count(*) FROM todo").fetchone()[0]
        first = ""
        if n:
            col = "path" if "path" in self.names else ABSPATH
            first = self.con.execute(f'SELECT "{col}" FROM m WHERE {ROW} = (SELECT min({ROW}) FROM todo)').fetchone()[0]
        return n, str(first)

    def source(self) -> LedgerRows:
        """The rows of table `todo` as row dicts, read lazily in manifest order."""
        n = self.con.execute("SELECT count(*) FROM todo").fetchone()[0]
        cur = self.con.cursor()  # read by the feeder thread while this one records results
        rel = cur.sql(f"SELECT m.* EXCLUDE ({ROW}, {REL}, {SEL}) FROM m SEMI JOIN todo USING ({ROW}) ORDER BY m.{ROW}")
        reader = getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader  # DuckDB 2 / 1.x
        return LedgerRows(cur, reader(4096), n)

    def counts(self) -> dict:
        """ok rows and failed rows by error code, over the manifest's rows (one per id)."""
        got = self.con.execute("""SELECT coalesce(status, '') = 'ok' AS ok,
            trim(split_part(coalesce(error, ''), ':', 1)) AS code, count(*) FROM best GROUP BY ALL""").fetchall()
        return {"ok": sum(n for ok, _, n in got if ok), "failed": {code: n for ok, code, n in got if not ok}}

    def finish(self) -> dict:
        """Every result column in `best` for the merge, then the run-level work: exact duplicate captions
        (a stage with text and flags columns: the `duplicate` flag, as `checks.add_duplicate_flags` gives
        it, with the same Python functions on each text) and the stage's own `finish` step."""
        self.refresh(full=True)
        self._full = True
        have = {r[0] for r in self.con.execute("DESCRIBE best").fetchall()}
        for c in self.stage.columns:  # no saved row has it (no rows, or every one failed): the column still comes
            if c not in have:
                kind = SQL_TYPES.get(self.stage.dtypes.get(c, ""), "VARCHAR")
                self.con.execute(f"ALTER TABLE best ADD COLUMN {_ident(c)} {kind}")
        self.res_cols = [*self.stage.columns, *(c for c in self.res_cols if c not in self.stage.columns)]
        flagged = {"text", "flags"} <= set(self.res_cols)
        if flagged:
            self._duplicates()
        extra = self.stage.finish(Results(self))
        return {"flags": self._flag_counts(), **extra} if flagged else extra

    def _duplicates(self) -> None:
        from .checks import DUPLICATE, DUPLICATE_MIN_ROWS, _norm, is_empty, join_flags, parse_flags

        BOOLEAN, VARCHAR = _types("BOOLEAN", "VARCHAR")
        self.con.create_function(
            "vidcap_norm",
            lambda t: None if is_empty(t) else _norm(t),
            [VARCHAR],
            VARCHAR,
            null_handling="special",
            side_effects=False,
        )

        def flags(cell, dup: bool) -> str:
            return join_flags([f for f in parse_flags(cell) if f != DUPLICATE] + ([DUPLICATE] if dup else []))

        self.con.create_function(
            "vidcap_flags", flags, [VARCHAR, BOOLEAN], VARCHAR, null_handling="special", side_effects=False
        )
        self.con.execute(f"""CREATE OR REPLACE TABLE dup AS SELECT {RID} FROM (SELECT {RID},
            vidcap_norm(text::VARCHAR) AS k FROM best WHERE status = 'ok') n SEMI JOIN (SELECT k FROM (SELECT
            vidcap_norm(text::VARCHAR) AS k FROM best WHERE status = 'ok') WHERE k IS NOT NULL GROUP BY k
            HAVING count(*) >= {DUPLICATE_MIN_ROWS}) d USING (k)""")
        self.con.execute(f"""CREATE OR REPLACE TABLE best AS SELECT * REPLACE (CASE
            WHEN {RID} IN (SELECT {RID} FROM dup) THEN vidcap_flags(flags::VARCHAR, true)
            WHEN contains(coalesce(flags::VARCHAR, ''), '{DUPLICATE}') THEN vidcap_flags(flags::VARCHAR, false)
            ELSE coalesce(flags::VARCHAR, '') END AS flags) FROM best""")

    def _flag_counts(self) -> dict:
        """Rows per caption flag, as `checks.flag_counts` gives them."""
        from .checks import FLAGS, parse_flags

        counts = {f: 0 for f in FLAGS}
        flagged = 0
        for cell, n in self.con.execute("SELECT flags, count(*) FROM best GROUP BY flags").fetchall():
            got = parse_flags(cell)
            flagged += n if got else 0
            for f in got:
                counts[f] = counts.get(f, 0) + n
        counts["flagged"] = flagged
        return counts

    # -- the merge -----------------------------------------------------------------------------------
    def publish(self, summary: dict, failed_out) -> None:
        """The output (and --failed-out) written by DuckDB straight from the ledger, atomically. The sidecar
        (naming --failed-out) is written before either, so a file at --failed-out is always one vidcap
        wrote."""
        store = self.store
        rebase = folder(store.output) != self.base
        ok_only = ""
        if failed_out is not None:
            summary["failed_out"] = str(failed_out)
            ok_only = "b.status = 'ok'"

        def write(meta, before_rename):
            if failed_out is not None:
                self._write(as_path(failed_out), "coalesce(b.status, '') <> 'ok'", rebase)
            self._write(store.output, ok_only, rebase, meta, before_rename)
            self.close()  # the ledger lives in the parts folder, which goes next

        store.publish(summary, write)

    def _write(self, path, where: str, rebase: bool, meta=None, before_rename=None) -> None:
        """One output file (DuckDB's COPY to a temp name, renamed into place; a remote one uploaded whole) or
        dataset folder, atomically."""
        fmt = table_format(path)
        if fmt == "dataset":
            on_part = lambda: fault_point("dataset_part")  # noqa: E731
            self.write(str(path), fmt, where, rebase, meta=meta, before_rename=before_rename, on_part=on_part)
            return
        if is_remote(path):
            local = self.work / f"out-{path.name}"
            self.write(str(local), fmt, where, rebase, meta=meta)
            put_file(path, str(local), before_rename)
            return
        atomic_local(path, lambda tmp: self.write(tmp, fmt, where, rebase, meta=meta), before_rename, fresh=True)

    def select_sql(self, rebase: bool, csv: bool) -> str:
        """The output's rows in manifest order: every input column (renamed where a result column takes its
        name), the result columns, status, error."""
        from .manifest import column_plan

        inputs = [c for c in self.names if c not in INTERNAL]
        ex, fields = self.stage.expands, self.stage.expand_fields
        tail = [f for c in [*self.res_cols, "status", "error"] for f in (fields if c == ex else [c])]
        plan = column_plan(inputs, tail)
        types = {r[0]: r[1] for r in self.con.execute("DESCRIBE best").fetchall()}
        dtypes = {**self.stage.dtypes, **(FILE_DTYPES if self.stage.reads_files else {})}
        declared = {c: SQL_TYPES[t] for c, t in dtypes.items() if t in SQL_TYPES}
        mtypes = {r[0]: r[1] for r in self.con.execute("DESCRIBE m").fetchall()}
        cols = []
        for c in inputs:
            expr = f"m.{_ident(c)}"
            if c == "path" and rebase:
                expr = f"CASE WHEN m.{REL} AND m.{ABSPATH} <> '' THEN m.{ABSPATH} ELSE m.\"path\" END"
            if csv and mtypes.get(c) == "VARCHAR":
                expr = f"nullif({expr}, '')"  # an empty text cell is written bare, as a NULL is
            cols.append(f"{expr} AS {_ident(plan.get(c, c))}")
        for c in tail:
            if ex and c in fields:
                cols.append(f"struct_extract(u.s, '{c}') AS {_ident(c)}")
                continue
            expr = f"b.{_ident(c)}"
            kind = types.get(c, "")
            if csv and kind.endswith("[]"):  # CSV has no list type: a JSON array, spaced as json.dumps spaces it
                numbers = kind[:-2] in ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UBIGINT", "UINTEGER")
                expr = f"{expr}::VARCHAR" if numbers else f"vidcap_json({expr}::VARCHAR[])"
            elif csv and kind == "VARCHAR":
                expr = f"nullif({expr}, '')"
            elif c in declared and kind != declared[c]:  # a column whose every saved value was null, or a
                expr = f"TRY_CAST({expr} AS {declared[c]})"  # part that typed it otherwise: the declared type
            cols.append(f"{expr} AS {_ident(c)}")
        body = f"SELECT {', '.join(cols)} FROM m LEFT JOIN best b USING ({RID})"
        if not ex:
            return f"{body} {{where}} ORDER BY m.{ROW}"
        # one row per item of the result's JSON list; a row with no items (failed) is one row of nulls
        schema = json.dumps([{f: t for f, t in fields.items()}])
        schema = _sql_text(schema).replace("{", "{{").replace("}", "}}")  # the text goes through str.format
        items = f"coalesce(nullif(from_json(b.{_ident(ex)}, '{schema}'), []), [NULL])"
        each = f"SELECT unnest(l) AS s, generate_subscripts(l, 1) AS k FROM (SELECT {items} AS l)"
        return f"{body} CROSS JOIN LATERAL ({each}) u {{where}} ORDER BY m.{ROW}, u.k"

    def write(
        self, target: str, fmt: str, where: str = "", rebase: bool = False, meta: dict | None = None, **dataset_args
    ) -> None:
        """The output's rows to `target`: a CSV or Parquet file by DuckDB's COPY, or (fmt "dataset") Arrow
        batches streamed into `dataset.write` (dataset_args: its meta, before_rename and on_part)."""
        if not self._full:
            self.finish()
        if fmt == "csv" and not self._json:
            import duckdb

            (VARCHAR,) = _types("VARCHAR")
            self.con.create_function(
                "vidcap_json",
                lambda v: None if v is None else json.dumps(list(v), ensure_ascii=False),
                [duckdb.list_type(VARCHAR)],
                VARCHAR,
                null_handling="special",
                side_effects=False,
            )
            self._json = True
        sql = self.select_sql(rebase, fmt == "csv").format(where=f"WHERE {where}" if where else "")
        if fmt == "dataset":
            from . import dataset

            rel = self.con.sql(sql)
            reader = (getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader)(BATCH_ROWS)
            dataset.write(target, reader, reader.schema, meta=meta, **dataset_args)
            return
        # The bytes Python's csv writes: CRLF line ends (RFC 4180; a bare \r in a cell is then quoted too) and no
        # comment character (DuckDB would quote every cell holding a '#')
        csv = "FORMAT csv, HEADER true, NEW_LINE '\\r\\n', COMMENT ''"
        opts = csv if fmt == "csv" else "FORMAT parquet, COMPRESSION zstd"
        if fmt == "parquet" and meta is not None:  # the run's record inside the file, as `join` reads it back
            opts += f", KV_METADATA {{vidcap: '{_sql_text(json.dumps(meta, default=str))}'}}"
        self.con.execute(f"COPY ({sql}) TO '{_sql_text(target)}' ({opts})")


def _types(*names: str) -> list:
    """DuckDB's SQL type objects for Python UDFs (`duckdb.sqltypes` from 2.0, `duckdb.typing` before)."""
    import importlib

    try:
        mod = importlib.import_module("duckdb.sqltypes")
    except ImportError:
        mod = importlib.import_module("duckdb.typing")
    return [getattr(mod, n) for n in names]


def folder(path) -> str:
    """The folder a table's relative paths resolve against (as `Ledger.base` gives it)."""
    return str(path.parent) if is_remote(path) else str(Path(os.path.abspath(path)).parent)


def csv_header(path: Path) -> list[str]:
    """A CSV file's header cells as written (RFC 4180 quoting); [] when it cannot be read as UTF-8."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:  # a byte-order mark is no part of a name
            return next(csv.reader(fh), [])
    except (OSError, UnicodeDecodeError, csv.Error):
        return []


def reader_sql(path: Path) -> str:
    """DuckDB's reader for a CSV (every cell as text, RFC 4180 quoting) or Parquet file."""
    p = _sql_text(str(path))
    fmt = table_format(path)
    if fmt == "dataset":  # the parts its marker lists, in order (DuckDB keeps a list's order)
        from . import dataset

        listed = ", ".join(f"'{_sql_text(str(f))}'" for f in dataset.files(path))
        return f"read_parquet([{listed}])"
    if fmt == "parquet":
        return f"read_parquet('{p}')"
    return f"read_csv('{p}', all_varchar=true, header=true, delim=',', quote='\"', escape='\"')"


def key_sql(abspath: str, names: list[str]) -> str:
    """`manifest.row_key_path` in SQL: the path's key, plus `#t=START,END` on a range row of a manifest with
    range columns (each cell read by manifest.TIME_TEXT, written as Python's repr, which DuckDB's DOUBLE to
    VARCHAR cast matches: tests/test_ranges.py checks the two agree)."""
    key = f"left(sha1({abspath}), 20)"
    if not set(RANGE_COLUMNS) <= set(names):
        return key  # a whole-file manifest: the key as it always was
    t = []
    for col in RANGE_COLUMNS:  # each cell parsed and written once (nullif: not a finite number is NULL)
        d = f"try_cast(regexp_extract({_ident(col)}::VARCHAR, '{_sql_text(TIME_TEXT)}', 1) AS DOUBLE)"
        t.append(f"nullif(nullif(nullif(nullif(({d} + 0.0)::VARCHAR, 'inf'), '-inf'), 'nan'), '-nan')")
    return f"{key} || coalesce('#t=' || {t[0]} || ',' || {t[1]}, '')"  # no range: the NULL drops out


def abspath_sql(col: str, base: str) -> str:
    """`manifest.resolve_path` in SQL: clean cells by string ops, the rest by the Python function."""
    c = f'"{col}"::VARCHAR'
    return (
        f"CASE WHEN {c} IS NULL OR {c} = '' THEN '' WHEN regexp_matches({c}, '{_NEEDS_PYTHON}') "
        f"THEN vidcap_resolve({c}, '{base}') WHEN starts_with({c}, '/') THEN {c} "
        f"ELSE '{base.rstrip('/')}/' || {c} END"
    )


def relative_sql(col: str) -> str:
    c = f'"{col}"::VARCHAR'
    return (
        f"CASE WHEN {c} IS NULL OR {c} = '' THEN false WHEN regexp_matches({c}, '{_NEEDS_PYTHON}') "
        f"THEN vidcap_relative({c}) ELSE NOT starts_with({c}, '/') END"
    )


def _ident(name: str) -> str:
    """A column name as a quoted SQL identifier (any name a user's table may have)."""
    return '"' + str(name).replace('"', '""') + '"'


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


class LedgerRows(ListSource[dict]):
    """Rows to do, handed to the runner's Feeder, read from DuckDB a batch at a time."""

    def __init__(self, cursor, reader, total: int):
        super().__init__(total=total)
        self.reader, self.cursor = reader, cursor  # the cursor lives as long as its reader

    def more(self) -> list[dict] | None:
        try:
            return self.reader.read_next_batch().to_pylist()
        except StopIteration:
            return None


class Results:
    """Table `best` as a stage's run-level step sees it (`stages.base.ResultTable`)."""

    def __init__(self, led: Ledger):
        self.led = led

    @property
    def columns(self) -> list[str]:
        return [r[0] for r in self.led.con.execute("DESCRIBE best").fetchall()]

    def read(self, columns: list[str], where: str = "") -> pa.Table:
        cols = ", ".join(_ident(c) for c in [RID, *columns])
        rel = self.led.con.sql(f"SELECT {cols} FROM best {'WHERE ' + where if where else ''}")
        return (getattr(rel, "to_arrow_table", None) or rel.arrow)()  # DuckDB 2 / 1.x

    def count(self, where: str) -> int:
        return self.led.con.execute(f"SELECT count(*) FROM best WHERE {where}").fetchone()[0]

    def update(self, table: pa.Table) -> None:
        con, have = self.led.con, set(self.columns)
        con.register("vidcap_update", table)
        new = [c for c in table.column_names if c != RID]
        cols = [
            f"CASE WHEN u.{RID} IS NULL THEN b.{_ident(c)} ELSE u.{_ident(c)} END AS {_ident(c)}"
            if c in new
            else f"b.{_ident(c)}"
            for c in self.columns
        ]
        cols += [f"u.{_ident(c)}" for c in new if c not in have]
        con.execute(
            f"CREATE OR REPLACE TABLE best AS SELECT {', '.join(cols)} FROM best b "
            f"LEFT JOIN vidcap_update u USING ({RID})"
        )
        con.unregister("vidcap_update")
        self.led.res_cols += [c for c in new if c not in self.led.res_cols]
