"""The local runner: rows -> loader in worker processes -> stage batches -> atomic parts -> output.

Decoding runs in a process pool fed by a background thread, so frames for the next batches are being
decoded while the model works on the current one.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import pandas as pd

from .errors import DECODE, FatalRunError, UsageError, VidcapError, error_code, format_error
from .manifest import RID, clean_text, read_manifest, rebase_paths
from .parts import PartStore, fault_point, needs_redo
from .storage import as_path
from .stages.base import Item, Stage


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


def default_workers(stage: Stage | None = None) -> int:
    """Decode processes when --workers is not given: the stage's own choice, else all cores but one
    (that one feeds the model)."""
    own = getattr(stage, "default_workers", None)
    if own is not None:
        return int(own)
    return max(1, (os.cpu_count() or 2) - 1)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
        assert n >= 1 and 0 <= i < n
    except Exception:
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


# -- decode workers ---------------------------------------------------------------------------------
_LOADER = None


def _die_with_parent() -> None:
    """A decode worker must not outlive its run (a kill -9 of the run would leave it holding the terminal
    and its pipes): ask Linux to kill it when its parent (the run, or the fork server, which exits with
    the run) goes away."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call above
        os._exit(0)


def _release_forkserver() -> None:
    """A worker forked by the fork server holds a copy of the write end of the server's liveness pipe; while
    any worker holds it, the server never sees the run die, so after a kill -9 of the run the server and
    its workers (whose parent-death signal waits for the server) lived on. The worker never forks through
    the server itself, so it lets the pipe go: the run's death closes the last write end, the server
    exits, and the workers' parent-death signal ends them."""
    try:
        from multiprocessing import forkserver

        server = forkserver._forkserver
        fd = getattr(server, "_forkserver_alive_fd", None)
        # set in a child of the server (which launched no server itself); the run's own copy has a pid
        if fd is not None and getattr(server, "_forkserver_pid", None) is None:
            os.close(fd)
            server._forkserver_alive_fd = None
    except (ImportError, AttributeError, OSError):
        return


def _init_worker(loader) -> None:
    global _LOADER
    _release_forkserver()
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled once, by the main process
    try:  # the process feeding the GPU must win the CPU over its decoders (measured on a 16-core H100 host)
        os.nice(5)
    except OSError:
        pass
    _LOADER = loader


def _load(row: dict):
    try:
        return _LOADER(row), None
    except VidcapError as exc:
        return None, exc.text
    except MemoryError:
        return None, format_error(DECODE, "out of memory while decoding")
    except Exception as exc:  # a decoder bug on a hostile file is that row's error, not the run's
        return None, format_error(DECODE, f"{type(exc).__name__}: {exc}")


class ListSource:
    """The rows of a run, handed to the Feeder in order; other runners pass a source that grows over time."""

    def __init__(self, rows: list[dict]):
        self.rows = list(reversed(rows))

    def take(self, n: int, timeout: float) -> list[dict] | None:
        """Up to n rows ([] when none are ready yet), or None once there will be no more."""
        if not self.rows:
            return None
        return [self.rows.pop() for _ in range(min(n, len(self.rows)))]


