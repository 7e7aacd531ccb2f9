"""Every run's bookkeeping, for 10 rows and for 100M: DuckDB over the manifest (read once into a table) and
the saved results (parts, or a finished output by the same settings, read with only the columns a step
needs). What is done, what to redo, the run-level step and the merge are SQL, so memory is bounded by
DuckDB's limit (it spills to the ledger's folder), not by the rows. Row ids are the stage's row key, computed
in SQL (tables.key_sql) or, for a stage with its own key (tags), by its Python `row_key` called from SQL.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from . import dataset
from .errors import RETRYABLE, UsageError
from .faults import fault_point
from .manifest import (
    ABSPATH,
    INTERNAL,
    RANGE_COLUMNS,
    RID,
    check_columns,
    column_plan,
    table_format,
)
from .parts import FILE_COLUMNS, FILE_DTYPES
from .rows import BatchSource
from .stages.base import Stage
from .storage import as_path, get_file, read_json
from .tables import (
    DTYPES,
    copy_options,
    copy_to,
    duck_connect,
    duck_run,
    duck_table,
    folder,
    key_sql,
    local_copy,
    resolved_sql,
    sql_ident,
    sql_text,
)

ROW = "_vidcap_row"  # the row's position among the selected manifest rows (the output's order)
REL = "_vidcap_rel"  # the row's path is relative (written absolute when the output lives elsewhere)
SEL = "_vidcap_sel"  # the row is one --shard/--limit chose to work on (the output keeps the others it has)
SQL_TYPES = {"Int64": "BIGINT", "float64": "DOUBLE", "list[int64]": "BIGINT[]"}  # declared column types in SQL
BATCH_ROWS = 65_536


# -- the ledger ----------------------------------------------------------------------------------------
class Ledger:
    """One run's bookkeeping in DuckDB: table `m` (the selected manifest rows), view `res` (every saved
    result row) and table `best` (one per row id: an ok row wins, else the latest; `redo` as
    `parts.needs_redo`)."""

    whole = False  # ingest read the whole manifest (--shard/--limit over an output that has results)
    todo = 0  # rows the plan handed out
    _has_prior = False
    _udfs = 0  # row-key functions registered (a stage with its own key: one per table read)

    def __init__(self, stage, manifest, store):
        self.stage, self.store = stage, store
        if store.remote:  # the ledger is local scratch whatever the output is
            self.work = Path(tempfile.mkdtemp(prefix="vidcap-ledger-"))
        else:
            for old in store.dir.glob(".ledger-*"):  # a killed run's ledger (we hold the lock)
                shutil.rmtree(old, ignore_errors=True)
            self.work = Path(tempfile.mkdtemp(prefix=".ledger-", dir=store.dir))
        self.con = duck_connect(self.work)
        self.manifest, self.base = local_copy(as_path(manifest), self.work, "manifest")
        self.path_keyed = type(stage).row_key is Stage.row_key  # the key is computed in SQL
        self.rows = 0
        self.names: list[str] = []
        self._fetched: dict[str, str] = {}  # remote part -> its local copy (a part never changes once written)

    def part_paths(self) -> list[str]:
        """Every saved part as a local file (remote parts are fetched once: a part never changes once
        written; one removed meanwhile is left out, its rows are redone)."""
        parts = self.store.part_files()
        if not self.store.remote:
            return [str(f) for f in parts]
        for f in parts:
            if str(f) not in self._fetched:
                local = self.work / "parts" / f.name
                local.parent.mkdir(exist_ok=True)
                try:
                    get_file(f, str(local))
                    self._fetched[str(f)] = str(local)
                except Exception:  # removed meanwhile: its rows are redone
                    pass
        return [self._fetched[str(f)] for f in parts if str(f) in self._fetched]

    def close(self) -> None:
        if self.con is not None:
            self.con.close()
            self.con = None
        shutil.rmtree(self.work, ignore_errors=True)

    def _schema(self, table: str) -> dict[str, str]:
        """A table's (or a SELECT's) columns and their SQL types."""
        return {r[0]: r[1] for r in self.con.execute(f"DESCRIBE {table}").fetchall()}

    def _count(self, sql: str) -> int:
        return self.con.execute(f"SELECT count(*) FROM {sql}").fetchone()[0]

    # -- plan ----------------------------------------------------------------------------------------
    def ingest(self, shard=None, limit=None) -> int:
        """Read the manifest once into table `m`: the selected rows (every `shard` row, the first `limit`),
        each with its position, resolved path, relative-path flag and row id."""
        self.names, reader = duck_table(self.con, self.manifest)
        check_columns(self.manifest, self.names, tuple(self.stage.required_columns), (*INTERNAL, ROW, REL, SEL))
        # --shard and --limit choose the rows to work on; an output that has results keeps every row it has,
        # so then the whole manifest is read and the choice is column SEL (else only the chosen rows are read)
        self.whole = whole = (shard is not None or limit is not None) and self._has_results()
        chosen = [f"{ROW} % {shard[1]} = {shard[0]}"] if shard else []
        if limit is not None:
            chosen.append(f"{ROW} // {shard[1]} < {max(0, limit)}" if shard else f"{ROW} < {max(0, limit)}")
        sel = " AND ".join(chosen) if whole and chosen else "true"
        where = f"WHERE {ROW} % {shard[1]} = {shard[0]}" if shard and not whole else ""
        top = f"ORDER BY {ROW} LIMIT {max(0, limit)}" if limit is not None and not whole else ""
        # the per-row work (resolve, key) runs in parallel over the scan; row_number after it keeps the
        # file's order (insertion order)
        keyed = self._keyed(reader, {n: n for n in self.names}, self.base)
        numbered = f"SELECT *, row_number() OVER () - 1 AS {ROW} FROM ({keyed})"
        duck_run(self.con, f"CREATE TABLE m AS SELECT *, {sel} AS {SEL} FROM ({numbered}) {where} {top}", self.manifest)
        self.rows = self._count(f"m WHERE {SEL}")
        if self.rows == 0 and shard is None and limit is None:
            raise UsageError(f"manifest {self.manifest} has a header but no rows; nothing to do.")
        return self.rows

    def _keyed(self, src: str, cols: dict[str, str], base: str) -> str:
        """SELECT every column of `src` with the row's resolved path (ABSPATH), relative-path flag (REL) and
        row id (RID). `cols`: the input columns the stage sees (its name -> the column of `src`); `base`: the
        folder relative paths resolve against."""
        resolved = resolved_sql(src, cols.get("path"), base, ABSPATH, REL)
        if self.path_keyed:
            key = key_sql(ABSPATH, list(cols), cols)
        else:  # the stage's own key (tags: path and caption): its Python function over each row as a dict
            fields = {**cols, ABSPATH: ABSPATH}
            row = f"struct_pack({', '.join(f'{sql_ident(k)} := {sql_ident(v)}' for k, v in fields.items())})"
            kind = self._schema(f"SELECT {row} AS r FROM ({resolved})")["r"]
            self._udfs += 1

            def keys(rows: pa.Array) -> pa.Array:
                return pa.array([self.stage.row_key(r) for r in rows.to_pylist()], pa.string())

            name = f"vidcap_key{self._udfs}"
            self.con.create_function(name, keys, [self.con.type(kind)], self.con.type("VARCHAR"), type="arrow")
            key = f"{name}({row})"
        return f"SELECT *, {key} AS {RID} FROM ({resolved})"

    def _has_results(self) -> bool:
        """Whether this output has saved results (parts, or a finished output a rerun builds on)."""
        store = self.store
        return bool(store.part_files()) or (not store.overwrite and store.output.exists() and store.sidecar().exists())

    def refresh(self, prior: bool = False, full: bool = False) -> None:
        """(Re)build table `best` from every saved result: the parts as they are now and, once loaded
        (prior=True, the first call), a finished output by the same settings. Planning reads only the id,
        status, error and file columns; `full` (the merge) reads the result columns too and keeps only the
        manifest's ids. A part whose data a crash or a disk damaged is moved aside (its rows are done again)."""
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
        moved = False
        for part in self.store.part_files():
            try:
                pq.read_table(self._fetched.get(str(part), str(part)))
            except Exception:
                aside = part.with_name(part.name + ".damaged")
                part.rename(aside)
                self._fetched.pop(str(part), None)
                print(f"vidcap: part {part.name} is damaged; moved it to {aside.name} and doing its rows again.",
                      file=sys.stderr)  # fmt: skip
                moved = True
        return moved

    def _refresh(self, full: bool) -> None:
        files = self.part_paths()
        parts = f"SELECT NULL::VARCHAR AS {RID}, NULL::VARCHAR AS status, NULL::VARCHAR AS error, 0::BIGINT AS _seq"
        parts += " WHERE false"
        if files:  # _seq: the order rows were saved in (files in `part_files` order, rows in file order)
            self.con.execute("CREATE OR REPLACE TABLE pfiles AS SELECT unnest($1) AS filename, "
                             "generate_subscripts($1, 1) AS fidx", [files])  # fmt: skip
            listed = "[" + ", ".join(f"'{sql_text(f)}'" for f in files) + "]"
            parts = (
                f"SELECT p.* EXCLUDE (filename, file_row_number), (f.fidx << 32) + p.file_row_number AS _seq "
                f"FROM read_parquet({listed}, union_by_name=true, filename=true, file_row_number=true) p "
                f"JOIN pfiles f USING (filename)"
            )
        sources = [parts] + (["SELECT * FROM prior"] if self._has_prior else [])
        self.con.execute("CREATE OR REPLACE VIEW res AS " + " UNION ALL BY NAME ".join(sources))
        have = self._schema("res")
        self.res_cols = [c for c in self.stage.columns if c in have]
        stamps = [c for c in FILE_COLUMNS if c in have]  # the file a result was made from
        self.res_cols += [c for c in stamps if c not in self.res_cols]
        cols = ", ".join(sql_ident(c) for c in [RID, "status", "error", *(self.res_cols if full else stamps)])
        retry = ", ".join(f"'{c}'" for c in sorted(RETRYABLE))
        mine = f" AND {RID} IN (SELECT {RID} FROM m)" if full else ""  # ids the manifest no longer has drop out
        # One row per id: most ids have one saved row, so only those with several go through the window
        # (ok wins, else the latest). A saved row with no status is no result: its row is done again.
        self.con.execute(f"""CREATE OR REPLACE TABLE best AS WITH r AS MATERIALIZED (SELECT {cols}, _seq FROM res
            WHERE status IS NOT NULL{mine}), d AS (SELECT {RID} FROM r GROUP BY {RID} HAVING count(*) > 1)
            SELECT * EXCLUDE (_seq), coalesce(status, '') <> 'ok' AND trim(split_part(coalesce(error, ''), ':', 1))
            IN ({retry}) AS redo FROM (SELECT * FROM r ANTI JOIN d USING ({RID}) UNION ALL SELECT * EXCLUDE (_rn)
            FROM (SELECT *, row_number() OVER (PARTITION BY {RID} ORDER BY status = 'ok' DESC, _seq DESC) AS _rn
            FROM r SEMI JOIN d USING ({RID})) WHERE _rn = 1)""")

    def _load_prior(self) -> None:
        """A finished output by the same settings (and the --failed-out file its run wrote): its rows keyed
        as the stage keys them now, into table `prior`."""
        store = self.store
        if store.overwrite or not store.output.exists() or not store.sidecar().exists():
            return
        tables = [store.output]
        failed = read_json(store.sidecar()).get("summary", {}).get("failed_out")
        if failed and as_path(failed).exists():
            tables.append(as_path(failed))
        for i, table in enumerate(tables):
            try:
                self._load_table(table, f"prior{i}")
            except UsageError as exc:  # e.g. a dataset folder that lost a part: its rows are done again
                print(f"vidcap: {str(exc).split('; ')[0]}; its rows are done again and it is written anew.",
                      file=sys.stderr)  # fmt: skip

    def _load_table(self, table, name: str) -> None:
        """Add one finished table's results to table `prior`, keyed from its input columns (under the names
        the manifest gives them); a stage whose result is a list (`Stage.expands`: one output row per item)
        gathers its items back into one result per input row, keyed from the path and the input's range (its
        own start_time/end_time are results)."""
        out, out_base = local_copy(table, self.work, name)
        names, reader = duck_table(self.con, out)
        ex, fields = self.stage.expands, self.stage.expand_fields
        stamps = FILE_COLUMNS if self.stage.reads_files else ()  # else they are input columns (tag's manifest)
        results = [c for c in (*self.stage.columns, "status", "error", *stamps) if c != ex]
        if "path" not in names or not {"status", "error"} <= set(names) or (ex and next(iter(fields)) not in names):
            return
        inputs = [c for c in self.names if c not in INTERNAL]
        plan = column_plan(inputs, [*fields, *results] if ex else results)
        if ex:
            cols = {c: plan.get(c, c) for c in ("path", *RANGE_COLUMNS) if c in inputs and plan.get(c, c) in names}
        else:
            back = {new: old for old, new in plan.items()}
            cols = {back.get(c, c): c for c in names if c not in results}
        keyed = self._keyed(reader, cols, out_base)
        # a finished output's rows are older than every part's
        first = self.con.execute("SELECT max(_seq) + 1 FROM prior").fetchone()[0] if self._has_prior else -(1 << 62)
        seq = f"row_number() OVER () + {first}"
        if not ex:
            body = (
                f"SELECT {RID}, {', '.join(sql_ident(c) for c in names if c in results)}, {seq} AS _seq FROM ({keyed})"
            )
        else:
            order = next(iter(fields))
            struct = ", ".join(f"{sql_ident(f)} := TRY_CAST({sql_ident(f)} AS {t})" for f, t in fields.items())
            items = f"list(struct_pack({struct}) ORDER BY TRY_CAST({sql_ident(order)} AS {fields[order]}))"
            agg = [f"CASE WHEN count({sql_ident(order)}) = 0 THEN NULL ELSE to_json({items} FILTER (WHERE "
                   f"{sql_ident(order)} IS NOT NULL))::VARCHAR END AS {sql_ident(ex)}"]  # fmt: skip
            agg += [f"any_value({sql_ident(c)}) AS {sql_ident(c)}" for c in results if c in names]
            # duplicate manifest rows (one id) each wrote the id's items: each item is gathered once
            key = f"TRY_CAST({sql_ident(order)} AS {fields[order]})"
            once = f"QUALIFY {key} IS NULL OR row_number() OVER (PARTITION BY {RID}, {key} ORDER BY _n) = 1"
            rows = f"SELECT * FROM (SELECT *, {seq} AS _n FROM ({keyed})) {once}"
            body = f"SELECT {RID}, {', '.join(agg)}, min(_n) AS _seq FROM ({rows}) GROUP BY 1"
        duck_run(
            self.con, f"INSERT INTO prior BY NAME {body}" if self._has_prior else f"CREATE TABLE prior AS {body}", out
        )
        self._has_prior = True

    def plan(self, check_files: bool = False, retry_failed: bool = False) -> dict:
        """Table `todo`: the first row of each id with no saved result, or whose best result is to be redone
        (with check_files: also when its file's size or mtime changed since; with retry_failed: every failed
        row, whatever its error). Only ids the plan hands out are grouped (not every manifest row), and only
        the selected rows' saved files are looked at."""
        if self.whole:  # rows --shard/--limit left out stay in the output only where they have a result
            self.con.execute(f"DELETE FROM m WHERE NOT ({SEL} OR {RID} IN (SELECT {RID} FROM best))")
            self.rows = self._count("m")
        kept = "b.status = 'ok'" if retry_failed else "NOT b.redo"
        rows = f"SELECT {RID}, {ROW}, {SEL} FROM m ANTI JOIN (SELECT {RID} FROM best b WHERE {kept}) USING ({RID})"
        if check_files and set(FILE_COLUMNS) <= set(self._schema("best")):
            rows += (
                f" UNION ALL SELECT m.{RID}, m.{ROW}, m.{SEL} FROM m SEMI JOIN (SELECT b.{RID} FROM best b JOIN m "
                f"ON m.{RID} = b.{RID} AND m.{SEL} WHERE {kept} AND b.file_size IS NOT NULL AND "
                f"vidcap_changed(m.{ABSPATH}, b.file_size::BIGINT, b.file_mtime::DOUBLE)) c USING ({RID})"
            )
        self.con.execute(f"""CREATE OR REPLACE TABLE todo AS SELECT min({ROW}) AS {ROW} FROM ({rows})
            GROUP BY {RID} HAVING bool_or({SEL}) ORDER BY 1""")
        self.todo = self._count("todo")
        return {"rows": self.rows, "todo": self.todo}

    def missing(self) -> tuple[int, str]:
        """Rows of the manifest with no saved result (as table `todo`), and the first one's path."""
        self.con.execute(f"CREATE OR REPLACE TABLE todo AS SELECT min({ROW}) AS {ROW} FROM m ANTI JOIN best "
                         f"USING ({RID}) GROUP BY {RID} ORDER BY 1")  # fmt: skip
        n = self._count("todo")
        if not n:
            return 0, ""
        col = "path" if "path" in self.names else ABSPATH
        return n, str(self.con.execute(f"SELECT {sql_ident(col)} FROM m WHERE {ROW} = (SELECT min({ROW}) FROM todo)")
                       .fetchone()[0])  # fmt: skip

    def todo_sql(self) -> str:
        """The rows of table `todo`, every input column, in manifest order."""
        return f"SELECT m.* EXCLUDE ({ROW}, {REL}, {SEL}) FROM m SEMI JOIN todo USING ({ROW}) ORDER BY m.{ROW}"

    def source(self) -> BatchSource:
        """The rows of table `todo` as row dicts, read lazily in manifest order."""
        cur = self.con.cursor()  # read by the feeder thread while this one records results
        rel = cur.sql(self.todo_sql())
        reader = (getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader)(4096)  # DuckDB 2 / 1.x
        return BatchSource(iter(reader), self._count("todo"), keep=cur)

    def counts(self) -> dict:
        """The manifest's ids (each has one result by now), its duplicate rows, the ids the plan skipped, and
        the ok rows and failed rows by error code (one per id)."""
        got = self.con.execute("""SELECT coalesce(status, '') = 'ok' AS ok,
            trim(split_part(coalesce(error, ''), ':', 1)) AS code, count(*) FROM best GROUP BY ALL""").fetchall()
        unique = sum(n for _, _, n in got)
        return {
            "unique": unique,
            "duplicates": self.rows - unique,
            "skipped": unique - self.todo,
            "ok": sum(n for ok, _, n in got if ok),
            "failed": {code: n for ok, code, n in got if not ok},
        }

    def finish(self) -> dict:
        """Every result column in `best` for the merge, then the stage's run-level step (`Stage.finish`)."""
        self.refresh(full=True)
        have, kinds = self._schema("best"), self._declared()
        for c in self.stage.columns:  # no saved row has it (no rows, or every one failed): the column still comes
            if c not in have:
                self.con.execute(f"ALTER TABLE best ADD COLUMN {sql_ident(c)} {kinds.get(c, 'VARCHAR')}")
        untyped = [c for c, t in have.items() if t.strip('"') == "NULL"]  # no saved row had a value in it
        for c in untyped:  # its declared type, else text: an output's schema does not depend on which rows failed
            self.con.execute(f"ALTER TABLE best ALTER COLUMN {sql_ident(c)} SET DATA TYPE {kinds.get(c, 'VARCHAR')}")
        self.res_cols = [*self.stage.columns, *(c for c in self.res_cols if c not in self.stage.columns)]
        return self.stage.finish(Results(self))

    def _declared(self) -> dict[str, str]:
        """The SQL type of each result column whose type vidcap declares (the stage's, or `tables.DTYPES`)."""
        dtypes = {**DTYPES, **self.stage.dtypes, **(FILE_DTYPES if self.stage.reads_files else {})}
        return {c: SQL_TYPES[t] for c, t in dtypes.items() if t in SQL_TYPES}

    # -- the merge -----------------------------------------------------------------------------------
    def publish(self, summary: dict, failed_out) -> None:
        """After `finish`: the output (and --failed-out) written by DuckDB straight from the ledger, atomically.
        The sidecar (naming --failed-out) is written before either, so a file at --failed-out is always one
        vidcap wrote."""
        rebase = folder(self.store.output) != self.base
        if failed_out is not None:
            summary["failed_out"] = str(failed_out)

        def write(meta, before_rename):
            if failed_out is not None:
                self._write(as_path(failed_out), "coalesce(b.status, '') <> 'ok'", rebase)
            self._write(self.store.output, "" if failed_out is None else "b.status = 'ok'", rebase, meta, before_rename)
            self.close()  # the ledger lives in the parts folder, which goes next

        self.store.publish(summary, write)

    def select_sql(self, rebase: bool, csv: bool) -> str:
        """The output's rows in manifest order: every input column (renamed where a result column takes its
        name), the result columns, status, error."""
        inputs = [c for c in self.names if c not in INTERNAL]
        ex, fields = self.stage.expands, self.stage.expand_fields
        tail = [f for c in [*self.res_cols, "status", "error"] for f in (fields if c == ex else [c])]
        plan = column_plan(inputs, tail)
        types, mtypes = self._schema("best"), self._schema("m")
        declared = self._declared()
        cols = []
        for c in inputs:
            expr = f"m.{sql_ident(c)}"
            if c == "path" and rebase:
                expr = f"CASE WHEN m.{REL} AND m.{ABSPATH} <> '' THEN m.{ABSPATH} ELSE m.\"path\" END"
            if csv and mtypes.get(c) == "VARCHAR":
                expr = f"nullif({expr}, '')"  # an empty text cell is written bare, as a NULL is
            cols.append(f"{expr} AS {sql_ident(plan.get(c, c))}")
        for c in tail:
            if ex and c in fields:
                cols.append(f"struct_extract(u.s, '{c}') AS {sql_ident(c)}")
                continue
            expr = f"b.{sql_ident(c)}"
            kind = types.get(c, "")
            if csv and kind.endswith("[]"):  # CSV has no list type: a JSON array, spaced as json.dumps spaces it
                numbers = kind[:-2] in ("BIGINT", "INTEGER", "SMALLINT", "TINYINT", "UBIGINT", "UINTEGER")
                expr = f"{expr}::VARCHAR" if numbers else f"vidcap_json({expr}::VARCHAR[])"
            elif csv and kind == "VARCHAR":
                expr = f"nullif({expr}, '')"
            elif c in declared and kind != declared[c]:  # a column whose every saved value was null, or a
                expr = f"TRY_CAST({expr} AS {declared[c]})"  # part that typed it otherwise: the declared type
            cols.append(f"{expr} AS {sql_ident(c)}")
        body = f"SELECT {', '.join(cols)} FROM m LEFT JOIN best b USING ({RID})"
        if not ex:
            return f"{body} {{where}} ORDER BY m.{ROW}"
        # one row per item of the result's JSON list; a row with no items (failed) is one row of nulls
        schema = json.dumps([{f: t for f, t in fields.items()}])
        schema = sql_text(schema).replace("{", "{{").replace("}", "}}")  # the text goes through str.format
        items = f"coalesce(nullif(from_json(b.{sql_ident(ex)}, '{schema}'), []), [NULL])"
        each = f"SELECT unnest(l) AS s, generate_subscripts(l, 1) AS k FROM (SELECT {items} AS l)"
        return f"{body} CROSS JOIN LATERAL ({each}) u {{where}} ORDER BY m.{ROW}, u.k"

    def _write(self, path, where: str, rebase: bool, meta=None, before_rename=None) -> None:
        """The output's rows (those `where` keeps) to one file, atomically (DuckDB's COPY to a temp name, renamed
        into place; a remote one uploaded whole), or as Arrow batches streamed into a dataset folder."""
        fmt = table_format(path)
        sql = self.select_sql(rebase, fmt == "csv").format(where=f"WHERE {where}" if where else "")
        if fmt == "dataset":
            rel = self.con.sql(sql)
            reader = (getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader)(BATCH_ROWS)
            on_part = partial(fault_point, "dataset_part")
            dataset.write(str(path), reader, reader.schema, meta=meta, before_rename=before_rename, on_part=on_part)
            return
        copy_to(self.con, sql, copy_options(fmt, meta), path, self.work, before_rename)


