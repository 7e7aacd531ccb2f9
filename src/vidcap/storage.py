"""Where outputs live: a local path (pathlib.Path), or any fsspec URL (s3://, gs://, az://, hdfs://, ...)
through universal_pathlib's UPath, which gives those the same path API (`/`, glob, exists, read/write).

Only what a local filesystem does differently is here: atomic replacement (local: temp file, fsync,
rename; object stores: one PUT, which readers see whole or not at all; other fsspec filesystems: temp
object, then move), recursive removal, and the run lock (local: flock; remote: a lease object, see
RemoteLease). Credentials and endpoints come from the fsspec backend's usual settings (for S3: the AWS_*
variables, ~/.aws, or AWS_ENDPOINT_URL for MinIO and other S3-compatible servers).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

from .errors import UsageError, first_line

# Filesystems where a single write is atomic (a PUT appears whole or not at all); the rest get temp + move.
OBJECT_STORES = {"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "oss", "r2", "memory"}


def protocol(value) -> str:
    text = str(value)
    return text.split("://", 1)[0].lower() if "://" in text else ""


def as_path(value):
    """A local Path for plain paths and file:// URLs; a UPath for any other fsspec URL."""
    if is_remote(value):
        return value
    text = os.fspath(value) if not isinstance(value, str) else value
    proto = protocol(text)
    if not proto:
        return Path(os.path.expanduser(text))  # a quoted '~/out.csv' is the home folder, as the shell would make it
    if proto == "file":
        return Path(text.split("://", 1)[1])
    try:
        from upath import UPath
    except ImportError:
        raise UsageError(
            f"writing to {text} needs fsspec URL support; install it with: pip install 'vidcap[remote]' "
            f"(plus the {proto}:// filesystem package, e.g. s3fs for s3://)."
        ) from None
    try:
        return UPath(text)
    except (ImportError, ValueError) as exc:
        raise UsageError(
            f"cannot open {text} ({first_line(exc)}); install the fsspec package for {proto}:// "
            "(s3fs, gcsfs, adlfs, ...)."
        ) from None


def is_remote(path) -> bool:
    return not isinstance(path, (str, Path)) and hasattr(path, "fs") and hasattr(path, "protocol")


def is_object_store(path) -> bool:
    protos = path.fs.protocol if isinstance(path.fs.protocol, (tuple, list)) else (path.fs.protocol,)
    return any(p in OBJECT_STORES for p in protos)


def _replace(path, write, before_replace=None) -> None:
    """Write a remote object atomically (see the module text): `write(target)` puts the bytes at `target`,
    the object itself on an object store, else a temp object then moved. before_replace: fault hook."""
    if is_object_store(path):
        if before_replace is not None:
            before_replace()
        write(path.path)
        return
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    write(tmp.path)
    try:
        if before_replace is not None:
            before_replace()
        path.fs.mv(tmp.path, path.path)
    except BaseException:
        try:
            path.fs.rm_file(tmp.path)
        except Exception:
            pass
        raise


def put_bytes(path, data: bytes, before_replace=None) -> None:
    """Write a remote object from bytes, atomically."""
    _replace(path, lambda target: path.fs.pipe_file(target, data), before_replace)


def put_file(path, local: str, before_replace=None) -> None:
    """Upload a local file to a remote path atomically, without reading it into memory."""
    _replace(path, lambda target: path.fs.put_file(local, target), before_replace)


def get_file(path, local: str) -> None:
    """A remote file copied to a local one (streamed)."""
    path.fs.get_file(path.path, local)


def read_bytes(path) -> bytes:
    return path.fs.cat_file(path.path)


def open_binary(path):
    """A seekable reader for pandas/pyarrow: the file itself locally, the fetched bytes remotely."""
    if is_remote(path):
        return io.BytesIO(read_bytes(path))
    return open(path, "rb")


def rmtree(path) -> None:
    if is_remote(path):
        try:
            path.fs.rm(path.path, recursive=True)
        except FileNotFoundError:
            pass
        return
    shutil.rmtree(path, ignore_errors=True)


