"""The review page: built from a real (fake-model) caption run, opened in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from media import make_image, make_moov_lost, make_video, read_index

from vidcap.cli import main
from vidcap.manifest import read_table, write_table
from vidcap.report import build_report

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
REPETITIVE = "A man is walking down the street. A man is walking down the street. A man is walking down the street."
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if not exe:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install -y chromium)")
    return exe


def browse(html: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *extra, html.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A caption run (fake model) over 4 good files and 2 bad ones, then motion and tag columns merged in."""
    root = tmp_path_factory.mktemp("report_run")
    make_video(root / "a.mp4", n_frames=48)
    make_video(root / "b.mkv", n_frames=30)
    make_video(root / "tall.mp4", n_frames=24, size=(90, 160))
    make_image(root / "still.png", index=7)
    make_moov_lost(root / "broken.mp4")
    names = ["a.mp4", "b.mkv", "tall.mp4", "still.png", "broken.mp4", "gone.mp4"]
    pd.DataFrame({"path": names}).to_csv(root / "m.csv", index=False)
    assert main(["caption", str(root / "m.csv"), "--model", "fake", "-q", "--workers", "0"]) == 0
    caption = read_table(root / "m_caption.csv")
    merged = caption.copy()
    merged["flags"] = [""] * len(merged)  # all clean: CSV read the column back as NaN floats
    merged.loc[1, "text"], merged.loc[1, "flags"] = REPETITIVE, "repetition"
    merged["cmotion"] = ["pan_left", "static", "zoom_in+pan_left", "static", None, None]
    merged["motion_dx"] = [0.31, 0.0, 0.4, 0.0, None, None]
    merged["objects"] = [["person", "dog"], ["person"], ["tree", "person"], [], None, None]  # a Parquet list
    write_table(merged, root / "merged.parquet")
    return root


def test_page_in_chromium(run, tmp_path):
    html = tmp_path / "review.html"
    stats = build_report(run / "merged.parquet", html, sample=50, workers=2)
    assert stats["shown"] == 6 and stats["errors_shown"] == 2 and stats["flagged_shown"] == 1
    assert stats["thumbnails"] == 4 + 4 + 4 + 1 and stats["thumbnail_failures"] == 0
    dom = browse(html, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = dom.stdout
    cards = re.findall(r'<article class="card[^"]*"[^>]*>', page)
    assert len(cards) == 6
    failed = re.findall(r'<article class="card failed[^"]*"[^>]*data-status="failed"', page)
    assert len(failed) == 2
    assert re.search(r'<div class="error"><b>decode</b>: moov atom not found</div>', page)
    assert re.search(r'<div class="error"><b>missing</b>: no such file</div>', page)
    for chart in ("caption-length", "flags", "status", "motion", "tags-objects"):
        assert re.search(rf'<svg class="chart" data-chart="{chart}"', page), chart
    assert "zoom_in+pan_left" in page and '<span class="chip flag">repetition</span>' in page
    assert '<span class="chip">dog</span>' in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from anywhere
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report_screenshot.png"
    res = browse(html, tmp_path, f"--screenshot={shot}", "--window-size=1280,2000")
    assert res.returncode == 0 and shot.stat().st_size > 10_000, res.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).reshape(-1, 3).astype(int)
    red = np.abs(pixels - [214, 39, 40]).sum(axis=1) < 30  # the error banners' red, on screen
    assert red.sum() > 2000


def _thumbs_of(page: str, card_no: int) -> list[tuple[str, np.ndarray, int]]:
    """(frame label, decoded image, base64 length) of every thumbnail in card #card_no."""
    from PIL import Image

    body = page.split(f'id="row-{card_no}"', 1)[1].split("</article>", 1)[0]
    out = []
    for b64, label in re.findall(r'src="data:image/jpeg;base64,([^"]+)"><figcaption>([^<]+)<', body):
        img = np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))
        out.append((label, img, len(b64)))
    return out


def test_thumbnails_are_the_recorded_frames_and_small(run, tmp_path):
    html = tmp_path / "r.html"
    build_report(run / "m_caption.csv", html, workers=0)
    page = html.read_text()
    caption = read_table(run / "m_caption.csv")
    for row in (0, 1, 2):
        recorded = json.loads(caption.loc[row, "frame_idx"])
        thumbs = _thumbs_of(page, row)
        assert [t[0] for t in thumbs] == [f"frame {i}" for i in recorded]
        assert [read_index(img) for _, img, _ in thumbs] == recorded  # the burned-in index matches
        assert all(max(img.shape[:2]) <= 160 for _, img, _ in thumbs)
        assert all(n < 16_000 for *_, n in thumbs)  # a few KB of JPEG each
    ((label, img, _),) = _thumbs_of(page, 3)
    assert label == "image" and read_index(img) == 7


