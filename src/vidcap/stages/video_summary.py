"""Whole-video summaries from window (or scene) captions: `vidcap summarize` and `caption --window --summary`.

A captioned range table (one row per window: `path`, `start_time`, `end_time`, the caption) is grouped into
one row per source video whose `timeline` column lists the captions in time order (`[0:10-0:20] caption`);
the summary stage sends each timeline to a text chat model (the tag stage's backends: hf, openai, fake) and
writes its answer to `summary`. The timeline table is an ordinary manifest, so the run has the same parts,
resume, per-row errors and executors as every stage; its row key is the path and the timeline's text, so a
video whose window captions changed is summarised again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd

from .. import tables
from ..backends.llm import ChatRequest
from ..errors import EMPTY_TEXT, UsageError, VidcapError
from ..manifest import ABSPATH, is_relative, resolve_path, write_table
from ..prompts.summary import SummaryPrompt
from .base import Item, Stage

TIMELINE = "timeline"


def clock(seconds: float) -> str:
    """0:07, 12:30, 1:02:03: the shortest clock that shows a time to the second."""
    s = max(0, round(float(seconds)))
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def _cell(value) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()


def _line(row: dict, text_column: str) -> str:
    """A window's line of the timeline (`[0:10-0:20] caption`), or "" when its caption failed."""
    text = _cell(row.get(text_column))
    if not text or _cell(row.get("status") or "ok") != "ok":
        return ""
    span = "whole video" if pd.isna(row["_start"]) else f"{clock(row['_start'])}-{clock(row['_end'])}"
    return f"[{span}] {' '.join(text.split())}"


def timeline_rows(captions, text_column: str = "text", home: str | None = None) -> pd.DataFrame:
    """One row per source video of a captioned range table: `path`, `windows`, `failed_windows`,
    `first_window_start`, `last_window_end` and `timeline`. Rows alike (same video, span and caption) are one
    window. A window whose caption failed is left out and counted; a video none of whose windows has a caption
    gets an empty timeline (its row fails `empty_text`). Relative paths are rewritten relative to `home` (the
    folder the timeline table is written to)."""
    names = tables.columns(captions)
    need = {"path", "start_time", "end_time", text_column}
    if not need <= set(names):
        missing = ", ".join(sorted(need - set(names)))
        raise UsageError(
            f"{captions} has no {missing} column; summarize takes the output of `vidcap caption --window` "
            "(or a captioned scenes table)."
        )
    cols = [c for c in ("path", "start_time", "end_time", text_column, "status") if c in names]
    df = tables.read(captions, cols)
    base = os.path.dirname(os.path.abspath(str(captions)))
    df["_abs"] = [resolve_path(p, base) for p in df["path"]]
    df["_start"] = pd.to_numeric(df["start_time"], errors="coerce")
    df["_end"] = pd.to_numeric(df["end_time"], errors="coerce")
    df["_line"] = [_line(row, text_column) for row in df.to_dict("records")]
    # a video listed twice in the scenes' manifest has each window twice, alike: it is one window
    df = df.sort_values(["_abs", "_start"], kind="stable").drop_duplicates(["_abs", "_start", "_end", "_line"])
    out = []
    for path, rows in df.groupby("_abs", sort=False):
        lines = [line for line in rows["_line"] if line]
        given = rows["path"].iloc[0]
        out.append(
            {
                "path": os.path.relpath(path, home) if home and is_relative(given) else path,
                "windows": len(rows),
                "failed_windows": len(rows) - len(lines),
                "first_window_start": rows["_start"].min(),
                "last_window_end": rows["_end"].max(),
                TIMELINE: "\n".join(lines),
            }
        )
    return pd.DataFrame(out)


def write_timelines(captions, target, text_column: str = "text") -> Path:
    """The timeline table of `captions` as Parquet at `target` (the summary run's manifest)."""
    target = Path(target)
    frame = timeline_rows(captions, text_column, home=str(target.resolve().parent))
    if frame.empty:
        raise UsageError(f"{captions} has no rows; there is nothing to summarise.")
    write_table(frame, target)
    return target


class TimelineLoader:
    """Runs on the loader side: the timeline, or `empty_text` so the row never reaches the model."""

    def __call__(self, row: dict) -> str:
        text = _cell(row.get(TIMELINE))
        if not text:
            raise VidcapError(
                EMPTY_TEXT,
                f"none of this video's {_cell(row.get('windows')) or 0} windows has a caption, so there is "
                "nothing to summarise (see the captions table's errors)",
            )
        return text


class SummaryStage(Stage):
    """`SummaryStage(backend, prompt=None, batch_size=16)`: each row's `timeline` -> one paragraph."""

    name = "summary"
    suffix = "summary"
    columns = ["summary"]  # noqa: RUF012
    required_columns = (TIMELINE,)
    reads_files = False  # the summary comes from the captions, not the file
    default_workers = 0

    def __init__(self, backend, prompt: SummaryPrompt | None = None, batch_size: int = 16):
        self.backend = backend
        self.prompt = prompt or SummaryPrompt()
        self.batch_size = max(1, int(batch_size))
        self.model_failed = 0

    def fingerprint(self) -> dict:
        opts = self.backend.options
        return {
            "stage": self.name,
            "prompt": self.prompt.fingerprint(),
            "backend": self.backend.name,
            "model": self.backend.model,
            "max_new_tokens": opts.max_new_tokens,
            "temperature": opts.temperature,
        }

    def provenance(self) -> dict:
        return dict(self.fingerprint(), engine=self.backend.provenance())

    def row_key(self, row: dict) -> str:
        """Path and timeline: a video whose window captions changed is a new row."""
        ident = f"{row.get(ABSPATH) or ''}\x00{_cell(row.get(TIMELINE))}"
        return hashlib.sha1(ident.encode("utf-8", "surrogatepass")).hexdigest()[:20]

    def loader(self) -> TimelineLoader:
        return TimelineLoader()

    def setup(self, device: str | None = None) -> None:
        self.backend.setup(device)

    def process_batch(self, items: list[Item]) -> list[dict]:
        results = self.backend.chat([ChatRequest(self.prompt.messages(item.data)) for item in items])
        out: list[dict] = []
        for res in results:
            text = " ".join((res.text or "").split())
            if res.error:
                self.model_failed += 1
                out.append({"error": res.error, "summary": None})
            elif not text:
                out.append({"error": VidcapError(EMPTY_TEXT, "the model answered with no text").text, "summary": None})
            else:
                out.append({"summary": text})
        return out

    def teardown(self) -> None:
        self.backend.teardown()

    def summary_extra(self) -> dict:
        usage = self.backend.usage_summary() or {}
        return {"model": self.backend.model, **{k: v for k, v in usage.items() if k not in ("model", "failed", "ok")}}
