"""Timelines of range rows: the ranges of one source video in time order, each with its start-end, status and
caption, above a bar that draws them to scale (a failed range red, gaps left blank). Shown only when the table
has range rows (`start_time`/`end_time`, docs/ranges.md)."""

from __future__ import annotations

import os
from html import escape

import pandas as pd

from ..manifest import RANGE_COLUMNS, row_range

MAX_VIDEOS = 30
MAX_RANGES = 200  # listed per video (the bar draws them all)
CAPTION_CHARS = 300
BAR_W, BAR_H = 900, 18

CSS = """
.timelines{padding:0 24px 16px}.timelines h2{font-size:16px;margin:12px 0 6px}
.tl{background:#fff;border:1px solid #dde1e6;border-radius:6px;padding:8px 10px;margin:0 0 10px}
.tl h3{font-size:13px;margin:0 0 4px;word-break:break-all}.tl svg{display:block;margin:4px 0;max-width:100%}
.tl table{border-collapse:collapse;width:100%;font-size:12px}.tl td,.tl th{border-top:1px solid #eef1f5;
padding:3px 6px;vertical-align:top;text-align:left}.tl td.t{white-space:nowrap;font-family:monospace}
.tl tr.failed td{background:#fff1f0}.tl .err{color:#a01818;font-family:monospace}
"""


def span_of(row: dict) -> tuple[float, float] | None:
    """A row's (start, end) seconds, None for a whole-file row."""
    return row_range(row)


def range_label(span: tuple[float, float]) -> str:
    return f"{_t(span[0])}-{_t(span[1])}"


def _t(s: float) -> str:
    """Seconds as m:ss.ss (or h:mm:ss.ss)."""
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    return (f"{int(h)}:{int(m):02d}:" if h else f"{int(m)}:") + f"{sec:05.2f}"


def timelines_section(df: pd.DataFrame, errors: pd.Series, shown: set[int] | None = None) -> str:
    """One timeline per source video that has range rows (the videos with most ranges first)."""
    if not set(RANGE_COLUMNS) <= set(df.columns) or "path" not in df.columns:
        return ""
    spans = [span_of(r) for r in df[["path", *RANGE_COLUMNS]].to_dict("records")]
    ranged = pd.DataFrame({"path": df["path"].astype(str), "span": spans, "pos": df.index}).dropna(subset=["span"])
    if ranged.empty:
        return ""
    groups = sorted(ranged.groupby("path", sort=False), key=lambda g: -len(g[1]))
    body = [
        _video(path, g.sort_values("span", key=lambda s: s.map(lambda v: v[0])), df, errors, shown)
        for path, g in groups[:MAX_VIDEOS]
    ]
    more = f" (the {MAX_VIDEOS} with most ranges)" if len(groups) > MAX_VIDEOS else ""
    return (
        f'<section class="timelines"><h2>Timelines: {len(ranged):,} ranges of {len(groups):,} videos{more}</h2>'
        + "".join(body)
        + "</section>"
    )


def _video(path: str, g: pd.DataFrame, df: pd.DataFrame, errors: pd.Series, shown: set[int] | None) -> str:
    end = max(s[1] for s in g["span"]) or 1.0
    bars: list[str] = []
    rows: list[str] = []
    for pos, span in zip(g["pos"], g["span"], strict=True):
        row = df.loc[pos]
        err = str(errors.get(pos, "") or "")
        x, w = BAR_W * span[0] / end, max(1.0, BAR_W * (span[1] - span[0]) / end)
        colour = "#d62728" if err else ("#4e79a7" if len(bars) % 2 == 0 else "#76b7b2")
        bars.append(
            f'<rect x="{x:.1f}" y="0" width="{w:.1f}" height="{BAR_H}" fill="{colour}">'
            f"<title>{escape(range_label(span))}</title></rect>"
        )
        if len(rows) < MAX_RANGES:
            rows.append(_range_row(int(pos), row.to_dict(), span, err, shown))
    svg = f'<svg width="{BAR_W}" height="{BAR_H}" viewBox="0 0 {BAR_W} {BAR_H}" role="img">{"".join(bars)}</svg>'
    left = f"<p>{len(g) - MAX_RANGES} more ranges not listed</p>" if len(g) > MAX_RANGES else ""
    return (
        f'<div class="tl"><h3 title="{escape(path)}">{escape(os.path.basename(path) or path)}: {len(g)} ranges, '
        f"0:00.00-{escape(_t(end))}</h3>{svg}<table><tr><th>#</th><th>range</th><th>s</th><th>caption</th></tr>"
        f"{''.join(rows)}</table>{left}</div>"
    )


def _range_row(pos: int, row: dict, span: tuple[float, float], err: str, shown: set[int] | None) -> str:
    scene = row.get("scene")
    if isinstance(scene, float) and scene.is_integer():
        scene = int(scene)
    label = f"scene {scene}" if scene is not None and str(scene).strip() and str(scene) != "nan" else f"row {pos}"
    link = f'<a href="#row-{pos}">{escape(label)}</a>' if shown is None or pos in shown else escape(label)
    text = row.get("text")
    caption = "" if text is None or (isinstance(text, float) and text != text) else str(text)
    if len(caption) > CAPTION_CHARS:
        caption = caption[:CAPTION_CHARS].rsplit(" ", 1)[0] + " ..."
    cell = f'<span class="err">{escape(err)}</span>' if err else escape(caption)
    return (
        f'<tr class="{"failed" if err else "ok"}"><td>{link}</td><td class="t">{escape(range_label(span))}</td>'
        f"<td>{span[1] - span[0]:.2f}</td><td>{cell}</td></tr>"
    )


def add_timelines(html: str, df: pd.DataFrame, errors: pd.Series, shown: set[int] | None = None) -> str:
    """The page with the timelines put before the cards (unchanged when the table has no range rows)."""
    extra = timelines_section(df, errors, shown)
    if not extra:
        return html
    html = html.replace("</style>", CSS + "</style>", 1)
    return html.replace('<section class="cards">', extra + '<section class="cards">', 1)
