"""Progress in logs: when stderr is not a terminal, every executor prints a line every
VIDCAP_PROGRESS_SECONDS with rows done, rows/s and the ETA (a terminal gets rich's bar; -q neither)."""

from __future__ import annotations

import io
import re

import pandas as pd
from clirun import vidcap
from media import make_video

from vidcap.console import Progress

LINE = re.compile(
    r"^vidcap: caption (\d+)/(\d+) rows \(\d+%\), [\d.]+ rows/s, \d+:\d\d:\d\d elapsed, "
    r"ETA (\d+:\d\d:\d\d|unknown)$"
)


def test_a_log_gets_lines_with_rows_rate_and_eta(monkeypatch):
    monkeypatch.setenv("VIDCAP_PROGRESS_SECONDS", "60")
    log = io.StringIO()
    progress = Progress(200, "caption", enabled=True, stream=log)
    progress.advance(10)
    assert log.getvalue() == ""  # not due yet
    progress.next_line = 0.0  # as if the interval had passed
    progress.advance(30)
    progress.close()
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and LINE.match(lines[0]), lines
    assert LINE.match(lines[0]).groups()[:2] == ("40", "200")
    quiet = io.StringIO()
    off = Progress(200, "caption", enabled=False, stream=quiet)
    off.next_line = 0.0
    off.advance(5)
    assert quiet.getvalue() == ""


def test_a_run_logged_to_a_file_shows_progress_lines(tmp_path):
    (tmp_path / "v").mkdir()
    for i in range(6):
        make_video(tmp_path / "v" / f"c{i}.mp4", n_frames=8, size=(32, 24))
    pd.DataFrame({"path": [f"v/c{i}.mp4" for i in range(6)]}).to_csv(tmp_path / "m.csv", index=False)
    proc = vidcap(
        "caption",
        tmp_path / "m.csv",
        "--model",
        "fake",
        "--workers",
        "0",
        "-b",
        "1",
        VIDCAP_PROGRESS_SECONDS="0.5",
        VIDCAP_FAKE_DELAY="0.3",
    )
    lines = [x for x in proc.stderr.splitlines() if x.startswith("vidcap: caption ")]
    assert lines and all(LINE.match(x) for x in lines), proc.stderr
    assert "━" not in proc.stderr  # no bar drawn into a file
