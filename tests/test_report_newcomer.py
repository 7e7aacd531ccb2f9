"""Review pages of the outputs a newcomer makes first: a motion run over a manifest that already had captions,
a 1-frame clip, an empty path and a CSV whose whole-number columns came back as floats."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from clirun import vidcap
from media import make_video

from vidcap.report import build_report


def cards(html: str) -> dict[str, str]:
    """Card html by the title shown in its header."""
    out = {}
    for block in re.findall(r'<article class="card.*?</article>', html, re.DOTALL):
        match = re.search(r'<span class="path"[^>]*>(.*?)</span>', block)
        assert match is not None
        title = match.group(1)
        out[title] = block
    return out


def test_motion_output_over_a_captioned_manifest(tmp_path):
    make_video(tmp_path / "one.mp4", 1, (64, 48))
    make_video(tmp_path / "long.mp4", 30, (64, 48))
    pd.DataFrame(
        {
            "path": ["one.mp4", "long.mp4", None],
            "text": ["An old caption from the manifest.", "Another old caption.", "x"],
        }
    ).to_csv(tmp_path / "m.csv", index=False)
    vidcap("motion", tmp_path / "m.csv", "--workers", "0", "-q", check=False)
    out = tmp_path / "m_cmotion.csv"
    assert pd.read_csv(out).error.fillna("").str.startswith("short").tolist() == [True, False, False]
    stats = build_report(out, workers=0)
    html = Path(stats["html"]).read_text(encoding="utf-8")
    assert "Caption length" not in html and "Caption flags" not in html  # no captions in a motion output
    assert "Camera motion" in html
    shown = cards(html)
    assert "nan" not in shown and "(no path)" in shown
    assert "no path given" in shown["(no path)"]
    one = shown["one.mp4"]  # motion needs 2 frames; the clip still decodes and shows its one frame once
    assert one.count("<img") == 1 and "could not be read" not in one
    assert "input text" in shown["long.mp4"] and 'class="caption"' not in shown["long.mp4"]


def test_caption_cards_show_whole_numbers(tmp_path):
    make_video(tmp_path / "a.mp4", 12, (64, 48))
    pd.DataFrame({"path": ["a.mp4", "gone.mp4"]}).to_csv(tmp_path / "m.csv", index=False)
    vidcap("caption", tmp_path / "m.csv", "--model", "fake", "--workers", "0", "-q")
    out = tmp_path / "m_caption.csv"
    df = pd.read_csv(out)
    df.loc[0, "num_frames"] = 15000  # as a long clip's count comes back from CSV (float: the failed row is empty)
    df.to_csv(out, index=False)
    html = Path(build_report(out, workers=0)["html"]).read_text(encoding="utf-8")
    assert "num_frames 15000" in html and "e+04" not in html
    assert "Caption length" in html
