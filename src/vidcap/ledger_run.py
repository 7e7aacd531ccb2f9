"""A run over a large manifest: `Session.run` hands over to `run` here when `ledger.streams` says so."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import UsageError
from .ledger import Ledger
from .manifest import atomic_local, table_format
from .parts import fault_point
from .storage import as_path, is_remote, put_file


def run(session, executor, t0: float) -> dict:
    """`Session.run` for a large manifest: plan, hand the rows left to the executor (lazily, in manifest
    order), check every row has a result (redoing lost ones once), merge. The process that plans holds the
    ledger until the merge; under torchrun the other ranks stream their share of its plan."""
    import sys
    import time

    from .errors import FatalRunError

    stage, opts, books = session.stage, session.opts, session.books
    if executor.plans():
        books.store.check_targets(session.manifest, opts.failed_out)
    executor.start(session)
    led = None
    try:
        plan = None
        if executor.plans():
            led = Ledger(stage, session.manifest, books.store)
            led.ingest(opts.shard, opts.limit)
            led.refresh(prior=True)
            plan = led.plan(check_files=opts.check_files and stage.reads_files, retry_failed=opts.retry_failed)
        t_plan, c_plan = time.monotonic(), time.process_time()  # CPU: every thread (DuckDB's too)
        rows = executor.ledger_rows(session, led)
        executor.process(session, rows)  # empty: a tensor-parallel group still has to agree on that
        session.recorder.flush()
        plan = executor.ledger_gather(session, plan)
        if plan is None or led is None:  # a process that does not merge (torchrun ranks but 0)
            return share_summary(session, executor, t0, len(rows))
        t_run, c_run = time.monotonic(), time.process_time()
        books.before_merge()
        for attempt in range(2):
            led.refresh()
            lost, first = led.missing()
            if not lost:
                break
            if attempt or not executor.can_redo:
                raise FatalRunError(
                    f"{lost} rows have no result (first: {first}); the parts are kept: run the "
                    "same command again to finish them."
                )
            print(
                f"vidcap: {lost} rows lost their saved result before the merge (a part file was removed or "
                "damaged); doing them again.",
                file=sys.stderr,
            )
            executor.process(session, executor.ledger_rows(session, led))
            session.recorder.flush()
        extra = led.finish()  # result columns for the merge; a caption run's duplicate flags
        wall = time.monotonic() - t0
        processed = sum(session.counts.values())
        summary = {
            "rows": plan["rows"],
            "unique": plan["unique"],
            "duplicates": plan["duplicates"],
            "skipped": plan["skipped"],
            "processed": processed,
            **led.counts(),
            "wall_s": round(wall, 3),
            "rows_per_s": round(processed / wall, 3) if wall > 0 else 0.0,
            **executor.extras(session),
            **extra,
            "ledger": {
                "executor": executor.name,  # the bookkeeping path this run took, and under which executor
                "plan_s": round(t_plan - t0, 2),
                "run_s": round(t_run - t_plan, 2),
                "plan_cpu_s": round(c_plan, 2),
                "run_cpu_s": round(c_run - c_plan, 2),
            },
        }
        publish(led, books.store, summary, opts.failed_out)
        return summary
    except (UsageError, KeyboardInterrupt):
        if led is not None:
            led.close()
            led = None
        books.discard_if_empty()
        raise
    finally:
        if led is not None:
            led.close()
        books.close()


def share_summary(session, executor, t0: float, rows: int) -> dict:
    """The summary of a process that did its share of the rows and does not merge."""
    import time

    counts = session.counts
    wall = time.monotonic() - t0
    processed = sum(counts.values())
    return {
        "rows": rows,  # this process's share of the plan (the merging process counts the manifest)
        "unique": rows,
        "duplicates": 0,
        "skipped": 0,
        "processed": processed,
        "ok": counts["ok"],
        "failed": {k: v for k, v in counts.items() if k != "ok"},
        "wall_s": round(wall, 3),
        "rows_per_s": round(processed / wall, 3) if wall > 0 else 0.0,
        **executor.extras(session),
        "ledger": {"executor": executor.name},
    }


def publish(led: Ledger, store, summary: dict, failed_out) -> None:
    """The output (and --failed-out) written by DuckDB straight from the ledger, atomically. The sidecar
    (naming --failed-out) is written before either, so a file at --failed-out is always one vidcap wrote."""
    out = store.output
    rebase = folder(out) != led.base
    ok_only = ""
    if failed_out is not None:
        summary["failed_out"] = str(failed_out)
        ok_only = "WHERE b.status = 'ok'"

    def write(meta, before_rename):
        if failed_out is not None:
            _write(led, as_path(failed_out), "WHERE coalesce(b.status, '') <> 'ok'", rebase)
        _write(led, out, ok_only, rebase, meta, before_rename)
        led.close()  # the ledger lives in the parts folder, which goes next

    store.publish(summary, write)


def folder(path) -> str:
    """The folder a table's relative paths resolve against (as `Ledger.base` gives it)."""
    return str(path.parent) if is_remote(path) else str(Path(os.path.abspath(path)).parent)


def _write(led: Ledger, path, where: str, rebase: bool, meta=None, before_rename=None) -> None:
    """One output file (DuckDB's COPY to a temp name, renamed into place; a remote one uploaded whole) or
    dataset folder, atomically."""
    fmt = table_format(path)
    if fmt == "dataset":
        on_part = lambda: fault_point("dataset_part")  # noqa: E731
        led.write(str(path), fmt, where, rebase, meta=meta, before_rename=before_rename, on_part=on_part)
        return
    if is_remote(path):
        local = led.work / f"out-{path.name}"
        led.write(str(local), fmt, where, rebase)
        put_file(path, str(local), before_rename)
        return
    atomic_local(path, lambda tmp: led.write(tmp, fmt, where, rebase), before_rename, fresh=True)
