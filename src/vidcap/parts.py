"""Atomic part files under `<output>.parts/` (temp name, fsync, rename: a kill leaves only ignored `.tmp`
files), the run lock, run.json, and the output's publication (the ledger writes it through `publish`)."""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import time
from pathlib import Path
from typing import TextIO

import pyarrow as pa
import pyarrow.parquet as pq

from . import __version__, dataset
from .errors import FatalRunError, UsageError, first_line, os_reason
from .faults import fault_point
from .knobs import knob, settings
from .manifest import RID, table_format
from .storage import (
    RemoteLease,
    as_path,
    fsync_path,
    is_object_store,
    is_remote,
    open_binary,
    read_json,
    rmtree,
    same_file,
    write_json,
)
from .tables import memory_error, write_arrow, write_rows

RUN_JSON = "run.json"
COMPACT_DIR = "compact"
FILES_PER_DIR = 1000
FILE_COLUMNS = ("file_size", "file_mtime")  # the file a result was made from (a changed file is redone)
FILE_DTYPES = {"file_size": "Int64", "file_mtime": "float64"}


def _disk_error(exc: Exception, what: str, then: str = "run the same command again to resume") -> FatalRunError:
    """A write that failed (a full or read-only disk, a remote store's own error, DuckDB's memory cap), in one
    sentence."""
    if (oom := memory_error(exc)) is not None:
        return oom
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    hint = "free some space" if full else "fix the problem"
    return FatalRunError(f"could not write {what} ({os_reason(exc)}); {hint} and {then}.")


