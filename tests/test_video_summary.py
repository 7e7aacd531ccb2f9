"""Whole-video summaries from window captions: `caption --window --summary` and `vidcap summarize`."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from clirun import vidcap
from hypothesis import given, settings
from hypothesis import strategies as st
from media import make_video

from vidcap.manifest import read_table
from vidcap.stages.video_summary import clock, timeline_rows

LINE = re.compile(r"^\[(\d+:\d\d(?::\d\d)?)-(\d+:\d\d(?::\d\d)?)\] (.+)$")


def _seconds(text: str) -> int:
    total = 0
    for part in text.split(":"):
        total = total * 60 + int(part)
    return total


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("summary")
    make_video(root / "long.mp4", 96, (96, 64))  # 4 s at 24 fps
    make_video(root / "short.mp4", 36, (96, 64))  # 1.5 s
    (root / "m.csv").write_text("path\nlong.mp4\nshort.mp4\nmissing.mp4\n")
    return root


def test_caption_window_summary_end_to_end_and_resume(videos, tmp_path):
    out = tmp_path / "cap.csv"
    args = ("caption", videos / "m.csv", "-o", out, "--window", "1s", "--model", "fake", "--workers", "0", "-q")
    vidcap(*args, "--summary", "--summary-backend", "fake")
    summary = read_table(tmp_path / "cap.csv.summary.csv", text=True)
    assert summary["path"].map(lambda p: p.rsplit("/", 1)[-1]).tolist() == ["long.mp4", "missing.mp4", "short.mp4"]
    by = summary.set_index(summary["path"].map(lambda p: p.rsplit("/", 1)[-1]))
    assert by.loc["long.mp4", "status"] == "ok" and by.loc["long.mp4", "windows"] == "4"
    lines = by.loc["long.mp4", "timeline"].split("\n")
    spans = [LINE.match(line).groups()[:2] for line in lines]  # type: ignore[union-attr]
    assert [(_seconds(a), _seconds(b)) for a, b in spans] == [(0, 1), (1, 2), (2, 3), (3, 4)]
    assert by.loc["long.mp4", "summary"]
    assert by.loc["missing.mp4", "status"] == "failed"
    assert by.loc["missing.mp4", "error"].startswith("empty_text: none of this video's 1 windows")

    again = vidcap(*args[:-1], "--summary", "--summary-backend", "fake")
    done = [line for line in again.stderr.splitlines() if line.startswith("done:")]
    assert len(done) == 3 and "3 skipped (already done)" in done[-1] and "0 ok" not in done[-1]


def test_summarize_redoes_only_videos_whose_captions_changed(videos, tmp_path):
    rows = [
        {"path": str(videos / "long.mp4"), "start_time": s, "end_time": s + 2.0, "text": f"part {s}", "status": "ok"}
        for s in (2.0, 0.0)
    ] + [{"path": str(videos / "short.mp4"), "start_time": 0.0, "end_time": 1.5, "text": "a dog", "status": "ok"}]
    captions = tmp_path / "cap.parquet"
    pd.DataFrame(rows).to_parquet(captions)
    out = tmp_path / "sum.parquet"
    vidcap("summarize", captions, "-o", out, "--backend", "fake", "-q")
    first = pd.read_parquet(out)
    assert first["timeline"].tolist()[0] == "[0:00-0:02] part 0.0\n[0:02-0:04] part 2.0"
    rows[2]["text"] = "a cat"
    pd.DataFrame(rows).to_parquet(captions)
    rerun = vidcap("summarize", captions, "-o", out, "--backend", "fake")
    assert "1 skipped (already done)" in rerun.stderr
    assert pd.read_parquet(out).set_index("windows").shape[0] == 2


def test_summary_needs_windows(videos, tmp_path):
    proc = vidcap("caption", videos / "m.csv", "-o", tmp_path / "c.csv", "--model", "fake", "--summary", check=False)
    assert proc.returncode == 2 and "add --window" in proc.stderr and "Traceback" not in proc.stderr
    plain = tmp_path / "plain.csv"
    plain.write_text("path,text\na.mp4,hello\n")
    proc = vidcap("summarize", plain, "-o", tmp_path / "s.csv", "--backend", "fake", check=False)
    assert proc.returncode == 2 and "no end_time, start_time column" in proc.stderr


@given(st.floats(min_value=0, max_value=10 * 3600, allow_nan=False))
def test_clock_reads_back(seconds):
    text = clock(seconds)
    assert _seconds(text) == max(0, round(seconds))
    assert re.fullmatch(r"\d+:\d\d|\d+:\d\d:\d\d", text)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a.mp4", "b.mp4", "/abs/c.mp4"]),
            st.floats(min_value=0, max_value=3600, allow_nan=False),
            st.text(min_size=0, max_size=20),
            st.sampled_from(["ok", "failed"]),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_timeline_lists_every_captioned_window_in_time_order(tmp_path_factory, windows):
    table = tmp_path_factory.mktemp("tl") / "cap.parquet"
    df = pd.DataFrame(windows, columns=["path", "start_time", "text", "status"])
    df["end_time"] = df["start_time"] + 1.0
    df.to_parquet(table)
    got = timeline_rows(table)
    # rows alike (a video listed twice in the scenes' manifest: each window twice) are one window
    df["line"] = [" ".join(t.split()) if s == "ok" else "" for t, s in zip(df["text"], df["status"], strict=True)]
    df = df.drop_duplicates(["path", "start_time", "line"])
    assert got["windows"].sum() == len(df)
    for row in got.to_dict("records"):
        mine = df[df["path"].map(lambda p, r=row: p.rsplit("/", 1)[-1] == r["path"].rsplit("/", 1)[-1])]
        usable = mine[mine["line"] != ""]
        lines = [line for line in row["timeline"].split("\n") if line]
        assert len(lines) == len(usable) == row["windows"] - row["failed_windows"]
        starts = [_seconds(LINE.match(line).group(1)) for line in lines]  # type: ignore[union-attr]
        assert starts == sorted(starts)
        assert math.isclose(row["first_window_start"], mine["start_time"].min())


def test_a_video_listed_twice_gets_each_window_once(tmp_path):
    """Scenes of a manifest that lists a video twice, then captioned: each window comes twice, alike; the
    timeline lists it once (it listed every window twice, and `windows` counted both)."""
    windows = [("v.mp4", s, s + 1.0, f"part {s:g}", "ok") for s in (0.0, 1.0)] + [("v.mp4", 2.0, 3.0, "", "failed")]
    table = tmp_path / "cap.csv"
    pd.DataFrame(windows * 2, columns=["path", "start_time", "end_time", "text", "status"]).to_csv(table, index=False)
    (row,) = timeline_rows(table).to_dict("records")
    assert row["timeline"] == "[0:00-0:01] part 0\n[0:01-0:02] part 1"
    assert (row["windows"], row["failed_windows"]) == (3, 1)
