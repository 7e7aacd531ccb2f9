"""The cells of a run's row that a decode worker reads (the resolved path, the range), without pandas.

`vidcap.manifest` re-exports all of it; it lives apart so that decode workers (motion's) start without
importing pandas (about 0.25 s of CPU each). Range rows (docs/ranges.md): numeric `start_time` and
`end_time` (seconds, end exclusive) name a part of the file. A cell counts as a time when it is a finite
number or text of a decimal number (ASCII digits, spaces around allowed): the same rule
`vidcap.tables.key_sql` applies in SQL, so both give one key.
"""

from __future__ import annotations

import hashlib
import math
import re
from numbers import Integral
from typing import cast

from .errors import RANGE, VidcapError

# the row's id and resolved path (internal columns of a run's tables, never written to an output)
RID = "_vidcap_rid"
ABSPATH = "_vidcap_abspath"
RANGE_COLUMNS = ("start_time", "end_time")
TIME_TEXT = r"^[ \t\n\r\f]*([+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)[ \t\n\r\f]*$"
_TIME_TEXT = re.compile(TIME_TEXT)
BLANK_TEXT = r"[ \t\n\r\f]*"  # an empty cell's text (the spaces TIME_TEXT allows: SQL's regexp matches alike)
_BLANK_TEXT = re.compile(BLANK_TEXT)


def time_value(value) -> float | None:
    """A range cell as seconds; None when it is empty or not a finite number."""
    if value is None or isinstance(value, bool):
        return None
    try:
        if isinstance(value, (int, float)):
            f = float(value)
        else:
            m = _TIME_TEXT.match(str(value))
            if m is None:
                return None
            f = float(m.group(1))
    except (OverflowError, ValueError):
        return None
    return f + 0.0 if math.isfinite(f) else None  # + 0.0: -0.0 is 0.0


def row_range(row: dict) -> tuple[float, float] | None:
    """(start, end) seconds of a range row; None for a whole-file row (either cell empty or not a number)."""
    start, end = time_value(row.get("start_time")), time_value(row.get("end_time"))
    return None if start is None or end is None else (start, end)


def range_key(row: dict) -> str | None:
    """The `#t=` part of a row's id: START,END (each as Python's repr) for a range row, None for a whole-file
    row (both cells empty). A row whose cells are set but make no range (`0:01`, `N/A`, `inf`, one cell empty)
    is `?` and a hash of their text, so it is never one row with the file's whole-file row or with another
    unusable range: each fails `range` with its own words (read_range). `vidcap.tables.key_sql` is the same
    rule in SQL."""
    span = row_range(row)
    if span is not None:
        return f"{span[0]!r},{span[1]!r}"
    cells = ["" if _empty_cell(v) else _cell_text(v) for v in (row.get(c) for c in RANGE_COLUMNS)]
    if not any(cells):
        return None
    return "?" + hashlib.sha1("\x1f".join(cells).encode("utf-8", "surrogatepass")).hexdigest()[:8]


def _cell_text(value) -> str:
    """A cell as DuckDB's cast to VARCHAR writes it (a float as Python's repr, which DuckDB's matches)."""
    if isinstance(value, float):
        return repr(float(value))
    return str(int(value)) if isinstance(value, Integral) else str(value)


def read_range(row: dict) -> tuple[float, float] | None:
    """`row_range`, but a range cell that is set and unusable (not a number, the other one empty, end not
    after start, negative) is VidcapError `range`: the row fails, it is never read as the whole file."""
    cells = {c: row.get(c) for c in RANGE_COLUMNS}
    given = {c: v for c, v in cells.items() if not _empty_cell(v)}
    if not given:
        return None
    for c, v in given.items():
        if time_value(v) is None:
            raise VidcapError(RANGE, f"{c} {str(v)[:40]!r} is not a number of seconds")
    if len(given) < len(cells):
        (c,) = set(cells) - set(given)
        raise VidcapError(RANGE, f"{c} is empty while {next(iter(given))} is set; give both or neither")
    span = cast(tuple[float, float], row_range(row))
    if span[0] < 0:
        raise VidcapError(RANGE, f"start_time {span[0]!r} is before the video's start")
    if span[1] <= span[0]:
        raise VidcapError(RANGE, f"empty range: end_time {span[1]!r} is not after start_time {span[0]!r}")
    return span


def _empty_cell(value) -> bool:
    return (
        value is None
        or (isinstance(value, float) and value != value)
        or (isinstance(value, str) and _BLANK_TEXT.fullmatch(value) is not None)
    )
