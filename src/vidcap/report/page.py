"""HTML of the review page: summary charts on top, one card per sampled row. Static, inline CSS only."""

from __future__ import annotations

import json
import os
from collections import Counter
from html import escape

import pandas as pd

from ..checks import FLAGS
from ..errors import error_code
from ..manifest import row_range, with_ranges
from .charts import WARN, bar_chart, histogram
from .table import list_cell

CSS = """
*{box-sizing:border-box}body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d1f23}
header.top{padding:16px 24px;background:#1d2633;color:#fff}header.top h1{margin:0 0 4px;font-size:20px}
header.top p{margin:2px 0;color:#c9d1dc}.charts{display:flex;flex-wrap:wrap;gap:12px;padding:16px 24px}
.chartbox{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:10px}
svg .ct{font:600 13px system-ui,sans-serif}svg .cl,svg .cv{font:11px system-ui,sans-serif;fill:#444}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:12px;padding:0 24px 24px}
.card{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:10px;overflow:hidden}
.card.failed{border:2px solid #d62728;background:#fff1f0}.card.flagged{border-left:5px solid #f2a900}
.card h2{font-size:13px;margin:0 0 6px;display:flex;gap:8px;align-items:baseline;word-break:break-all}
.card h2 .n{color:#777;font-weight:400}.badge{border-radius:3px;padding:1px 6px;font-size:12px;font-weight:600}
.badge.ok{background:#e3f4e6;color:#1b6b2a}.badge.failed{background:#d62728;color:#fff}
.strip{display:flex;gap:4px;overflow-x:auto;margin:4px 0}
.strip figure{margin:0;text-align:center;flex:0 1 auto;min-width:80px;max-width:160px}
.strip img{display:block;width:100%;height:auto;max-height:160px;object-fit:contain;border-radius:3px}
.strip figcaption{font-size:10px;color:#777}.nothumb{color:#999;font-style:italic;padding:8px 0}
.error{background:#d62728;color:#fff;padding:6px 8px;border-radius:4px;margin:6px 0;font-family:monospace}
.error b{font-size:13px}.caption{margin:6px 0;white-space:pre-wrap}
.caption,.error,.meta dd{overflow-wrap:anywhere;min-width:0}
.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 10px;margin:6px 0 0;font-size:12px}
.meta dt{color:#666}.meta dd{margin:0}.chip{display:inline-block;background:#eef1f5;border-radius:10px;
padding:0 7px;margin:1px 2px 1px 0;font-size:12px}.flag{background:#fde2c4;color:#7a3d00;font-weight:600}
.note{color:#8a6d00;font-size:12px}.fields{display:grid;grid-template-columns:max-content 1fr;gap:2px 10px;
margin:6px 0}.fields dt{color:#445;font-weight:600}.fields dd{margin:0;overflow-wrap:anywhere;min-width:0}
.variant{margin:6px 0}.variant h3{font-size:12px;margin:0;color:#556}
"""

MOTION_NUMBERS = (("motion_dx", "dx"), ("motion_dy", "dy"), ("motion_zoom", "zoom"), ("motion_confidence", "conf"))
DETAILS = ("num_frames", "fps", "width", "height", "model", "prompt", "finish_reason", "completion_tokens")


def _blank(v) -> bool:
    return v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip())


def _fmt(v) -> str:
    """A number as people write it: CSV turns whole-number columns with gaps into floats (15000.0), which must
    not read 1.5e+04; fps and motion figures keep four significant digits."""
    if isinstance(v, float):
        if v.is_integer():
            return str(int(v))
        return f"{v:,.0f}" if abs(v) >= 1e4 else f"{v:.4g}"
    return str(v)


def has_captions(df: pd.DataFrame) -> bool:
    """Whether the table holds a caption run's output. A motion or tag run keeps its input's columns, so a
    manifest's old `text` alone does not make captions to chart."""
    return "text_raw" in df.columns or "flags" in df.columns