class PartStore:
    def __init__(self, output: str | os.PathLike, fingerprint: dict, *, overwrite=False, keep_parts=False, worker="w0"):
        self.output = as_path(output)  # a local Path, or a UPath for an fsspec URL (vidcap.storage)
        self.remote = is_remote(self.output)
        self.dir = self.output.with_name(self.output.name + ".parts")
        self.fingerprint = fingerprint
        self.overwrite = overwrite
        self.keep_parts = keep_parts
        self.worker = worker
        self._lock_fh: TextIO | None = None
        self._lease: RemoteLease | None = None
        self._seq = 0
        self._fresh = 0  # parts written since the last compaction
        self._ncompact: int | None = None  # compacted files of this worker (counted on first use)
        self._created = False

    # -- lifecycle -------------------------------------------------------------------------------
    def open(self, provenance: dict | None = None, failed_out=None) -> None:
        created = self._make_dir()
        try:
            self._lock()
            self._check_settings()
            self._remove_stale_temps()
            if self.overwrite:  # an --overwrite run killed before its merge is resumed by the same command
                prev = read_json(self.dir / RUN_JSON)
                if not (prev.get("overwrite") and prev.get("fingerprint") == self.fingerprint):
                    self._clear_parts()
            info = {
                "fingerprint": self.fingerprint,
                "provenance": provenance or {},
                "failed_out": failed_out,
                "overwrite": self.overwrite,
                "environment": settings(),  # the VIDCAP_* variables set for this run (vidcap.knobs)
                "vidcap": __version__,
                "python": sys.version.split()[0],
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            self.write_json(self.dir / RUN_JSON, info)
        except BaseException:
            if created:  # a refused run leaves nothing behind (nothing is saved yet)
                self.close()
                rmtree(self.dir)
            raise
        self._created = created

    def _make_dir(self) -> bool:
        """Create the parts folder; True if it was not there (on an object store: held no object)."""
        try:
            if self.remote:
                created = not self.dir.exists() or not any(True for _ in self.dir.iterdir())
                if not is_object_store(self.dir):  # object stores have no folders to make
                    self.dir.mkdir(parents=True, exist_ok=True)
                return created
            created = not self.dir.exists()
            self.dir.mkdir(parents=True, exist_ok=True)
        except Exception as exc:
            if self.remote:
                raise UsageError(
                    f"cannot reach {self.dir} ({os_reason(exc)}); check the URL and its credentials."
                ) from None
            raise UsageError(f"cannot create {self.dir} ({os_reason(exc)}); pick a writable -o path.") from None
        if not os.access(self.dir, os.W_OK):
            raise UsageError(f"output folder {self.dir.parent} is not writable; pick another -o path.")
        return created

    def _unwritable(self, exc: Exception) -> UsageError:
        """The parts folder cannot be locked: a full or read-only disk; a remote store that is
        unreachable, has no such bucket or refuses to write."""
        if self.remote:
            return UsageError(
                f"cannot write to {self.dir} ({first_line(exc)}); check the URL, that the bucket exists and that "
                "the credentials may write there."
            )
        return UsageError(f"cannot write to {self.dir} ({os_reason(exc)}); free some space or pick another -o path.")

    def discard_if_empty(self) -> None:
        """Remove the parts folder this run created if it saved nothing (a run that could not start)."""
        if self._created and not self.part_files():
            self.close()
            rmtree(self.dir)

    def check_targets(self, manifest, failed_out) -> None:
        """Refuse, before anything is written, a run whose outputs would overwrite an input or each other:
        -o or --failed-out naming the manifest, --failed-out naming -o, or --failed-out naming a file that
        no run of this output wrote (its sidecar or unfinished run names the files it wrote)."""
        if same_file(self.output, manifest):
            raise UsageError(
                f"-o {self.output} is the manifest itself, a file not written by vidcap; write the output "
                "to another file."
            )
        if failed_out is None:
            return
        target = as_path(failed_out)
        table_format(target)
        if same_file(target, manifest):
            raise UsageError(
                f"--failed-out {failed_out} is the manifest itself; give the failed rows a file of their own."
            )
        if same_file(target, self.output):
            raise UsageError(
                f"--failed-out {failed_out} is also the output (-o); give the failed rows a file of their own."
            )
        if not target.exists():
            return
        ours = [
            read_json(self.sidecar()).get("summary", {}).get("failed_out"),
            read_json(self.dir / RUN_JSON).get("failed_out"),
        ]
        if not any(o is not None and same_file(as_path(o), target) for o in ours):
            raise UsageError(
                f"--failed-out {failed_out} already exists and was not written by a run of {self.output}; "
                "pick another --failed-out file (vidcap never overwrites a file it did not write)."
            )

    def _check_settings(self) -> None:
        """Refuse to mix rows with an unfinished run or a finished output made with other settings."""
        run_file = self.dir / RUN_JSON
        if not self.overwrite and run_file.exists():
            old = read_json(run_file).get("fingerprint")
            if old is not None and old != self.fingerprint:
                raise UsageError(
                    f"{self.dir} holds an unfinished run with other settings ({_fp_diff(old, self.fingerprint)}); "
                    "rerun with those settings to finish it, or pass --overwrite to start over."
                )
        self._check_existing_output()

    def _lock(self) -> None:
        busy = f"another vidcap run is writing {self.output} right now; wait for it to finish or pick another -o path."
        try:
            if self.remote:
                self._lease = RemoteLease(self.dir / "LOCK")
                self._lease.acquire(busy)
                return
            fault_point("start")  # tests: a disk that is full when the run starts
            fh = open(self.dir / "LOCK", "a+")  # noqa: SIM115 (held open for the whole run: it is the lock)
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                fh.close()
                raise UsageError(busy) from None
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            self._lock_fh = fh
        except UsageError:
            raise
        except Exception as exc:
            raise self._unwritable(exc) from None

    def _remove_stale_temps(self) -> None:
        """Temp files of a killed run (we hold the lock, so no live writer owns them)."""
        prefixes = (f".{self.output.name}.", f".{self.sidecar().name}.")  # storage.atomic_local's temp names
        stale = [p for pre in prefixes for p in self.output.parent.glob(pre + "*.tmp") if len(p.name) == len(pre) + 12]
        if not self.remote and (self.dir / COMPACT_DIR).exists():
            stale += list((self.dir / COMPACT_DIR).rglob(".c-*.tmp"))
        for p in stale + list(self.dir.glob(".part-*.tmp")):
            try:
                p.unlink(missing_ok=True)
            except (FileNotFoundError, IsADirectoryError):  # a dataset's temporary folder: recover() below
                pass
        if not self.remote:
            dataset.recover(self.output)  # a dataset moved aside by a killed run goes back

    def close(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def _clear_parts(self) -> None:
        for p in self.dir.glob("part-*"):
            p.unlink(missing_ok=True)
        if not self.remote:
            rmtree(self.dir / COMPACT_DIR)

    def _check_existing_output(self) -> None:
        if not self.remote and self.output.is_dir() and table_format(self.output) == "dataset":
            if not dataset.owned(self.output):  # --overwrite never removes a folder vidcap did not write
                raise UsageError(f"{self.output} is a folder that is not a vidcap dataset; pick another -o path.")
            if dataset.marker(self.output) is None:
                return  # an empty folder: the dataset goes there
        if not self.output.exists() or self.overwrite:
            return
        meta = self.sidecar()
        if not meta.exists():
            raise UsageError(
                f"{self.output} already exists and was not written by vidcap; pass --overwrite to replace it or pick another -o path."
            )
        old = read_json(meta).get("fingerprint")
        if old != self.fingerprint:
            raise UsageError(
                f"{self.output} was written by another command or model ({_fp_diff(old or {}, self.fingerprint)}); "
                "pass --overwrite to replace it or pick another -o path."
            )

    def sidecar(self) -> Path:
        return self.output.with_name(self.output.name + ".run.json")

    def write_json(self, path: Path, data: dict) -> None:
        try:
            write_json(path, data)
        except Exception as exc:
            raise _disk_error(exc, str(path)) from None

    # -- parts -----------------------------------------------------------------------------------
    def write_part(self, rows: list[dict]) -> Path | None:
        if not rows:
            return None
        self._seq += 1
        name = f"part-{self.worker}-{time.time_ns():x}-{self._seq:06d}.parquet"
        path = self.dir / name
        try:
            write_rows(rows, path, before_rename=lambda: fault_point("part_write"))
        except Exception as exc:  # a full disk, a remote store's own errors (network, permissions)
            raise _disk_error(exc, f"a part file in {self.dir}") from None
        self._fresh += 1
        if self._fresh >= int(knob("VIDCAP_COMPACT_PARTS")) and not self.remote:  # a worker's parts merge
            self.compact()
        return path

    def compact(self) -> Path | None:
        """Merge this worker's part files into one file under `compact/<worker>/<NNNN>/` (at most
        FILES_PER_DIR files a folder), so no folder grows past ~1,000 files however long the run. The merged
        file is in place (atomically) before its sources go: a kill between the two leaves rows twice,
        which the merge keeps once."""
        self._fresh = 0
        sources, tables = [], []
        for p in self.files(f"part-{self.worker}-*.parquet"):
            try:
                tables.append(pq.read_table(p))
                sources.append(p)
            except Exception:  # unreadable: left where it is (ignored, its rows are redone)
                continue
        if len(sources) < 2:
            return None
        table = pa.concat_tables(tables, promote_options="permissive")
        home = self.dir / COMPACT_DIR / self.worker
        if self._ncompact is None:
            self._ncompact = sum(1 for _ in home.rglob("c-*.parquet")) if home.exists() else 0
        dest = home / f"{self._ncompact // FILES_PER_DIR:04d}" / f"c-{time.time_ns():x}-{self._seq:06d}.parquet"
        try:
            write_arrow(table, dest, before_rename=lambda: fault_point("compact"))
        except Exception as exc:
            raise _disk_error(exc, f"a part file in {self.dir}") from None
        self._ncompact += 1
        for p in sources:
            p.unlink(missing_ok=True)
        return dest

    def saved_rids(self, among: set | None = None) -> set:
        """Row ids in this worker's part files (unreadable parts count as not saved: after it died, what it
        saved); with `among`, only those ids, filtered as each file is read (no set of every row it did)."""
        if among is not None and not among:
            return set()
        wanted = None if among is None else [(RID, "in", list(among))]
        rids: set = set()
        for p in self.part_files(self.worker):
            try:
                with open_binary(p) as fh:
                    rids.update(pq.read_table(fh, columns=[RID], filters=wanted)[RID].to_pylist())
            except Exception:
                continue
        return rids

    def part_files(self, worker: str = "") -> list[Path]:
        """Every saved part (or those one worker wrote), compacted ones first (they hold the older rows), each
        group in name order."""
        home = self.dir / COMPACT_DIR / worker
        compacted = sorted(home.rglob("c-*.parquet"), key=str) if not self.remote and home.exists() else []
        return compacted + self.files(f"part-{worker}-*.parquet" if worker else "part-*.parquet")

    def files(self, pattern: str) -> list[Path]:
        """Files in the parts folder, as they are now (other processes write there too)."""
        if self.remote:
            self.dir.fs.invalidate_cache(self.dir.path)  # fsspec caches listings; other writers add parts
        return sorted(self.dir.glob(pattern), key=str)

    # -- finish ----------------------------------------------------------------------------------
    def publish(self, summary: dict, write) -> None:
        """Write the output with `write(metadata, before_rename)` (atomically), its sidecar, then remove the
        parts folder (the lock is released last)."""
        meta = {
            "fingerprint": self.fingerprint,
            "summary": summary,
            "environment": settings(),
            "vidcap": __version__,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        # The sidecar goes first: an output without its sidecar (a kill between the two) would be
        # refused on rerun as "not written by vidcap". A replaced output goes before its new sidecar,
        # so a kill never leaves another run's rows under this run's sidecar (the parts hold them all).
        try:
            if self.overwrite:
                self._remove_output()
            self.write_json(self.sidecar(), meta)
            write(meta, lambda: fault_point("final_merge"))
        except Exception as exc:
            raise _disk_error(exc, str(self.output), "run the same command again: the parts are kept") from None
        fault_point("final_cleanup")
        if not self.keep_parts:
            self._remove_dir()
            if not self.remote:
                fsync_path(self.output.parent)

    def _remove_output(self) -> None:
        if not self.remote and self.output.is_dir() and table_format(self.output) == "dataset":
            dataset.remove(self.output)  # a dataset vidcap wrote (_check_existing_output refused any other)
        else:
            self.output.unlink(missing_ok=True)

    def _remove_dir(self) -> None:
        """The parts folder goes while the lock is still held: everything but LOCK first, then LOCK, then
        the folder; the lock is released last (a run starting meanwhile is refused, not mixed in)."""
        for p in self.files("*") if self.remote else list(self.dir.iterdir()):
            if p.name != "LOCK":
                rmtree(p) if not self.remote and p.is_dir() else p.unlink(missing_ok=True)
        if self.remote:
            self.close()  # the lease goes with its LOCK object
            rmtree(self.dir)
            return
        (self.dir / "LOCK").unlink(missing_ok=True)
        try:
            self.dir.rmdir()
        except OSError:
            rmtree(self.dir)
        self.close()


def _fp_diff(old: dict, new: dict) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if k != "columns" and old.get(k) != new.get(k)]
    if not keys:
        return "different settings"
    return "; ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in keys[:3])
