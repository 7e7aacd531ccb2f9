"""Error codes shared by every stage, and the two exception kinds vidcap raises."""

from __future__ import annotations

import os

# Per-row failure codes (stable: users filter on them). Retryable ones are redone on resume.
MISSING = "missing"
EMPTY_PATH = "empty_path"
NOT_A_FILE = "not_a_file"
DECODE = "decode"
SHORT = "short"
EMPTY_TEXT = "empty_text"
TIMEOUT = "timeout"
OOM = "oom"
API = "api"
PARSE = "parse"
MODEL = "model"
WORKER = "worker"
CONTEXT = "context"  # the prompt plus the caption would not fit the model's positions
GROWING = "growing"  # the file changed while it was read (still being written): redone on resume
RANGE = "range"  # a range row's start_time/end_time cannot be read, is empty or lies past the video's end
BUDGET = "budget"  # not sent: it could have passed the output's --budget; redone by a run with a higher one
# The environment, not the clip: redone on the next run once the machine is fixed.
CERTIFICATE = "certificate"  # the server's TLS certificate was not trusted
ENVIRONMENT = "environment"  # a package, a credential or a filesystem driver this row needs is missing

RETRYABLE = frozenset({TIMEOUT, OOM, API, WORKER, GROWING, BUDGET, CERTIFICATE, ENVIRONMENT})


class VidcapError(Exception):
    """One row failed; the run goes on and records `code: message` in the row's error column."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def __reduce__(self):  # survives pickling across worker processes
        return (VidcapError, (self.code, self.message))

    @property
    def text(self) -> str:
        return format_error(self.code, self.message)


class UsageError(Exception):
    """The user asked for something that cannot work; the CLI prints this one sentence and exits 2."""


class FatalRunError(UsageError):
    """The run must stop now (bad API key, disk full); finished rows are already saved."""


def first_line(exc: BaseException, limit: int = 160) -> str:
    """An exception's first message line (or its type name), for one-sentence errors; a long one is cut at a
    word's end, with "..." saying so."""
    return shorten((str(exc).strip().splitlines() or [type(exc).__name__])[0], limit)


def os_reason(exc: BaseException) -> str:
    """Why a file operation failed, in a few words: the OS's text for its errno ("No space left on device"),
    else the exception's first line."""
    num = exc.errno if isinstance(exc, OSError) else None
    return os.strerror(num) if num else first_line(exc)


def shorten(text: str, limit: int) -> str:
    """`text` of at most `limit` characters, cut at a space (never mid-word, unless one word is that long)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 3]
    head = cut.rsplit(" ", 1)[0] if " " in cut[limit // 2 :] else cut
    return head.rstrip(" ,;:(") + "..."


def format_error(code: str, message: str) -> str:
    return f"{code}: {shorten(' '.join(str(message).split()), 300)}"


def error_code(error: str | None) -> str:
    """The code of an `error` cell (`decode: ...` -> `decode`), or "" for none."""
    if not isinstance(error, str) or not error:
        return ""
    return error.split(":", 1)[0].strip()