def summary_charts(
    df: pd.DataFrame, errors: pd.Series, flags: pd.Series, tag_cols: list[str], top_tags: int = 15
) -> list[str]:
    """SVG charts over every row of the table: whatever of caption, flags, errors, motion, tags exists."""
    charts = []
    ok = errors == ""
    captions = has_captions(df)
    if captions and "text" in df.columns:
        words = [len(str(t).split()) for t, good in zip(df["text"], ok, strict=False) if good and not _blank(t)]
        charts.append(histogram("Caption length", words, "caption-length"))
    if captions:
        counts = Counter(f for fs in flags for f in fs)
        items = [(f, counts.get(f, 0)) for f in FLAGS] + sorted((k, v) for k, v in counts.items() if k not in FLAGS)
        charts.append(bar_chart("Caption flags (rows)", items, "flags", WARN))
    # clips, as the run's summary counts them: a clip (or a range of one) listed twice in the manifest is one clip
    first = ~_clip_keys(df).duplicated() if "path" in df.columns else pd.Series(True, index=df.index)
    first = first.to_numpy()
    codes = Counter(error_code(e.split("; ")[0]) for e, f in zip(errors, first, strict=True) if e and f)
    n_ok, n_failed, dups = int((ok & first).sum()), int((~ok & first).sum()), int((~first).sum())
    charts.append(
        bar_chart(
            f"Status ({n_ok:,} ok, {n_failed:,} failed" + (f"; {dups:,} duplicate rows" if dups else "") + ")",
            [("ok", n_ok)] + codes.most_common(),
            "status",
        )
    )
    if "cmotion" in df.columns:
        labels = Counter(str(v) for v in df["cmotion"] if not _blank(v))
        charts.append(bar_chart("Camera motion", labels.most_common(12), "motion"))
    for col in tag_cols:
        tags = Counter(t for c in df[col] for t in set(list_cell(c) or []))
        charts.append(bar_chart(f"Top {col}", tags.most_common(top_tags), f"tags-{col}"))
    return charts


def _clip_keys(df: pd.DataFrame) -> pd.Series:
    """What makes a row one clip: its path, and its range for a range row."""
    return pd.Series(with_ranges(df["path"].astype(str).tolist(), df), index=df.index)


def _strip(thumbs) -> str:
    if thumbs is None:
        return '<div class="nothumb">no frames shown</div>'
    if not thumbs.images:
        return f'<div class="nothumb">thumbnails unavailable: {escape(thumbs.error or "no frames")}</div>'
    figs = [
        f'<figure><img alt="frame {i}" src="data:image/jpeg;base64,{b64}">'
        f"<figcaption>{'image' if thumbs.is_image else f'frame {i}'}</figcaption></figure>"
        for i, b64 in thumbs.images
    ]
    note = f'<div class="note">{escape(thumbs.note)}</div>' if thumbs.note else ""
    return f'<div class="strip">{"".join(figs)}</div>{note}'


def _fields(value, prefix: str = "") -> list[tuple[str, str]]:
    """A structured caption's fields as (dotted name, text), in the JSON's own order; lists joined with '; '."""
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in _fields(v, f"{prefix}{k}.")]
    if isinstance(value, list) and not any(isinstance(v, (dict, list)) for v in value):
        return [(prefix[:-1], "; ".join(str(v) for v in value))]
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in _fields(v, f"{prefix}{i}.")]
    return [(prefix[:-1], "" if value is None else str(value))]