class RemoteLease:
    """The run lock where there is no flock: a LOCK object naming its holder, rewritten every `beat` seconds.

    A lock is live while its holder's heartbeat is younger than `ttl` seconds; a holder on this host whose
    process is gone is dead at once, so a run killed here resumes immediately (one killed on another host
    waits out the ttl). Object stores have no atomic create-if-absent, so two runs starting in the same
    second on different hosts could both pass: after writing, each waits `settle` seconds and reads the
    lock back, and the one whose name is no longer there steps aside. Good enough for a lock that guards
    against mistakes, not adversaries.
    """

    def __init__(self, path, ttl: float = 120.0, beat: float = 20.0, settle: float = 1.0):
        self.path, self.ttl, self.beat, self.settle = path, ttl, beat, settle
        self.me = {"owner": secrets.token_hex(8), "host": socket.gethostname(), "pid": os.getpid()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> dict | None:
        try:
            return json.loads(read_bytes(self.path) or b"{}")
        except FileNotFoundError:
            return None
        except ValueError:
            return {}

    def _live(self, held: dict) -> bool:
        if not held:
            return False
        if held.get("host") == self.me["host"] and isinstance(held.get("pid"), int):
            try:
                os.kill(held["pid"], 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
        return time.time() - float(held.get("heartbeat", 0)) < self.ttl

    def _write(self) -> None:
        put_bytes(self.path, json.dumps({**self.me, "heartbeat": time.time()}).encode())

    def acquire(self, busy_message: str) -> None:
        held = self._read()
        if held and held.get("owner") != self.me["owner"] and self._live(held):
            raise UsageError(busy_message)
        self._write()
        time.sleep(self.settle)
        now = self._read() or {}
        if now.get("owner") != self.me["owner"]:
            raise UsageError(busy_message)
        self._thread = threading.Thread(target=self._heartbeat, name="vidcap-lease", daemon=True)
        self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.beat):
            try:
                self._write()
            except Exception:
                pass  # a missed beat only shortens how long the lock looks live

    def release(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        try:
            held = self._read()
            if held and held.get("owner") == self.me["owner"]:
                self.path.fs.rm_file(self.path.path)
        except Exception:
            pass


def file_stamp(path) -> tuple[int | None, float | None]:
    """(size, mtime) of a local file, (None, None) when it is remote or cannot be read."""
    if not isinstance(path, str) or not path or "://" in path:
        return None, None
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, round(st.st_mtime, 6)


def umask_now() -> int:
    """The process's umask (read without changing it for longer than a moment)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_path(directory: Path) -> None:
    """fsync a file or a folder (its entries), ignoring filesystems that refuse it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def same_file(a, b) -> bool:
    """Two table paths that name the same file (remote ones by URL)."""
    if is_remote(a) or is_remote(b):
        return str(a) == str(b)
    return os.path.realpath(os.path.expanduser(str(a))) == os.path.realpath(os.path.expanduser(str(b)))


def atomic_local(path: Path, write, before_rename=None, *, fresh: bool = False) -> None:
    """`write(tmp)` fills a temporary file beside `path`; it is fsynced, given the umask's mode and renamed
    over `path`, so readers never see half a file. fresh: `write` creates the file itself (DuckDB's COPY)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if fresh:
            os.unlink(tmp)
        write(tmp)
        os.chmod(tmp, 0o666 & ~umask_now())  # mkstemp makes 0600; outputs get the mode any Unix tool would give
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if before_rename is not None:
            before_rename()
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json(path, data: dict) -> None:
    """A JSON record (run.json, a sidecar, a dataset's marker), atomically, here or on a remote store."""
    text = json.dumps(data, indent=2, default=str)
    if is_remote(path):
        put_bytes(path, text.encode())
    else:
        atomic_local(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_json(path) -> dict:
    """A JSON record vidcap wrote ({} when there is none). One that a crash or a disk damaged is moved aside
    (`<name>.damaged`) with one sentence, and read as absent: the run carries on from the parts."""
    try:
        if not path.exists():
            return {}
        data = json.loads(path.read_text() or "{}")
        if isinstance(data, dict):
            return data
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        pass
    aside = path.with_name(path.name + ".damaged")
    try:
        path.rename(aside)
    except OSError:
        return {}
    print(
        f"vidcap: {path} was damaged (not a JSON record vidcap wrote); moved it to {aside.name} and carrying on "
        "without it.",
        file=sys.stderr,
    )
    return {}
