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
from dataclasses import dataclass

from .errors import EMPTY_PATH, MISSING, FatalRunError, UsageError, error_code
from .ledger import Ledger
from .manifest import ABSPATH, RID, clean_text
from .parts import FILE_COLUMNS, PartStore, fault_point
from .stages.base import RowSource, Stage
from .storage import as_path, file_stamp

PART_ROWS = 256  # rows per part by default: a kill redoes at most this many rows (or a second's worth)
PART_ROWS_MAX = 65_536
PART_MIN_SECONDS = 1.0


@dataclass
class RunOptions:
    workers: int | None = None  # decode processes; 0 = decode in a thread of this process
    limit: int | None = None
    shard: tuple[int, int] | None = None  # (index, count): every count-th row from index
    overwrite: bool = False
    keep_parts: bool = False
    part_rows: int | None = None  # rows per part; None: PART_ROWS, more when rows come faster (see Recorder)
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


def run_fingerprint(stage: Stage) -> dict:
    return dict(stage.fingerprint(), columns=list(stage.columns))


# -- bookkeeping: the only door to parts, the done-set and the merge ----------------------------------
class Bookkeeping:
    """What is done, part files and the final merge, for one output. Today a PartStore behind it."""

    def __init__(
        self,
        output,
        fingerprint: dict,
        *,
        overwrite: bool = False,
        keep_parts: bool = False,
        worker: str = "w0",
        failed_out=None,
    ):
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
            rec.update(zip(FILE_COLUMNS, file_stamp(row.get(ABSPATH)), strict=False))
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
            raise FatalRunError(
                f"the model failed on every row so far ({self.last_model_error}); stopping. "
                "Fix the model setup and rerun to resume."
            )

    def maybe_flush(self) -> None:
        due = self._part_full() or (self.buffer and time.monotonic() - self.last_flush > self.opts.part_seconds)
        if due or (self.buffer and self.watcher.flush_due(len(self.buffer))):
            self.flush()
        self.watcher.tick()

    def _part_full(self) -> bool:
        """--part-rows rows; by default PART_ROWS, but no more than about a part a second while rows come
        fast (a million missing files would otherwise write 4,000 parts), and never past PART_ROWS_MAX."""
        n = len(self.buffer)
        if self.opts.part_rows is not None:
            return n >= self.opts.part_rows
        return n >= PART_ROWS_MAX or (n >= PART_ROWS and time.monotonic() - self.last_flush >= PART_MIN_SECONDS)

    def flush(self) -> None:
        if self.buffer:
            self.books.write(self.buffer)
            self.buffer = []
        self.last_flush = time.monotonic()
        self.watcher.flushed()


NO_FILE = frozenset({MISSING, EMPTY_PATH})  # error codes of rows whose file was not there


# -- the executor contract (vidcap.runners implements it) --------------------------------------------------
class Executor:
    """How rows reach the stage; the lifecycle stays in `Session.run`, which calls, in order:
    start(session)          take the run lock (or wait for the process that takes it)
    plans()                 whether this process plans and merges (every coordinator; torchrun's rank 0)
    rows(session, ledger)   this process's rows to do, as a lazy source (`len`, `take(n, timeout)`): the
                            ledger's plan (None where this process does not plan)
    process(session, rows)  hand rows to the stage wherever it runs; results go to session.recorder, or to
                            part files the workers write themselves (their counts then added to
                            session.counts)
    gather(session, plan)   the whole run's plan counts once every worker is done, or None in a process that
                            does not merge
    extras(session)         stage figures for the summary, from every worker
    """

    name = "local"
    can_redo = True  # rows whose saved result went missing before the merge are handed out again

    def start(self, session: Session) -> None:
        session.books.open(session.stage.provenance())

    def plans(self) -> bool:
        return True

    def rows(self, session: Session, led: Ledger | None) -> RowSource:
        assert led is not None
        return led.source()

    def process(self, session: Session, todo: RowSource) -> None:
        """Run the stage on `todo` (possibly empty: a tensor-parallel group still has to agree on that)."""
        raise NotImplementedError

    def gather(self, session: Session, plan: dict | None) -> dict | None:
        return plan

    def extras(self, session: Session) -> dict:
        return session.stage.summary_extra()