class Feeder:
    """Keeps `workers` processes busy loading rows; hands (row, data, error) to the consumer in a queue.

    `rows` is a list, or a source with `take(n, timeout)` (see ListSource) for runners that receive rows
    while they run (the multi-GPU workers)."""

    DONE = object()

    def __init__(self, loader, rows, workers: int, depth: int):
        self.loader, self.workers = loader, workers
        self.source = ListSource(rows) if isinstance(rows, list) else rows
        self.depth = max(depth, 2 * max(workers, 1))
        self.q: queue.Queue = queue.Queue(maxsize=self.depth)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="vidcap-feeder")

    def start(self) -> "Feeder":
        self.thread.start()
        return self

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            if self.workers <= 0:
                _init_loader_inline(self.loader)
                while not self.stop.is_set():
                    rows = self.source.take(1, timeout=0.2)
                    if rows is None:
                        return
                    for row in rows:
                        if not self._put((row, *_load(row))):
                            return
            else:
                self._run_pool()
        except BaseException as exc:  # surfaced in the consumer
            self.error = exc
        finally:
            self._put(self.DONE)

    def _run_pool(self) -> None:
        retry: list[dict] = []  # rows in flight when a decoder process crashed
        exhausted = False
        crashes: Counter = Counter()
        while (retry or not exhausted) and not self.stop.is_set():
            ctx = _pool_context(self.loader)
            pool = ProcessPoolExecutor(self.workers, mp_context=ctx, initializer=_init_worker, initargs=(self.loader,))
            pending: dict = {}
            try:
                while not self.stop.is_set():
                    room = self.depth - len(pending)
                    rows = [retry.pop() for _ in range(min(room, len(retry)))]
                    if len(rows) < room and not exhausted:
                        got = self.source.take(room - len(rows), timeout=0.0 if pending else 0.2)
                        exhausted = got is None
                        rows += got or []
                    for row in rows:
                        pending[pool.submit(_load, row)] = row
                    if not pending:
                        if exhausted and not retry:
                            break
                        continue
                    done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                    for fut in done:
                        row = pending.pop(fut)
                        if not self._put((row, *fut.result())):
                            return
            except BrokenProcessPool:
                # A decoder process died (segfault, OOM kill). Rows in flight are retried; a row that was
                # in flight in two crashes is recorded as the likely culprit.
                for row in pending.values():
                    crashes[row[RID]] += 1
                    if crashes[row[RID]] >= 2:
                        self._put((row, None, format_error(DECODE, "the decoder process crashed on this file")))
                    else:
                        retry.append(row)
            finally:
                pool.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self.stop.set()