def test_sampling_keeps_errors_and_flags_and_filters(tmp_path):
    n = 600
    rng = np.random.default_rng(1)
    status = np.where(rng.random(n) < 0.1, "failed", "ok")
    flags = np.where((status == "ok") & (rng.random(n) < 0.1), "truncated", "").astype(object)
    flags[[5, 17, 300]] = "repetition"
    status[[5, 17, 300]] = "ok"
    df = pd.DataFrame(
        {
            "path": [f"/nowhere/clip{i}.mp4" for i in range(n)],
            "text": [f"Caption number {i} of a long run." for i in range(n)],
            "flags": flags,
            "status": status,
            "error": np.where(status == "failed", "decode: invalid data", ""),
        }
    )
    write_table(df, tmp_path / "big.csv")
    stats = build_report(tmp_path / "big.csv", tmp_path / "big.html", sample=40, workers=0)
    assert stats["shown"] == 40 and stats["rows"] == n
    assert stats["errors_shown"] == 10 and stats["flagged_shown"] == 10  # a quarter each
    page = (tmp_path / "big.html").read_text()
    assert page.count('<article class="card') == 40
    assert "thumbnails unavailable: missing: no such file" in page  # ok rows whose file is gone
    stats = build_report(tmp_path / "big.csv", tmp_path / "rep.html", sample=40, filter=("flag", "repetition"))
    assert stats["matched"] == 3 and stats["shown"] == 3
    ids = re.findall(r'id="row-(\d+)"', (tmp_path / "rep.html").read_text())
    assert ids == ["5", "17", "300"]


def test_cli_report(run, tmp_path, capsys):
    out = tmp_path / "cli.html"
    assert main(["report", str(run / "merged.parquet"), "-o", str(out), "--filter", "error=any", "--workers", "0"]) == 0
    assert "2 of 2 rows (2 failed, 0 flagged)" in capsys.readouterr().out
    assert out.read_text().count('<article class="card failed') == 2
    assert main(["report", str(run / "merged.parquet"), "-o", str(out), "--filter", "objects=dog"]) == 0
    assert out.read_text().count("<article") == 1
    write_table(read_table(run / "merged.parquet"), tmp_path / "merged.csv")  # tags as JSON array strings
    assert (
        main(["report", str(tmp_path / "merged.csv"), "-o", str(out), "--filter", "objects=dog", "--root", str(run)])
        == 0
    )
    page = out.read_text()
    assert page.count("<article") == 1 and 'data-chart="tags-objects"' in page and "<img" in page
    assert main(["report", str(run / "merged.parquet"), "--filter", "repetition"]) == 2
    assert main(["report", str(run / "merged.parquet"), "--filter", "colour=red"]) == 2
    assert main(["report", str(tmp_path / "nope.csv")]) == 2
    assert main(["report", str(run / "merged.parquet"), "--sample", "2", "--workers", "0"]) == 0
    assert (run / "merged_report.html").read_text().count("<article") == 2  # default name, beside it


def test_structured_captions_field_by_field_and_variants_by_name(tmp_path):
    """A JSON caption is shown as its fields (nested ones dotted, lists joined), variants each under their name,
    a summary under its own heading; a caption that only looks like JSON stays text, and all of it is escaped."""
    structured = {
        "short": "A dog <runs>.",
        "cinematography": {"camera_motion": "pan_left", "framing": "wide"},
        "tags": ["dog", "park"],
    }
    df = pd.DataFrame(
        {
            "path": ["/nowhere/a.mp4", "/nowhere/b.mp4", "/nowhere/c.mp4"],
            "text": [json.dumps(structured), "{not json", "first"],
            "caption_short": [None, None, "first"],
            "caption_dense": [None, None, '{"dense": "A long one."}'],
            "summary": [None, "The whole video.", None],
            "flags": ["", "", ""],
            "status": ["ok"] * 3,
            "error": [""] * 3,
        }
    )
    write_table(df, tmp_path / "s.parquet")
    build_report(tmp_path / "s.parquet", tmp_path / "s.html", workers=0)
    page = (tmp_path / "s.html").read_text()
    assert "<dt>short</dt><dd>A dog &lt;runs&gt;.</dd>" in page
    assert "<dt>cinematography.camera_motion</dt><dd>pan_left</dd>" in page
    assert "<dt>tags</dt><dd>dog; park</dd>" in page
    assert '<p class="caption">{not json</p>' in page
    assert "<h3>short</h3>" in page and "<h3>dense</h3>" in page and "<dt>dense</dt><dd>A long one.</dd>" in page
    assert "<h3>summary</h3>" in page and "The whole video." in page