# -- the session ------------------------------------------------------------------------------------------
class Session:
    """One run: plan in the ledger, hand the rows left to the executor (lazily, in manifest order), check
    every row has a result (redoing lost ones once), run the stage's run-level step, merge. The process that
    plans holds the ledger until the merge; under torchrun the other ranks stream their share of its plan."""

    def __init__(self, stage: Stage, manifest, output, opts: RunOptions | None = None):
        self.stage, self.manifest, self.output = stage, manifest, as_path(output)
        self.opts = opts or RunOptions()
        self.fingerprint = run_fingerprint(stage)
        self.books = Bookkeeping(
            self.output,
            self.fingerprint,
            overwrite=self.opts.overwrite,
            keep_parts=self.opts.keep_parts,
            failed_out=self.opts.failed_out,
        )
        self.recorder = Recorder(stage, self.books, self.opts)

    @property
    def counts(self) -> Counter:
        """Rows processed by this run, by outcome ("ok" or an error code), over every worker."""
        return self.recorder.counts

    def run(self, executor: Executor) -> dict:
        t0 = time.monotonic()
        opts, books = self.opts, self.books
        if executor.plans():
            books.store.check_targets(self.manifest, opts.failed_out)
        executor.start(self)
        led = None
        try:
            plan = None
            if executor.plans():
                led = Ledger(self.stage, self.manifest, books.store)
                led.ingest(opts.shard, opts.limit)
                led.refresh(prior=True)
                plan = led.plan(check_files=opts.check_files and self.stage.reads_files, retry_failed=opts.retry_failed)
            t_plan, c_plan = time.monotonic(), time.process_time()  # CPU: every thread (DuckDB's too)
            rows = executor.rows(self, led)
            executor.process(self, rows)  # empty: a tensor-parallel group still has to agree on that
            self.recorder.flush()
            plan = executor.gather(self, plan)
            if plan is None or led is None:  # a process that does not merge (torchrun ranks but 0)
                return self.share_summary(executor, t0, len(rows))
            t_run, c_run = time.monotonic(), time.process_time()
            books.before_merge()
            self.complete(led, executor)
            extra = led.finish()  # result columns for the merge; the stage's run-level step
            summary = {
                **self.summary(plan, led, executor, t0),
                **extra,
                "ledger": {
                    "executor": executor.name,
                    "plan_s": round(t_plan - t0, 2),
                    "run_s": round(t_run - t_plan, 2),
                    "plan_cpu_s": round(c_plan, 2),
                    "run_cpu_s": round(c_run - c_plan, 2),
                },
            }
            led.publish(summary, opts.failed_out)
            return summary
        except (UsageError, KeyboardInterrupt):  # e.g. the model would not load: no empty parts folder left
            if led is not None:
                led.close()
                led = None
            books.discard_if_empty()
            raise
        finally:
            if led is not None:
                led.close()
            books.close()

    def complete(self, led: Ledger, executor: Executor) -> None:
        """Every planned row has a result: rows whose result went missing (a part deleted or damaged before
        the merge) are done again once; if some still lack one the run stops without writing the output,
        naming them, and a rerun finishes them."""
        for attempt in range(2):
            led.refresh()
            lost, first = led.missing()
            if not lost:
                return
            if attempt or not executor.can_redo:
                break
            print(
                f"vidcap: {lost} rows lost their saved result before the merge (a part file was removed or "
                "damaged); doing them again.",
                file=sys.stderr,
            )
            executor.process(self, executor.rows(self, led))
            self.recorder.flush()
        raise FatalRunError(
            f"{lost} rows have no result (first: {first}); the parts are kept: run the same "
            "command again to finish them."
        )

    def summary(self, plan: dict, led: Ledger, executor: Executor, t0: float) -> dict:
        wall = time.monotonic() - t0
        processed = sum(self.counts.values())
        return {
            "rows": plan["rows"],
            "unique": plan["unique"],
            "duplicates": plan["duplicates"],
            "skipped": plan["skipped"],
            "processed": processed,
            **led.counts(),
            "wall_s": round(wall, 3),
            "rows_per_s": round(processed / wall, 3) if wall > 0 else 0.0,
            **executor.extras(self),
        }

    def share_summary(self, executor: Executor, t0: float, rows: int) -> dict:
        """The summary of a process that did its share of the rows and does not merge."""
        wall = time.monotonic() - t0
        processed = sum(self.counts.values())
        return {
            "rows": rows,  # this process's share of the plan (the merging process counts the manifest)
            "unique": rows,
            "duplicates": 0,
            "skipped": 0,
            "processed": processed,
            "ok": self.counts["ok"],
            "failed": {k: v for k, v in self.counts.items() if k != "ok"},
            "wall_s": round(wall, 3),
            "rows_per_s": round(processed / wall, 3) if wall > 0 else 0.0,
            **executor.extras(self),
            "ledger": {"executor": executor.name},
        }
