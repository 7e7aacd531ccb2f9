"""Video and image paths on object stores and the web (s3://, gs://, https://, any fsspec URL), read in place.

PyAV decodes a Python file object, so a URL is opened with fsspec and handed to FFmpeg as one: FFmpeg's
reads and seeks become range requests. Each clip gets one reader whose fetched blocks land in a sparse
temporary file (fsspec's "mmap" cache), so nothing is fetched twice and nothing is downloaded before
decoding starts. For MP4/MOV the frame-count scan reads only the index (decode._index_scan), so a clip costs
its header, its index and the GOPs around the frames sampled; other containers are scanned by reading
them once. An HTTP server that ignores Range requests gets the file streamed once into the temporary file.

Failures become the same per-row codes as local files: a missing object is `missing`, an endpoint that does
not answer `timeout`. What the machine lacks is not the clip's fault and is redone on the next run: a refused
one (401/403, no or bad credentials) or a scheme whose package is not installed is `environment` (with the
install command), an untrusted TLS certificate `certificate`.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import socket
import tempfile
import time

from vidcap.errors import (
    CERTIFICATE,
    DECODE,
    ENVIRONMENT,
    MISSING,
    NOT_A_FILE,
    TIMEOUT,
    VidcapError,
    first_line,
)
from vidcap.knobs import knob

BLOCK = 4 << 20  # bytes per range request: large enough that a sequential read is a few requests
# MP4/MOV: the scan needs only the index (decode._index_scan), so reads jump to the frames decoded; smaller
# blocks then fetch less around each (measured on a 10.9 MB 720p clip, 1 frame: 4 MiB blocks fetch all of it,
# 1 MiB blocks 23 %, at one request per MiB when a read is sequential).
ISO_BLOCK = 1 << 20
LOCAL = ("", "file", "local")
# The package each common scheme needs (fsspec names it too, but not always as a pip command).
PACKAGES = {
    "s3": "s3fs",
    "s3a": "s3fs",
    "gs": "gcsfs",
    "gcs": "gcsfs",
    "az": "adlfs",
    "abfs": "adlfs",
    "abfss": "adlfs",
    "http": "aiohttp",
    "https": "aiohttp",
    "hf": "huggingface_hub",
}


def protocol(path: str) -> str:
    return path.split("://", 1)[0].lower() if "://" in path else ""


def is_url(path) -> bool:
    """True for a path that names a remote file (anything with a scheme other than file://)."""
    return isinstance(path, str) and protocol(path) not in LOCAL


def timeout_s() -> float:
    """Seconds a connection or a single read may stall before the row fails with `timeout`."""
    return float(knob("VIDCAP_REMOTE_TIMEOUT"))


def deadline_s() -> float:
    """Seconds one file may take to read in all (VIDCAP_REMOTE_DEADLINE; default 10 x VIDCAP_REMOTE_TIMEOUT): a
    server that sends a byte now and then never trips the per-read timeout, so the file as a whole has one."""
    return float(knob("VIDCAP_REMOTE_DEADLINE", 10 * timeout_s()))


def filesystem(url: str):
    """The fsspec filesystem for `url` and the path inside it (instances are cached by fsspec)."""
    proto = protocol(url)
    try:
        import fsspec
    except ImportError:
        raise VidcapError(ENVIRONMENT, f"{proto}:// paths need fsspec: pip install 'vidcap[remote]'") from None
    try:
        kwargs = _timeouts(proto, fsspec.config.conf.get(proto, {}))
        return fsspec.core.url_to_fs(url, **kwargs)
    except ImportError:
        pkg = PACKAGES.get(proto)
        hint = f"pip install {pkg}" if pkg else f"install the fsspec package for {proto}://"
        raise VidcapError(ENVIRONMENT, f"{proto}:// paths need the {pkg or proto} package: {hint}") from None
    except ValueError as exc:  # "Protocol not known"
        raise VidcapError(DECODE, f"unsupported URL scheme {proto}:// ({first_line(exc)})") from None
    except Exception as exc:  # a filesystem that connects when made (ftp, sftp): the host is down or unknown
        raise row_error(exc) from None


def _timeouts(proto: str, own: dict) -> dict:
    """Connect and read timeouts for HTTP and S3, under whatever the user's fsspec config sets (which wins)."""
    limit = timeout_s()
    if proto in ("http", "https"):
        import aiohttp

        timeout = aiohttp.ClientTimeout(total=deadline_s(), sock_connect=limit, sock_read=limit)
        return {"client_kwargs": {"timeout": timeout, **own.get("client_kwargs", {})}}
    if proto in ("s3", "s3a"):
        retries = {"max_attempts": 3, "mode": "standard"}
        mine = {"connect_timeout": limit, "read_timeout": limit, "retries": retries}
        return {"config_kwargs": {**mine, **own.get("config_kwargs", {})}}
    return {}


def row_error(exc: BaseException) -> VidcapError:
    """The per-row error for an exception raised while reaching or reading a remote file."""
    if isinstance(exc, VidcapError):
        return exc
    cause = exc.__cause__ or exc.__context__
    if (
        isinstance(exc, FileNotFoundError)
        and cause is not None
        and (_is_network(cause) or isinstance(getattr(cause, "status", None), int))
    ):
        exc = cause  # fsspec's HTTP info() words any failure ("not reachable", 403, 500) as "not found"
    text = first_line(exc) or type(exc).__name__
    certificate = _certificate_error(exc)
    if certificate is not None:
        return VidcapError(
            CERTIFICATE,
            f"the server's TLS certificate is not trusted ({first_line(certificate)}); "
            "set SSL_CERT_FILE to a bundle that holds its CA; the row is redone on the next run",
        )
    if _names(exc) & CREDENTIAL_ERRORS:
        return VidcapError(ENVIRONMENT, f"no usable credentials ({text}); the row is redone on the next run")
    if isinstance(exc, FileNotFoundError):
        return VidcapError(MISSING, "no such file (the URL answers 'not found')")
    if isinstance(exc, IsADirectoryError):
        return VidcapError(NOT_A_FILE, "path is a directory")
    if isinstance(exc, PermissionError):
        return VidcapError(ENVIRONMENT, f"access denied ({text}); check the credentials (redone on the next run)")
    status = getattr(exc, "status", None)  # aiohttp's ClientResponseError
    if isinstance(status, int):
        if status in (404, 410):
            return VidcapError(MISSING, f"no such file (HTTP {status})")
        if status in (401, 403):
            return VidcapError(
                ENVIRONMENT,
                f"access denied (HTTP {status}); check the URL and its credentials (redone on the next run)",
            )
        if status >= 500 or status == 429:
            return VidcapError(TIMEOUT, f"the server answered HTTP {status}; the row is retried on resume")
        return VidcapError(DECODE, f"the server answered HTTP {status} ({text})")
    if _is_network(exc):
        return VidcapError(TIMEOUT, f"could not read from the network ({text}); the row is retried on resume")
    return VidcapError(DECODE, text)


CREDENTIAL_ERRORS = {
    "NoCredentialsError",
    "PartialCredentialsError",
    "CredentialRetrievalError",
    "DefaultCredentialsError",
}


def _names(exc: BaseException) -> set[str]:
    return {c.__name__ for c in type(exc).__mro__}


def _certificate_error(exc: BaseException | None) -> BaseException | None:
    """The certificate failure in `exc` or its causes (ssl's, or aiohttp's wrapper of it), None if none."""
    seen = 0
    while exc is not None and seen < 8:
        if _names(exc) & {"SSLCertVerificationError", "ClientConnectorCertificateError"}:
            return exc
        if "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def _is_network(exc: BaseException) -> bool:
    if isinstance(exc, (TimeoutError, ConnectionError, socket.gaierror)):  # gaierror: a name lookup that failed
        return True
    names = {c.__name__ for c in type(exc).__mro__}
    # aiohttp, botocore and requests word the same failures in their own classes
    network = {
        "ClientConnectionError",
        "ClientPayloadError",
        "ServerTimeoutError",
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ReadTimeoutError",
        "ConnectionClosedError",
        "FSTimeoutError",
        "HTTPClientError",
        "ResponseStreamingError",
        "IncompleteRead",
    }
    return bool(names & network) or (
        isinstance(exc, OSError) and exc.errno in (errno.ECONNRESET, errno.ECONNREFUSED, errno.ETIMEDOUT)
    )


def check_url(url: str) -> str:
    """`url` if it names a non-empty file; else the row's VidcapError (missing, not_a_file, decode...)."""
    fs, path = filesystem(url)
    try:
        info = fs.info(path)
    except Exception as exc:  # noqa: BLE001 - each filesystem raises its own kinds; row_error words them
        raise row_error(exc) from None
    if info.get("type") == "directory":
        raise VidcapError(NOT_A_FILE, "path is a directory")
    if info.get("size") == 0:
        raise VidcapError(DECODE, "empty file (0 bytes)")
    return url


def is_iso_media(first: bytes) -> bool:
    """MP4/MOV/3GP (ISO base media): the first box is `ftyp` (or an old QuickTime `moov`/`mdat`/`wide`/`free`)."""
    return first[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free")


def head(url: str, n: int = 32) -> bytes:
    """The first `n` bytes of `url` in one small request (a still image is told by its first bytes)."""
    fs, path = filesystem(url)
    try:
        with fs.open(path, "rb", block_size=max(n, 1 << 12), cache_type="none") as f:  # exactly n bytes
            return f.read(n)
    except Exception as exc:  # noqa: BLE001 - as in check_url
        raise row_error(exc) from None


class RemoteFile(io.RawIOBase):
    """A seekable reader of one URL for PyAV and Pillow. The first network error is kept in `error`: PyAV
    may swallow an exception raised in a read callback and report a damaged file instead, so the caller
    raises `error` when it is set."""

    def __init__(self, url: str, block: int = BLOCK):
        super().__init__()
        self.url, self.block = url, block
        self.error: VidcapError | None = None
        # True while a scan only needs the container's index: reads return zeros and fetch nothing
        self.skip_payload = False
        self._spool = None
        self._until = time.monotonic() + deadline_s()
        fs, path = filesystem(url)
        try:
            self._f = fs.open(path, "rb", block_size=block, cache_type="mmap")
            if type(self._f).__name__ == "HTTPStreamFile" or not self._ranges_work():
                self._spool = self._download(fs, path)
        except VidcapError:
            raise
        except Exception as exc:  # noqa: BLE001 - as in check_url
            raise row_error(exc) from None

    def _ranges_work(self) -> bool:
        """An HTTP server may ignore Range and send the whole file: ask for the last byte once to know."""
        size = getattr(self._f, "size", None) or 0
        fetch = getattr(self._f, "_fetch_range", None)
        if protocol(self.url) not in ("http", "https") or size <= self.block or fetch is None:
            return True  # one request reads it all, or an object store (ranges always work)
        try:
            return len(fetch(size - 1, size)) == 1
        except ValueError:  # fsspec: "The HTTP server doesn't appear to support range requests"
            return False

    def _download(self, fs, path):
        """The whole file into the temporary file, in one streamed GET."""
        if type(self._f).__name__ != "HTTPStreamFile":
            self._f.close()
            self._f = fs.open(path, "rb", block_size=0)
        spool = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as this reader (closed in close())
        while chunk := self._f.read(BLOCK):
            spool.write(chunk)
            self._check_deadline()
        spool.seek(0)
        return spool

    def _check_deadline(self) -> None:
        if time.monotonic() > self._until:
            self.error = self.error or VidcapError(
                TIMEOUT,
                f"reading the file took longer than {deadline_s():.0f} s in all (VIDCAP_REMOTE_DEADLINE); "
                "the row is retried on resume",
            )
            raise self.error

    @property
    def _src(self):
        return self._spool if self._spool is not None else self._f

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.skip_payload:
            pos, end = self._src.tell(), self.size()
            n = max(0, min(end - pos, size if size >= 0 else end - pos))
            self._src.seek(pos + n)
            return bytes(n)
        self._check_deadline()
        try:
            return self._src.read(size)
        except VidcapError:
            raise
        except Exception as exc:  # noqa: BLE001 - as in check_url
            self.error = self.error or row_error(exc)
            raise self.error from None

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._src.seek(offset, whence)

    def tell(self) -> int:
        return self._src.tell()

    def size(self) -> int:
        if self._spool is not None:
            return os.fstat(self._spool.fileno()).st_size
        return int(getattr(self._f, "size", 0) or 0)

    def fetched_bytes(self) -> int:
        """Bytes requested from the server so far (the whole file when it was streamed)."""
        if self._spool is not None:
            return os.fstat(self._spool.fileno()).st_size
        return int(getattr(getattr(self._f, "cache", None), "total_requested_bytes", 0))

    def close(self) -> None:
        if not self.closed:
            for f in (self._f, self._spool):
                if f is not None:
                    with contextlib.suppress(Exception):  # closing a broken connection may raise again
                        f.close()
        super().close()