def caption_html(text: str) -> str:
    """A caption as the page shows it: a structured (JSON object) caption field by field, else the text."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except ValueError:
            value = None
        if isinstance(value, dict) and value:
            rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in _fields(value))
            return f'<dl class="fields">{rows}</dl>'
    return f'<p class="caption">{escape(text)}</p>'


def variant_columns(columns) -> list[str]:
    """Columns holding caption variants (`caption_<name>`, from `caption --variants`)."""
    return [c for c in columns if str(c).startswith("caption_")]


def _motion(row: dict) -> str:
    label = row.get("cmotion")
    if _blank(label):
        return ""
    nums = ", ".join(f"{short} {_fmt(row[k])}" for k, short in MOTION_NUMBERS if not _blank(row.get(k)))
    text = f'<span class="chip">{escape(str(label))}</span>' + (f" {escape(nums)}" if nums else "")
    if not _blank(row.get("note")):
        text += f' <span class="note">{escape(str(row["note"]))}</span>'
    return text


def card(pos: int, row: dict, error: str, flags: list[str], thumbs, tag_cols: list[str], captions: bool = True) -> str:
    """One sampled row: header, frame strip, error, caption, motion, tags, flags, details.
    captions=False: the table's `text` came from the input (a motion or tag run) and is labelled so."""
    failed = bool(error)
    classes = "card" + (" failed" if failed else "") + (" flagged" if flags else "")
    path = "" if _blank(row.get("path")) else str(row["path"])
    name = os.path.basename(path) or path or "(no path)"
    span = row_range(row)
    if span is not None:  # a range row: which part of the file
        name += (
            f" [{span[0]:g}-{span[1]:g} s" + ("" if _blank(row.get("scene")) else f", scene {_fmt(row['scene'])}") + "]"
        )
    badge = (
        f'<span class="badge failed">{escape(error_code(error.split("; ")[0]) or "failed")}</span>'
        if failed
        else '<span class="badge ok">ok</span>'
    )
    out = [
        f'<article class="{classes}" id="row-{pos}" data-row="{pos}" '
        f'data-status="{"failed" if failed else "ok"}" data-flags="{escape(",".join(flags))}">',
        f'<h2><span class="n">#{pos}</span><span class="path" title="{escape(path)}">{escape(name)}</span>{badge}</h2>',
        _strip(thumbs),
    ]
    if failed:
        code, _, msg = error.partition(":")
        out.append(f'<div class="error"><b>{escape(code)}</b>:{escape(msg)}</div>')
    meta = []
    variants = [c for c in variant_columns(row) if not _blank(row.get(c))] if captions else []
    if "text" in row and not _blank(row.get("text")) and not variants:
        if captions:
            out.append(caption_html(str(row["text"])))
        else:
            meta.append(("input text", escape(str(row["text"]))))
    for col in variants:  # each variant under its name; `text` repeats the first
        out.append(
            f'<div class="variant"><h3>{escape(col.removeprefix("caption_"))}</h3>{caption_html(str(row[col]))}</div>'
        )
    if not _blank(row.get("summary")):
        out.append(f'<div class="variant"><h3>summary</h3>{caption_html(str(row["summary"]))}</div>')
    motion = _motion(row)
    if motion:
        meta.append(("camera motion", motion))
    for col in tag_cols:
        tags = list_cell(row.get(col))
        if tags is not None:
            chips = "".join(f'<span class="chip">{escape(t)}</span>' for t in tags) or "<i>none</i>"
            meta.append((col, chips))
    if flags:
        meta.append(("flags", "".join(f'<span class="chip flag">{escape(f)}</span>' for f in flags)))
    details = ", ".join(f"{k} {_fmt(row[k])}" for k in DETAILS if not _blank(row.get(k)))
    if details:
        meta.append(("details", escape(details)))
    if meta:
        out.append('<dl class="meta">' + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in meta) + "</dl>")
    out.append("</article>")
    return "".join(out)


def page(title: str, lines: list[str], charts: list[str], cards: list[str]) -> str:
    head = "".join(f"<p>{escape(line)}</p>" for line in lines)
    boxes = "".join(f'<div class="chartbox">{c}</div>' for c in charts)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
        f'<header class="top"><h1>{escape(title)}</h1>{head}</header>'
        f'<section class="charts">{boxes}</section>'
        f'<section class="cards">{"".join(cards)}</section></body></html>\n'
    )