def _pool_context(loader):
    """Workers fork from a clean server process that imported the heavy modules once (fast starts, no
    CUDA or threads inherited from this process); plain spawn where forkserver does not exist."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    preload = ["numpy", "av", "cv2", "vidcap.frames"] + list(getattr(loader, "preload", ()) or ())
    if "transformers" in sys.modules:  # a model run: its workers may run the model's processor
        preload += ["torch", "transformers"]
    ctx.set_forkserver_preload(preload)  # only the first start of the server reads it
    return ctx


def _init_loader_inline(loader) -> None:
    global _LOADER
    _LOADER = loader


# -- the run ------------------------------------------------------------------------------------
class Run:
    def __init__(self, stage: Stage, manifest, output, opts: RunOptions):
        self.stage, self.manifest, self.output, self.opts = stage, manifest, as_path(output), opts
        self.counts: Counter = Counter()
        self.buffer: list[dict] = []
        self.last_flush = time.monotonic()
        self.store: PartStore | None = None

    def execute(self) -> dict:
        t0 = time.monotonic()
        from . import ledger

        if ledger.streams(self.manifest):  # a large manifest: bookkeeping in DuckDB, streamed
            return ledger.execute(self, t0)
        df = select_rows(self.stage, self.manifest, self.opts)
        first = ~df[RID].duplicated()
        duplicates = int((~first).sum())
        fp = dict(self.stage.fingerprint(), columns=list(self.stage.columns))
        self.store = store = PartStore(self.output, fp, overwrite=self.opts.overwrite, keep_parts=self.opts.keep_parts)
        store.open(self.stage.provenance())
        try:
            results = store.load_results(df, self.stage.row_key)
            done = {r: needs_redo(s, e) for r, s, e in zip(results[RID], results.get("status", []), results.get("error", []))}
            unique = df[first]
            todo = [r for r in unique.to_dict("records") if r[RID] not in done or done[r[RID]]]
            skipped = len(unique) - len(todo)
            self._process(todo)
            fault_point("before_merge", store.part_files())
            results = self._complete(df[first], store)
            results, extra = self.stage.finish_results(results)
            summary = self._summary(len(df), skipped, duplicates, len(todo), time.monotonic() - t0, results)
            summary.update(extra)
            store.finalize(rebase_paths(df, self.manifest, self.output), results, summary, self.stage.dtypes,
                           failed_out=self.opts.failed_out)
            return summary
        except (UsageError, KeyboardInterrupt):  # e.g. the model would not load: no empty parts folder left
            store.discard_if_empty()
            raise
        finally:
            store.close()

    def _complete(self, unique: pd.DataFrame, store: PartStore) -> pd.DataFrame:
        """The results of this manifest's rows, every one present: rows whose result went missing (a part
        deleted or damaged before the merge) are done again once; if some still lack a result the run
        stops without writing the output, naming them, and a rerun finishes them."""
        for attempt in range(2):
            results = store.load_results(unique, self.stage.row_key)
            results = results[results[RID].isin(unique[RID])]  # rows no longer in the manifest do not count
            missing = unique[~unique[RID].isin(results[RID])]
            if missing.empty:
                return results
            if attempt == 0:
                print(f"vidcap: {len(missing)} rows lost their saved result before the merge (a part file was "
                      "removed or damaged); doing them again.", file=sys.stderr)
                self._process(missing.to_dict("records"))
        raise FatalRunError(f"{len(missing)} rows have no result (first: {missing['path'].iloc[0]}); the parts "
                            "are kept: run the same command again to finish them.")

    def _process(self, todo: list[dict]) -> None:
        if not todo:
            return
        stage, opts = self.stage, self.opts
        workers = default_workers(stage) if opts.workers is None else opts.workers
        progress = _Progress(len(todo), stage.name, enabled=opts.progress)
        prev = signal.signal(signal.SIGTERM, _raise_interrupt) if threading.current_thread() is threading.main_thread() else None
        feeder = None
        try:
            stage.resolve(opts.device)  # the loader may carry the model's preprocessor to the workers
            feeder = Feeder(stage.loader(), todo, workers, depth=stage.batch_size * 2 + 2 * max(workers, 1))
            if workers > 0:  # worker processes start and decode while the model loads
                feeder.start()
                stage.setup(opts.device)
            else:  # in-thread loading would race this thread's imports while the model loads
                stage.setup(opts.device)
                feeder.start()
            streams = getattr(stage, "streams", None)
            if streams is not None and streams():  # continuous batching: clips flow in one by one
                for item, out in stage.process_stream(_QueueSource(self, feeder, progress)):
                    self._record(item.row, out)
                    progress.advance(1)
                    self._check_all_failing()
                    self._maybe_flush()
            else:
                for batch in self._batches(feeder, progress):
                    self._run_batch(batch)
                    progress.advance(len(batch))
                    self._maybe_flush()
            self._flush()
        except (KeyboardInterrupt, FatalRunError):
            if feeder is not None:
                feeder.close()
            self._flush()
            raise
        finally:
            if feeder is not None:
                feeder.close()
            progress.close()
            if prev is not None:
                signal.signal(signal.SIGTERM, prev)
            stage.teardown()

    def _batches(self, feeder: Feeder, progress: "_Progress"):
        """Full batches when rows come fast; a partial one after `batch_wait` so the model never idles long."""
        batch: list[Item] = []
        deadline = 0.0
        size = self.stage.batch_size
        while True:
            wait_s = max(0.0, deadline - time.monotonic()) if batch else 1.0
            try:
                got = feeder.q.get(timeout=wait_s)
            except queue.Empty:
                if batch:
                    yield batch
                    batch = []
                self._maybe_flush()
                continue
            if got is Feeder.DONE:
                if batch:
                    yield batch
                if feeder.error is not None:
                    raise feeder.error
                return
            row, data, err = got
            if err:
                self._record(row, {"error": err})
                progress.advance(1)
                self._maybe_flush()
                continue
            batch.append(Item(row, data))
            if len(batch) == 1:
                deadline = time.monotonic() + self.opts.batch_wait
            if len(batch) >= size:
                yield batch
                batch = []

    def _run_batch(self, batch: list[Item]) -> None:
        outs = process_safely(self.stage, batch)
        for item, out in zip(batch, outs):
            self._record(item.row, out)
        self._check_all_failing()

    def _check_all_failing(self) -> None:
        if self.counts["ok"] == 0 and self.counts["model"] >= 3 * max(1, self.stage.batch_size):
            raise FatalRunError(f"the model failed on every row so far ({self._last_model_error}); stopping. Fix the model setup and rerun to resume.")

    _last_model_error = ""

    def _record(self, row: dict, out: dict) -> None:
        err = out.get("error") or ""
        rec = {RID: row[RID], "status": "failed" if err else "ok", "error": err}
        for col in self.stage.columns:
            rec.setdefault(col, clean_text(out.get(col)))  # a lone surrogate (JSON "\ud800") cannot be stored
        self.counts[error_code(err) or "ok"] += 1
        if error_code(err) == "model":
            self._last_model_error = err
        self.buffer.append(rec)

    def _maybe_flush(self) -> None:
        if len(self.buffer) >= self.opts.part_rows or (self.buffer and time.monotonic() - self.last_flush > self.opts.part_seconds):
            self._flush()

    def _flush(self) -> None:
        if self.buffer and self.store is not None:
            self.store.write_part(self.buffer)
            self.buffer = []
        self.last_flush = time.monotonic()

    def _summary(self, total, skipped, duplicates, todo, wall, results) -> dict:
        status = results["status"] if "status" in results.columns else pd.Series(dtype=str)
        errors = results["error"] if "error" in results.columns else pd.Series(dtype=str)
        failed = Counter(error_code(e) for s, e in zip(status, errors) if s != "ok")
        processed = sum(self.counts.values())
        return {
            "rows": total, "unique": total - duplicates, "duplicates": duplicates, "skipped": skipped,
            "processed": processed, "ok": int((status == "ok").sum()), "failed": dict(failed),
            "wall_s": round(wall, 3), "rows_per_s": round(processed / wall, 3) if wall > 0 else 0.0,
            **self._extra(),
        }

    def _extra(self) -> dict:
        """Stage figures for the summary; runners whose stage runs in other processes gather theirs."""
        return self.stage.summary_extra()


class _QueueSource:
    """The feeder's queue as a stream source: `take(n, block)` gives up to n loaded Items ([] when none
    is ready; with block, after waiting briefly), None once the feeder is done. Rows whose loading
    failed are recorded here, as in `Run._batches`."""

    def __init__(self, run: Run, feeder: Feeder, progress: "_Progress"):
        self.run, self.feeder, self.progress = run, feeder, progress
        self.done = False

    def take(self, n: int, block: bool) -> list[Item] | None:
        if self.done:
            return None
        out: list[Item] = []
        while len(out) < n:
            try:
                got = self.feeder.q.get(timeout=0.5) if (block and not out) else self.feeder.q.get_nowait()
            except queue.Empty:
                if not out:
                    self.run._maybe_flush()
                return out
            if got is Feeder.DONE:
                if self.feeder.error is not None:
                    raise self.feeder.error
                self.done = True
                return out or None
            row, data, err = got
            if err:
                self.run._record(row, {"error": err})
                self.progress.advance(1)
                continue
            out.append(Item(row, data))
        return out


def process_safely(stage: Stage, batch: list[Item]) -> list[dict]:
    """stage.process_batch, with a model exception turned into that row's error (the batch is split to find it)."""
    try:
        return stage.process_batch(batch)
    except (FatalRunError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if len(batch) == 1:
            return [{"error": _model_error(exc)}]
        outs = []
        for item in batch:
            try:
                outs.extend(stage.process_batch([item]))
            except (FatalRunError, KeyboardInterrupt):
                raise
            except Exception as one:
                outs.append({"error": _model_error(one)})
        return outs


def _model_error(exc: Exception) -> str:
    name = type(exc).__name__
    code = "oom" if "OutOfMemory" in name or "out of memory" in str(exc).lower() else "model"
    return format_error(code, f"{name}: {exc}")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class _Progress:
    def __init__(self, total: int, name: str, enabled: bool):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn(f"[bold]{name}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"),
                                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False)
            self.task = self.bar.add_task(name, total=total, rate="")
            self.t0 = time.monotonic()
            self.n = 0
            self.bar.start()

    def advance(self, n: int) -> None:
        if self.bar:
            self.n += n
            rate = self.n / max(time.monotonic() - self.t0, 1e-6)
            self.bar.update(self.task, advance=n, rate=f"{rate:.2f} rows/s")

    def close(self) -> None:
        if self.bar:
            self.bar.stop()
            self.bar = None


def run_stage(stage: Stage, manifest, output, opts: RunOptions | None = None) -> dict:
    return Run(stage, manifest, output, opts or RunOptions()).execute()
