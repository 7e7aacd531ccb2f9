"""Small inline SVG charts (no plotting library, no external assets): bar lists and a histogram."""

from __future__ import annotations

from html import escape

import numpy as np

BAR = "#4c78a8"
WARN = "#e45756"


def _num(v: float) -> str:
    return f"{int(v):,}" if float(v).is_integer() else f"{v:.2f}"


def bar_chart(
    title: str, items: list[tuple[str, int]], kind: str, color: str = BAR, label_width: int = 150, width: int = 420
) -> str:
    """Horizontal bars, one per (label, count), in the given order."""
    row_h, top = 20, 26
    height = top + row_h * max(len(items), 1) + 6
    peak = max([c for _, c in items] or [0]) or 1
    span = width - label_width - 60
    parts = [
        f'<svg class="chart" data-chart="{escape(kind)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="0" y="16" class="ct">{escape(title)}</text>',
    ]
    if not items:
        parts.append(f'<text x="0" y="{top + 14}" class="cl">none</text>')
    for i, (label, count) in enumerate(items):
        y = top + i * row_h
        w = max(1.0, span * count / peak) if count else 0
        short = label if len(label) <= 24 else label[:23] + "…"
        parts.append(
            f'<text x="{label_width - 6}" y="{y + 14}" class="cl" text-anchor="end">'
            f"<title>{escape(label)}</title>{escape(short)}</text>"
        )
        parts.append(
            f'<rect class="bar" x="{label_width}" y="{y + 3}" width="{w:.1f}" height="{row_h - 6}" fill="{color}"/>'
        )
        parts.append(f'<text x="{label_width + w + 4:.1f}" y="{y + 14}" class="cv">{_num(count)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(
    title: str, values, kind: str, bins: int = 20, unit: str = "words", width: int = 420, height: int = 190
) -> str:
    """Vertical bars of how many values fall in each of `bins` equal ranges (99th percentile cap)."""
    vals = np.asarray([v for v in values if v == v], dtype=float)
    left, bottom, top = 44, 34, 26
    plot_w, plot_h = width - left - 8, height - top - bottom
    parts = [
        f'<svg class="chart" data-chart="{escape(kind)}" xmlns="http://www.w3.org/2000/svg" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="0" y="16" class="ct">{escape(title)}</text>',
    ]
    if vals.size == 0:
        parts.append(f'<text x="{left}" y="{top + 20}" class="cl">no values</text></svg>')
        return "".join(parts)
    lo, hi = float(np.floor(vals.min())), float(np.ceil(np.percentile(vals, 99)))
    if hi - lo + 1 <= bins:  # few distinct lengths: one bar per value
        bins = int(hi - lo + 1)
        edges = np.arange(lo, hi + 2) - 0.5
    else:
        edges = np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(np.clip(vals, edges[0], edges[-1]), bins=edges)
    peak = int(counts.max()) or 1
    bw = plot_w / bins
    for i, c in enumerate(counts):
        h = plot_h * c / peak
        x, y = left + i * bw, top + plot_h - h
        tip = (
            f"{(edges[i] + edges[i + 1]) / 2:.0f} {unit}: {int(c)}"
            if edges[1] - edges[0] == 1
            else f"{edges[i]:.0f}–{edges[i + 1]:.0f} {unit}: {int(c)}"
        )
        parts.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{y:.1f}" width="{bw - 2:.1f}" height="{h:.1f}" '
            f'fill="{BAR}"><title>{escape(tip)}</title></rect>'
        )
    base = top + plot_h
    parts.append(f'<line x1="{left}" y1="{base}" x2="{left + plot_w}" y2="{base}" stroke="#888"/>')
    for i in sorted({0, bins // 2, bins - 1}):
        x = left + (i + 0.5) * bw
        parts.append(
            f'<text x="{x:.1f}" y="{base + 14}" class="cl" text-anchor="middle">'
            f"{(edges[i] + edges[i + 1]) / 2:.0f}</text>"
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{base + 28}" class="cl" text-anchor="middle">'
        f"{escape(unit)} (n={vals.size:,}, median {np.median(vals):.0f})</text>"
    )
    parts.append(f'<text x="{left - 4}" y="{top + 10}" class="cl" text-anchor="end">{peak}</text>')
    parts.append(f'<text x="{left - 4}" y="{base}" class="cl" text-anchor="end">0</text></svg>')
    return "".join(parts)
