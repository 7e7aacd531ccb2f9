"""The tag distribution of a tagged manifest: counts per tag, a text table and a bar chart."""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from .. import tables
from ..errors import UsageError
from .parse import tags_from_cell


def missing_key_message(df: pd.DataFrame, key: str) -> str:
    """One sentence naming the column the user probably meant: tag-list columns and close spellings first,
    then every column (or the first 40 and how many more)."""
    import difflib

    cols = [str(c) for c in df.columns]
    lists = [c for c in cols if _holds_lists(df[c])]
    close = difflib.get_close_matches(key, cols, n=3, cutoff=0.6)
    guess = list(dict.fromkeys(lists + close))
    shown = ", ".join(cols[:40]) + (f" and {len(cols) - 40} more" if len(cols) > 40 else "")
    hint = f"; did you mean {' or '.join(repr(c) for c in guess)}?" if guess else ""
    return f"the table has no '{key}' column{hint} (columns: {shown}); pass the --key it was tagged with."


def _holds_lists(col: pd.Series) -> bool:
    """A tag column: its cells are lists, or JSON list strings as CSV stores them."""
    for value in col.dropna().head(20):
        if isinstance(value, str):
            if value.strip().startswith("["):
                return True
        elif hasattr(value, "__len__") and not isinstance(value, (bytes, dict)):
            return True
    return False


def count_tags(df: pd.DataFrame, key: str) -> tuple[pd.DataFrame, dict]:
    """Rows per tag (a tag counts once per row), most frequent first, and row totals."""
    if key not in df.columns:
        raise UsageError(missing_key_message(df, key))
    return count_tag_batches([df], key)


def count_tag_batches(frames: Iterable[pd.DataFrame], key: str) -> tuple[pd.DataFrame, dict]:
    """`count_tags` over a table read in batches (each holding `key`, and `status` if the table has it)."""
    counter: Counter = Counter()
    rows = tagged = empty = missing = 0
    for df in frames:
        rows += len(df)
        failed = df["status"].astype(str).eq("failed") if "status" in df.columns else pd.Series(False, index=df.index)
        for value, bad in zip(df[key], failed, strict=False):
            tags = None if bad else tags_from_cell(value)
            if tags is None:
                missing += 1
                continue
            tagged += 1
            empty += not tags
            counter.update(tags)
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
    counts = pd.DataFrame(ranked, columns=["tag", "count"])
    counts["share"] = counts["count"] / tagged if tagged else 0.0
    totals = {
        "rows": rows,
        "tagged": tagged,
        "no_tags": empty,
        "failed": missing,
        "distinct": len(counter),
        "total": sum(counter.values()),
    }
    return counts, totals


def format_table(counts: pd.DataFrame, totals: dict, key: str, top: int) -> str:
    head = (
        f"{key}: {totals['rows']} rows, {totals['tagged']} tagged ({totals['no_tags']} with no tags), "
        f"{totals['failed']} failed or untagged; {totals['distinct']} distinct tags"
    )
    shown = counts.head(top) if top > 0 else counts
    if shown.empty:
        return head + "\n(no tags)"
    width = max(3, *(len(t) for t in shown["tag"]))
    lines = [head, f"{'#':>4}  {'tag':<{width}}  {'rows':>7}  {'share':>6}"]
    for i, r in enumerate(shown.itertuples(index=False), 1):
        lines.append(f"{i:>4}  {r.tag:<{width}}  {r.count:>7}  {r.share:>6.1%}")
    if len(counts) > len(shown):
        lines.append(f"({len(counts) - len(shown)} more tags not shown; raise --top to see them)")
    return "\n".join(lines)


def bar_chart(counts: pd.DataFrame, key: str, png: str | os.PathLike, top: int, title: str = "") -> Path:
    """Horizontal bars, most frequent tag on top; drawn with the Agg canvas so no display is needed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    shown = counts.head(top) if top > 0 else counts
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(8, max(2.5, 0.28 * len(shown) + 1.2)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    labels = list(shown["tag"])[::-1]
    values = list(shown["count"])[::-1]
    bars = ax.barh(range(len(values)), values, color="#4C78A8")
    ax.bar_label(bars, padding=2, fontsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_yticks(range(len(values)))
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel("rows")
    ax.set_title(title or f"top {len(shown)} {key}")
    if not values:
        ax.text(0.5, 0.5, "no tags", ha="center", va="center", transform=ax.transAxes)
    with warnings.catch_warnings():  # tags in scripts the default font lacks draw as boxes; no need to warn
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        fig.tight_layout()
        fig.savefig(png, format="png")
    return png


def tag_stats(
    output_path: str | os.PathLike, key: str, top: int = 50, png: str | os.PathLike | None = None
) -> tuple[pd.DataFrame, str]:
    """Counts per tag in a `vidcap tag` output (Parquet lists or CSV JSON arrays; the seed's CSVs too)."""
    if top < 0:
        raise UsageError(f"--top must be 0 (all) or more, not {top}.")
    names = tables.columns(output_path)  # only the tag and status columns are read, batch by batch
    if key not in names:  # the first rows say which columns hold tag lists
        raise UsageError(missing_key_message(next(tables.batches(output_path, rows=200)), key))
    wanted = [key] + (["status"] if "status" in names else [])
    counts, totals = count_tag_batches(tables.batches(output_path, wanted), key)
    table = format_table(counts, totals, key, top)
    if png is not None:
        bar_chart(
            counts, key, png, top, f"{key} in {Path(output_path).name} (top {min(top or len(counts), len(counts))})"
        )
    return counts, table
