"""Report sections for `--heal` and near-duplicate captions: healed rows before and after, and the largest
near-duplicate clusters with an example caption and their size. Shown only when the columns exist."""

from __future__ import annotations

import json
from html import escape

import pandas as pd

MAX_HEALED = 50  # rows listed in the healed table (the summary line counts them all)
MAX_CLUSTERS = 20

CSS = """
.guard{padding:0 24px 16px}.guard h2{font-size:16px;margin:12px 0 6px}.guard table{border-collapse:collapse;
background:#fff;width:100%;font-size:12px}.guard td,.guard th{border:1px solid #dde1e6;padding:4px 6px;
vertical-align:top;text-align:left}.guard .before{color:#8a1c1c}.guard .after{color:#1b6b2a}
"""


def _attempts(cell) -> list[dict]:
    try:
        return json.loads(cell) if isinstance(cell, str) and cell else []
    except ValueError:
        return []


def healed_section(df: pd.DataFrame) -> str:
    """Healed and unhealed rows: the first caption and its flags, the kept caption and its flags."""
    if "heal" not in df.columns:
        return ""
    heal = df["heal"].fillna("").astype(str)
    rows = df[heal.isin(["healed", "unhealed"])]
    if rows.empty:
        return ""
    healed = int((heal == "healed").sum())
    body = []
    for _, row in rows.head(MAX_HEALED).iterrows():
        tries = _attempts(row.get("heal_attempts"))
        first = tries[0] if tries else {}
        body.append(
            f"<tr><td>{escape(str(row.get('path', '')))}</td><td>{escape(str(row['heal']))}, "
            f"{max(0, len(tries) - 1)} attempts</td><td class=before><b>{escape(first.get('flags', ''))}</b> "
            f"{escape(first.get('text', ''))}</td><td class=after><b>{escape(str(row.get('flags') or ''))}</b> "
            f"{escape(str(row.get('text') or ''))}</td></tr>"
        )
    return (
        f'<section class="guard"><h2>Healed captions: {healed} healed, {len(rows) - healed} still flagged'
        f"</h2><table><tr><th>path</th><th>heal</th><th>before (flags, caption)</th>"
        f"<th>kept (flags, caption)</th></tr>{''.join(body)}</table></section>"
    )


def clusters_section(df: pd.DataFrame) -> str:
    """The largest near-duplicate clusters: size, an example caption, a few of their clips."""
    if "near_dup_cluster" not in df.columns:
        return ""
    clustered = df[df["near_dup_cluster"].notna()]
    if clustered.empty:
        return ""
    body = []
    groups = clustered.groupby("near_dup_cluster", sort=True)
    for cid, group in list(groups)[:MAX_CLUSTERS]:
        paths = ", ".join(escape(str(p)) for p in group.get("path", pd.Series(dtype=str)).head(3))
        body.append(
            f"<tr><td>{int(cid)}</td><td>{len(group)}</td><td>{escape(str(group['text'].iloc[0]))}</td>"
            f"<td>{paths}</td></tr>"
        )
    return (
        f'<section class="guard"><h2>Near-duplicate captions: {groups.ngroups} clusters, {len(clustered)} rows'
        f"</h2><table><tr><th>cluster</th><th>rows</th><th>example caption</th><th>clips</th></tr>"
        f"{''.join(body)}</table></section>"
    )


def add_sections(html: str, df: pd.DataFrame) -> str:
    """The page with these sections put before the cards (unchanged when there is nothing to show)."""
    extra = healed_section(df) + clusters_section(df)
    if not extra:
        return html
    html = html.replace("</style>", CSS + "</style>", 1)
    return html.replace('<section class="cards">', extra + '<section class="cards">', 1)
