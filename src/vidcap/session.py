"""One run's lifecycle, the same under every executor: plan, record, finish.

    plan    select the manifest's rows, load what is already done (once, keyed by the stage's row key),
            decide what to (re)do
    record  results go to a buffer and out to atomic part files (`Recorder`, one per writing process)
    finish  check that every selected row has exactly one result (rows whose result went missing are done
            again once), run the stage's run-level work, merge into the output, write the summary

Executors (vidcap.runners) only hand rows out and collect per-worker figures; they call `Session.run`
with themselves and never subclass it. The bookkeeping (what is done, parts, the merge) is reached only
through `Bookkeeping`, so its internals can change (columnar, streamed) without touching executors.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from .errors import EMPTY_PATH, MISSING, FatalRunError, UsageError, error_code
from .manifest import ABSPATH, RID, clean_text, read_manifest, rebase_paths
from .parts import FILE_COLUMNS, FILE_DTYPES, PartStore, fault_point, needs_redo
from .stages.base import Stage
from .storage import as_path


@dataclass
class RunOptions:
    workers: int | None = None  # decode processes; 0 = decode in a thread of this process
    limit: int | None = None
    shard: tuple[int, int] | None = None  # (index, count): every count-th row from index
    overwrite: bool = False
    keep_parts: bool = False
    part_rows: int = 256
    part_seconds: float = 30.0
    progress: bool = True
    device: str | None = None
    batch_wait: float = 1.0  # seconds to wait for a full batch before running a partial one
    failed_out: str | None = None  # failed rows go to this file, the output keeps only ok rows
    check_files: bool = True  # on resume, redo rows whose file changed size or mtime since its result
    retry_failed: bool = False  # redo every failed row of an earlier run, not only retryable errors


def default_workers(stage: Stage | None = None) -> int:
    """Decode processes when --workers is not given: the stage's own choice, else all cores but one
    (that one feeds the model)."""
    if stage is not None and stage.default_workers is not None:
        return int(stage.default_workers)
    return max(1, (os.cpu_count() or 2) - 1)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
        assert n >= 1 and 0 <= i < n
    except Exception:  # noqa: BLE001
        raise UsageError(f"--shard '{text}' is not I/N with 0 <= I < N (e.g. 0/8).") from None
    return i, n


def select_rows(stage: Stage, manifest: str | os.PathLike, opts: RunOptions) -> pd.DataFrame:
    df = read_manifest(manifest, require=stage.required_columns)
    if opts.shard:
        i, n = opts.shard
        df = df.iloc[i::n]
    if opts.limit is not None:
        df = df.iloc[: max(0, opts.limit)]
    df = df.reset_index(drop=True)
    records = df.to_dict("records")
    df[RID] = pd.Series([stage.row_key(r) for r in records], index=df.index, dtype=str)  # str even when empty
    return df


def run_fingerprint(stage: Stage) -> dict:
    return dict(stage.fingerprint(), columns=list(stage.columns))


# -- bookkeeping: the only door to parts, the done-set and the merge ----------------------------------
class Bookkeeping:
    """What is done, part files and the final merge, for one output. Today a PartStore behind it."""

    def __init__(self, output, fingerprint: dict, *, overwrite: bool = False, keep_parts: bool = False,
                 worker: str = "w0", failed_out=None):
        self.store = PartStore(output, fingerprint, overwrite=overwrite, keep_parts=keep_parts, worker=worker)
        self.failed_out = failed_out

    @property
    def worker(self) -> str:
        return self.store.worker

    @worker.setter
    def worker(self, name: str) -> None:
        self.store.worker = name  # names this process's part files

    def open(self, provenance: dict) -> None:
        """Take the run lock, check the settings, write run.json (the one process that coordinates)."""
        self.store.open(provenance, None if self.failed_out is None else str(self.failed_out))

    def close(self) -> None:
        self.store.close()

    def discard_if_empty(self) -> None:
        self.store.discard_if_empty()

    def done(self, rows: pd.DataFrame, row_key: Callable[[dict], str]) -> pd.DataFrame:
        """Saved results of these rows (parts, then a finished output): `_rid`, status, error, columns."""
        return self.store.load_results(rows, row_key)

    def write(self, rows: list[dict]) -> None:
        self.store.write_part(rows)

    def write_note(self, name: str, data: dict) -> None:
        """A small JSON file beside the parts (workers.json, torchrun's done markers)."""
        self.store.write_json(self.store.dir / name, data)

    def notes(self, pattern: str) -> list:
        return self.store.files(pattern)

    def saved_ids(self, worker: str, among: set | None = None) -> set:
        """Row ids in the part files one worker wrote (after it died: what it had saved); with `among`,
        only those of these ids (the parts are then read for them only)."""
        return self.store.saved_rids(worker, among)

    def note_path(self, name: str):
        """A file of this name in the parts folder (the plan file torchrun's ranks and Ray read)."""
        return self.store.dir / name

    def before_merge(self) -> None:
        fault_point("before_merge", self.store.part_files())

    def finalize(self, manifest: pd.DataFrame, results: pd.DataFrame, summary: dict, dtypes: dict,
                 failed_out=None) -> None:
        self.store.finalize(manifest, results, summary, dtypes, failed_out=failed_out)


# -- recording ------------------------------------------------------------------------------------------
class Watcher:
    """What a recorder tells its process's executor (a host worker acks chunks); no-ops by default."""

    def recorded(self, row: dict, code: str) -> None:
        """A row's result went into the buffer (`code`: "ok" or its error code)."""

    def flush_due(self, buffered: int) -> bool:
        """True to save the buffer now (e.g. no more rows will come for a while)."""
        return False

    def flushed(self) -> None:
        """The buffer is in a part file."""

    def tick(self) -> None:
        """Called often from the loop: a chance to report progress."""


class Recorder:
    """Results of one writing process: buffered, then saved as atomic part files."""

    def __init__(self, stage: Stage, books: Bookkeeping, opts: RunOptions, watcher: Watcher | None = None):
        self.stage, self.books, self.opts = stage, books, opts
        self.watcher = watcher or Watcher()
        self.counts: Counter = Counter()
        self.buffer: list[dict] = []
        self.last_flush = time.monotonic()
        self.last_model_error = ""
        self._blank: dict | None = None

    def record(self, row: dict, out: dict) -> None:
        err = out.get("error") or ""
        code = error_code(err) or "ok"
        if err and len(out) == 1:  # a row that failed to load (millions of them in a stale manifest): no values
            rec = self._failed_record(row[RID], err)
        else:
            rec = {RID: row[RID], "status": "failed" if err else "ok", "error": err}
            for col in self.stage.columns:
                rec.setdefault(col, clean_text(out.get(col)))  # a lone surrogate (JSON "\ud800") cannot be stored
            if self.stage.reads_files:
                rec.update(dict.fromkeys(FILE_COLUMNS))
        if self.stage.reads_files and code not in NO_FILE:  # a missing file has no size to stat again
            rec.update(zip(FILE_COLUMNS, file_stamp(row.get(ABSPATH))))
        self.counts[code] += 1
        if code == "model":
            self.last_model_error = err
        self.buffer.append(rec)
        self.watcher.recorded(row, code)

    def _failed_record(self, rid: str, err: str) -> dict:
        """The record of a row with only an error, copied from a template made once (same keys, same order)."""
        if self._blank is None:
            self._blank = {RID: None, "status": "failed", "error": None}
            self._blank.update((col, None) for col in self.stage.columns if col not in self._blank)
            if self.stage.reads_files:
                self._blank.update(dict.fromkeys(FILE_COLUMNS))
        rec = self._blank.copy()
        rec[RID], rec["error"] = rid, err
        return rec

    def check_all_failing(self) -> None:
        if self.counts["ok"] == 0 and self.counts["model"] >= 3 * max(1, self.stage.batch_size):
            raise FatalRunError(f"the model failed on every row so far ({self.last_model_error}); stopping. "
                                "Fix the model setup and rerun to resume.")

    def maybe_flush(self) -> None:
        due = len(self.buffer) >= self.opts.part_rows or (
            self.buffer and time.monotonic() - self.last_flush > self.opts.part_seconds)
        if due or (self.buffer and self.watcher.flush_due(len(self.buffer))):
            self.flush()
        self.watcher.tick()

    def flush(self) -> None:
        if self.buffer:
            self.books.write(self.buffer)
            self.buffer = []
        self.last_flush = time.monotonic()
        self.watcher.flushed()


NO_FILE = frozenset({MISSING, EMPTY_PATH})  # error codes of rows whose file was not there


def file_stamp(path) -> tuple[int | None, float | None]:
    """(size, mtime) of a local file, (None, None) when it is remote or cannot be read."""
    if not isinstance(path, str) or not path or "://" in path:
        return None, None
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, round(st.st_mtime, 6)


# -- the executor contract (vidcap.runners implements it) --------------------------------------------------
class Executor:
    """How rows reach the stage; the lifecycle stays here. `Session.run(executor)` calls, in order:
    start(session)          take the run lock (or wait for the process that takes it)
    share(unique_rows)      this process's part of the unique rows (all of them, or a torchrun rank's)
    process(session, todo)  hand rows to the stage wherever it runs; results go to session.recorder,
                            or to part files the workers write themselves (their counts then added to
                            session.counts)
    gather(session, plan)   the whole run's plan once every worker is done, or None in a process that
                            does not merge
    extras(session)         stage figures for the summary, from every worker
    """

    name = "local"
    can_redo = True  # rows whose saved result went missing before the merge are handed out again
    lazy_rows = False  # takes `todo` as a lazy source (len + take): large manifests then use vidcap.ledger

    def start(self, session: Session) -> None:
        session.books.open(session.stage.provenance())

    def share(self, unique: pd.DataFrame) -> pd.DataFrame:
        return unique

    def process(self, session: Session, todo: list[dict]) -> None:
        """Run the stage on `todo` (possibly empty: a tensor-parallel group still has to agree on that)."""
        raise NotImplementedError

    def gather(self, session: Session, plan: Plan) -> Plan | None:
        return plan

    def extras(self, session: Session) -> dict:
        return session.stage.summary_extra()

    # A large manifest (vidcap.ledger_run) calls these instead of share/gather.
    def plans(self) -> bool:
        """Whether this process plans the run (reads the manifest and what is done, and merges): every
        coordinator; not torchrun's ranks but 0, which stream their share of rank 0's plan."""
        return True

    def ledger_rows(self, session: Session, led):
        """This process's rows of the ledger's plan (its table `todo`; `led` is None where `plans` is False)
        as a lazy source (len + take)."""
        return led.source()

    def ledger_gather(self, session: Session, plan: dict | None) -> dict | None:
        """The whole run's plan counts once every worker is done (session.counts then cover them all), or
        None in a process that does not merge."""
        return plan


# -- the session ------------------------------------------------------------------------------------------
@dataclass
class Plan:
    rows: pd.DataFrame  # every selected row, `_rid` added
    first: pd.Series  # True on each row id's first occurrence
    todo: list[dict]  # this process's rows to (re)do
    skipped: int  # this process's rows already done

    @property
    def unique(self) -> pd.DataFrame:
        return self.rows[self.first]

    @property
    def duplicates(self) -> int:
        return int((~self.first).sum())


class Session:
    def __init__(self, stage: Stage, manifest, output, opts: RunOptions | None = None):
        self.stage, self.manifest, self.output = stage, manifest, as_path(output)
        self.opts = opts or RunOptions()
        self.fingerprint = run_fingerprint(stage)
        self.books = Bookkeeping(self.output, self.fingerprint, overwrite=self.opts.overwrite,
                                 keep_parts=self.opts.keep_parts, failed_out=self.opts.failed_out)
        self.recorder = Recorder(stage, self.books, self.opts)

    @property
    def counts(self) -> Counter:
        """Rows processed by this run, by outcome ("ok" or an error code), over every worker."""
        return self.recorder.counts

    def run(self, executor: Executor) -> dict:
        t0 = time.monotonic()
        from . import ledger_run

        if executor.lazy_rows:
            return ledger_run.run(self, executor, t0)
        rows = select_rows(self.stage, self.manifest, self.opts)
        executor.start(self)
        try:
            plan = self.plan(rows, executor)
            executor.process(self, plan.todo)
            self.recorder.flush()
            whole = executor.gather(self, plan)
            if whole is None:  # a process that does not merge (torchrun ranks but 0)
                return self.summary(plan, t0, None, executor)
            self.books.before_merge()
            results = self.complete(whole.unique, executor)
            results, extra = self.stage.finish_results(results)
            summary = {**self.summary(whole, t0, results, executor), **extra}
            dtypes = {**self.stage.dtypes, **(FILE_DTYPES if self.stage.reads_files else {})}
            self.books.finalize(rebase_paths(rows, self.manifest, self.output), results, summary, dtypes,
                                failed_out=self.opts.failed_out)
            return summary
        except (UsageError, KeyboardInterrupt):  # e.g. the model would not load: no empty parts folder left
            self.books.discard_if_empty()
            raise
        finally:
            self.books.close()

    def plan(self, rows: pd.DataFrame, executor: Executor) -> Plan:
        first = ~rows[RID].duplicated()
        mine = executor.share(rows[first])
        done = self.books.done(rows, self.stage.row_key)
        redo = {r: needs_redo(s, e, self.opts.retry_failed)
                for r, s, e in zip(done[RID], done.get("status", []), done.get("error", []))}
        if self.opts.check_files and self.stage.reads_files:
            redo.update(dict.fromkeys(changed_files(done, rows), True))
        todo = [r for r in mine.to_dict("records") if redo.get(r[RID], True)]
        return Plan(rows, first, todo, len(mine) - len(todo))

    def complete(self, unique: pd.DataFrame, executor: Executor) -> pd.DataFrame:
        """The results of this manifest's rows, every one present: rows whose result went missing (a part
        deleted or damaged before the merge) are done again once; if some still lack a result the run
        stops without writing the output, naming them, and a rerun finishes them."""
        for attempt in range(2):
            results = self.books.done(unique, self.stage.row_key)
            results = results[results[RID].isin(unique[RID])]  # rows no longer in the manifest do not count
            missing = unique[~unique[RID].isin(results[RID])]
            if missing.empty:
                return results
            if attempt == 0 and executor.can_redo:
                print(f"vidcap: {len(missing)} rows lost their saved result before the merge (a part file was "
                      "removed or damaged); doing them again.", file=sys.stderr)
                executor.process(self, missing.to_dict("records"))
                self.recorder.flush()
        raise FatalRunError(f"{len(missing)} rows have no result (first: {missing['path'].iloc[0]}); the parts "
                            "are kept: run the same command again to finish them.")

    def summary(self, plan: Plan, t0: float, results: pd.DataFrame | None, executor: Executor) -> dict:
        wall = time.monotonic() - t0
        processed = sum(self.counts.values())
        if results is None:  # this process's own share
            ok, failed = self.counts["ok"], {k: v for k, v in self.counts.items() if k != "ok"}
        else:
            status = results["status"] if "status" in results.columns else pd.Series(dtype=str)
            errors = results["error"] if "error" in results.columns else pd.Series(dtype=str)
            ok, failed = int((status == "ok").sum()), dict(Counter(error_code(e) for s, e in zip(status, errors) if s != "ok"))
        total = len(plan.rows)
        return {
            "rows": total, "unique": total - plan.duplicates, "duplicates": plan.duplicates, "skipped": plan.skipped,
            "processed": processed, "ok": ok, "failed": failed,
            "wall_s": round(wall, 3), "rows_per_s": round(processed / wall, 3) if wall > 0 else 0.0,
            **executor.extras(self),
        }


def changed_files(done: pd.DataFrame, rows: pd.DataFrame) -> list[str]:
    """Row ids whose saved result was made from a file of another size or mtime than the one there now.

    One stat per saved row, spread over threads (a stat waits on the disk or the network, not the CPU);
    `--no-file-check` skips this at very large resumes (docs/scale-out.md has the cost)."""
    if done.empty or not set(FILE_COLUMNS) <= set(done.columns) or ABSPATH not in rows.columns:
        return []
    saved = done.loc[done[FILE_COLUMNS[0]].notna(), [RID, *FILE_COLUMNS]]
    if saved.empty:
        return []
    saved = saved.merge(rows[[RID, ABSPATH]].drop_duplicates(RID), on=RID, how="inner")
    stamps = stat_many(saved[ABSPATH].tolist())
    size_now = pd.to_numeric(pd.Series([s[0] for s in stamps], index=saved.index), errors="coerce")
    mtime_now = pd.to_numeric(pd.Series([s[1] for s in stamps], index=saved.index), errors="coerce")
    size_then = pd.to_numeric(saved[FILE_COLUMNS[0]], errors="coerce")
    mtime_then = pd.to_numeric(saved[FILE_COLUMNS[1]], errors="coerce")
    changed = size_now.notna() & ((size_now != size_then) | ((mtime_now - mtime_then).abs() > 1e-6))
    return saved.loc[changed, RID].tolist()


def stat_many(paths: list, threads: int = 16, chunk: int = 4096) -> list[tuple[int | None, float | None]]:
    """file_stamp of every path, in order, over a few threads."""
    if len(paths) <= chunk:
        return [file_stamp(p) for p in paths]
    from concurrent.futures import ThreadPoolExecutor

    parts = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
    with ThreadPoolExecutor(threads) as pool:
        done = pool.map(lambda part: [file_stamp(p) for p in part], parts)
        return [stamp for part in done for stamp in part]
