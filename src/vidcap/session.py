"""One run's lifecycle, the same under every executor: plan (the ledger: what is done, what to do), record
(a `Recorder` per writing process: buffered results to atomic part files), finish (every row has exactly
one result, lost ones done again once; the stage's run-level step; merge; summary).

Executors (vidcap.runners) only hand rows out: they get a frozen `Job` and answer one `WorkerReport` per
worker; the lock, the plan, the merge and the summary stay here.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from .config import RunConfig, default_workers
from .errors import EMPTY_PATH, MISSING, FatalRunError, UsageError, error_code
from .faults import fault_point
from .knobs import check as check_knobs
from .ledger import Ledger
from .ledger_plan import PlanRows, plan_path, write_plan
from .manifest import ABSPATH, RID, clean_text
from .parts import FILE_COLUMNS, PartStore
from .rows import ListSource
from .stages.base import Stage
from .storage import as_path, file_stamp
from .summary import merge_extras
from .tables import memory_error

PART_ROWS = 256  # rows per part by default: a kill redoes at most this many rows (or a second's worth)
PART_ROWS_MAX = 65_536
PART_MIN_SECONDS = 1.0


def run_fingerprint(stage: Stage) -> dict:
    return dict(stage.fingerprint(), columns=list(stage.columns))


# -- where results go ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sink:
    """The run's parts folder as any writing process sees it (picklable): part files under each worker's name
    and small notes beside them."""

    output: str
    fingerprint: dict

    def store(self, worker: str = "main") -> PartStore:
        return PartStore(self.output, self.fingerprint, worker=worker)

    def recorder(self, stage: Stage, opts: RunConfig, worker: str, watcher: Watcher | None = None) -> Recorder:
        return Recorder(stage, self.store(worker), opts, watcher)

    def note_path(self, name: str):
        """A file in the parts folder (workers.json, torchrun's done markers, the plan file)."""
        return self.store().dir / name

    def write_note(self, name: str, data: dict) -> None:
        self.store().write_json(self.note_path(name), data)

    def notes(self, pattern: str) -> list:
        return self.store().files(pattern)


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


class PartWriter(Protocol):
    """A PartStore, or a Ray actor's link to the driver that writes its parts."""

    def write_part(self, rows: list[dict]) -> object: ...


class Recorder:
    """Results of one writing process: buffered, then saved as atomic part files."""

    def __init__(self, stage: Stage, parts: PartWriter, opts: RunConfig, watcher: Watcher | None = None):
        self.stage, self.parts, self.opts = stage, parts, opts
        self.watcher = Watcher() if watcher is None else watcher  # (a watcher may be falsy: a ChunkSource has a len)
        self.counts: Counter = Counter()
        self.buffer: list[dict] = []
        self.last_flush = time.monotonic()
        self.last_model_error = ""
        self._blank: dict | None = None

    def record(self, row: dict, out: dict) -> str:
        """Buffer a row's result; returns its outcome ("ok" or the error code)."""
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
        return code

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
            self.parts.write_part(self.buffer)
            self.buffer = []
        self.last_flush = time.monotonic()
        self.watcher.flushed()


NO_FILE = frozenset({MISSING, EMPTY_PATH})  # error codes of rows whose file was not there


# -- the executor contract (vidcap.runners implements it) --------------------------------------------------
class Rows:
    """The row-source factory of a job: the rows this run has to do, in manifest order, read lazily from
    the ledger's plan; or, for processes that read the plan elsewhere (torchrun's ranks), one share of the
    plan file. A process that does not plan waits for the planning one to write that file."""

    def __init__(self, led: Ledger | None, path):
        self.led, self.path = led, path

    def __call__(self, rank: int = 0, world: int = 1, as_file: bool = False) -> ListSource[dict]:
        if self.led is not None and world == 1 and not as_file:
            return self.led.source()
        if self.led is not None and rank == 0:
            write_plan(self.led, self.path)
        while not self.path.exists():  # the planning rank removed the last run's file; this one appears whole
            time.sleep(0.2)
        return PlanRows(self.path, rank, world)


@dataclass(frozen=True)
class Job:
    """All an executor gets of a run: the stage, the options, the rows to do and where results go."""

    stage: Stage
    opts: RunConfig
    rows: Rows
    sink: Sink

    def recorder(self, worker: str) -> Recorder:
        return self.sink.recorder(self.stage, self.opts, worker)

    def workers(self) -> int:
        """Decode processes of one worker loop (--workers, else the stage's or the host's default)."""
        return default_workers(self.stage) if self.opts.workers is None else self.opts.workers


@dataclass
class WorkerReport:
    """What one worker (this process, a host's GPU worker, a torchrun rank, a Ray actor) did."""

    worker: str
    counts: Counter = field(default_factory=Counter)  # rows recorded, by outcome ("ok" or an error code)
    extra: dict = field(default_factory=dict)  # the stage's figures (tokens, engine stats)
    seconds: float = 0.0
    lost: str = ""  # why the worker stopped early (its unsaved rows went to the others)


class Executor:
    """How rows reach the stage: `Session.run` calls `start` (which calls `lock` in the process that plans), then
    `run(job)` (again to redo rows whose saved result went missing); it answers one report per worker."""

    name = "local"
    unit = ""  # the summary counts the workers under this name ("workers", "ranks", "actors")
    can_redo = True  # rows whose saved result went missing before the merge are handed out again

    def plans(self) -> bool:
        """Whether this process plans and merges (every coordinator; torchrun's rank 0)."""
        return True

    def start(self, sink: Sink, lock: Callable[[], None]) -> None:
        lock()

    def run(self, job: Job) -> list[WorkerReport]:
        raise NotImplementedError


def safe_extra(stage: Stage) -> dict:
    """A worker's stage figures; a failure to compute them never costs the run (a FatalRunError, e.g. --budget
    held rows back, still stops it)."""
    try:
        return stage.summary_extra()
    except FatalRunError:
        raise
    except Exception:  # noqa: BLE001
        return {}


# -- the session ------------------------------------------------------------------------------------------
class Session:
    """One run: lock, plan, hand the executor a job, check every row has a result, finish, merge, sum up."""

    def __init__(self, stage: Stage, manifest, output, opts: RunConfig | None = None):
        self.stage, self.manifest, self.output = stage, manifest, as_path(output)
        self.opts = opts or RunConfig()
        fingerprint = run_fingerprint(stage)
        self.store = PartStore(self.output, fingerprint, overwrite=self.opts.overwrite, keep_parts=self.opts.keep_parts)
        self.sink = Sink(str(self.output), fingerprint)

    def run(self, executor: Executor) -> dict:
        t0, c0 = time.monotonic(), time.process_time()  # CPU: every thread of this process (DuckDB's too)
        check_knobs()  # a VIDCAP_* variable that does not parse stops the run here, not halfway through
        opts, store = self.opts, self.store
        if executor.plans():
            store.check_targets(self.manifest, opts.failed_out)
        failed_out = None if opts.failed_out is None else str(opts.failed_out)
        record = opts.record()  # run.json and the summary say how this run was set up
        executor.start(self.sink, lambda: store.open({**self.stage.provenance(), "config": record}, failed_out))
        led = None
        try:
            plan = None
            if executor.plans():
                led = Ledger(self.stage, self.manifest, store)
                led.ingest(opts.shard, opts.limit)
                led.refresh(prior=True)
                plan = led.plan(check_files=opts.check_files and self.stage.reads_files, retry_failed=opts.retry_failed)
            t_plan, c_plan = time.monotonic(), time.process_time()
            job = Job(self.stage, opts, Rows(led, plan_path(self.sink)), self.sink)
            reports = executor.run(job)
            if plan is None or led is None:  # a process that does not merge (torchrun ranks but 0)
                return self.summary(executor, reports, t0)
            t_run, c_run = time.monotonic(), time.process_time()
            fault_point("before_merge", store.part_files())
            reports += self.complete(led, executor, job)
            extra = led.finish()  # result columns for the merge; the stage's run-level step
            summary = {
                **self.summary(executor, reports, t0, plan, led),
                **extra,
                "ledger": {
                    "executor": executor.name,
                    "plan_s": round(t_plan - t0, 2),
                    "run_s": round(t_run - t_plan, 2),
                    "plan_cpu_s": round(c_plan - c0, 2),
                    "run_cpu_s": round(c_run - c_plan, 2),
                },
                "config": record,
            }
            led.publish(summary, opts.failed_out)
            return summary
        except (UsageError, KeyboardInterrupt):  # e.g. the model would not load: no empty parts folder left
            if led is not None:
                led.close()
                led = None
            store.discard_if_empty()
            raise
        except Exception as exc:  # DuckDB past its memory cap (planning, reading the plan, the run-level step)
            if (oom := memory_error(exc)) is None:
                raise
            raise oom from None
        finally:
            if led is not None:
                led.close()
            store.close()

    def complete(self, led: Ledger, executor: Executor, job: Job) -> list[WorkerReport]:
        """Rows whose result went missing (a part deleted or damaged before the merge) are done again once; if
        some still lack one the run stops, naming the first, and a rerun finishes them."""
        reports: list[WorkerReport] = []
        for attempt in range(2):
            led.refresh()
            lost, first = led.missing()
            if not lost:
                return reports
            if attempt or not executor.can_redo:
                break
            print(
                f"vidcap: {lost} rows lost their saved result before the merge (a part file was removed or "
                "damaged); doing them again.",
                file=sys.stderr,
            )
            reports += executor.run(job)
        raise FatalRunError(
            f"{lost} rows have no result (first: {first}); the parts are kept: run the same "
            "command again to finish them."
        )

    def summary(
        self, executor: Executor, reports: list[WorkerReport], t0: float, plan: dict | None = None, led=None
    ) -> dict:
        """The run's figures; without a plan, those of a process that did its share and does not merge."""
        wall = time.monotonic() - t0
        counts: Counter = sum((Counter(r.counts) for r in reports), Counter())
        processed = sum(counts.values())
        extra = merge_extras([r.extra for r in reports])
        if executor.unit and plan is not None:
            extra[executor.unit] = len({r.worker for r in reports})
        if any(r.lost for r in reports):
            extra["worker_deaths"] = sum(1 for r in reports if r.lost)
        if plan is None or led is None:
            rows: dict = {"rows": processed, "unique": processed, "duplicates": 0, "skipped": 0, "processed": processed}
            rows |= {"ok": counts["ok"], "failed": {k: v for k, v in counts.items() if k != "ok"}}
            extra |= {"share": ", ".join(r.worker for r in reports), "ledger": {"executor": executor.name}}
        else:
            rows = {"rows": plan["rows"], **led.counts(), "processed": processed}
        rate = round(processed / wall, 3) if wall > 0 else 0.0
        return {**rows, "wall_s": round(wall, 3), "rows_per_s": rate, **extra}