class Results:
    """Table `best` as a stage's run-level step sees it (`stages.base.ResultTable`)."""

    def __init__(self, led: Ledger):
        self.led = led

    @property
    def columns(self) -> list[str]:
        return list(self.led._schema("best"))

    def read(self, columns: list[str], where: str = "") -> pa.Table:
        cols = ", ".join(sql_ident(c) for c in [RID, *columns])
        rel = self.led.con.sql(f"SELECT {cols} FROM best {'WHERE ' + where if where else ''}")
        return (getattr(rel, "to_arrow_table", None) or rel.arrow)()  # DuckDB 2 / 1.x

    def count(self, where: str) -> int:
        return self.led._count(f"best WHERE {where}")

    def fill_null(self, column: str, value: str) -> None:
        c = sql_ident(column)
        self.led.con.execute(
            f"CREATE OR REPLACE TABLE best AS SELECT * REPLACE (coalesce({c}::VARCHAR, ?) AS {c}) FROM best", [value]
        )

    def update(self, table: pa.Table) -> None:
        con, have = self.led.con, set(self.columns)
        con.register("vidcap_update", table)
        new = [c for c in table.column_names if c != RID]
        cols = [
            f"CASE WHEN u.{RID} IS NULL THEN b.{sql_ident(c)} ELSE u.{sql_ident(c)} END AS {sql_ident(c)}"
            if c in new
            else f"b.{sql_ident(c)}"
            for c in self.columns
        ]
        cols += [f"u.{sql_ident(c)}" for c in new if c not in have]
        if table.num_rows:
            con.execute(
                f"CREATE OR REPLACE TABLE best AS SELECT {', '.join(cols)} FROM best b "
                f"LEFT JOIN vidcap_update u USING ({RID})"
            )
        else:  # nothing to change: only the new columns come (null, typed), without rewriting the table
            kinds = self.led._schema("vidcap_update")
            for c in new:
                if c not in have:
                    con.execute(f"ALTER TABLE best ADD COLUMN {sql_ident(c)} {kinds[c]}")
        con.unregister("vidcap_update")
        self.led.res_cols += [c for c in new if c not in self.led.res_cols]
