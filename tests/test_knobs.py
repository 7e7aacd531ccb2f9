"""Environment settings: read in one place (vidcap.knobs), documented, recorded, and refused in one sentence."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from clirun import vidcap

from vidcap.errors import UsageError
from vidcap.knobs import KNOBS, check, knob, settings

SRC = Path(__file__).parents[1] / "src" / "vidcap"
DOCS = Path(__file__).parents[1] / "docs" / "settings.md"
READS = re.compile(r"""(environ(\.get)?\s*[\[(]|getenv\s*\()\s*["']VIDCAP_""")


def test_no_module_reads_a_vidcap_variable_itself():
    offenders = [
        f"{p.relative_to(SRC)}:{i}"
        for p in SRC.rglob("*.py")
        if p.name != "knobs.py" and "dev" not in p.relative_to(SRC).parts
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if READS.search(line)
    ]
    assert offenders == [], f"read these through vidcap.knobs.knob: {offenders}"


def test_every_setting_is_documented():
    text = DOCS.read_text()
    assert [name for name in KNOBS if f"`{name}`" not in text] == []


def test_defaults_types_floors_and_one_sentence(monkeypatch):
    monkeypatch.delenv("VIDCAP_COMPACT_PARTS", raising=False)
    assert knob("VIDCAP_COMPACT_PARTS") == 100
    monkeypatch.setenv("VIDCAP_COMPACT_PARTS", "1")
    assert knob("VIDCAP_COMPACT_PARTS") == 2  # raised to its floor
    monkeypatch.setenv("VIDCAP_REMOTE_TIMEOUT", " ")
    assert knob("VIDCAP_REMOTE_DEADLINE", 7.0) == 7.0  # unset or blank: the caller's default
    monkeypatch.setenv("VIDCAP_PROGRESS_SECONDS", "soon")
    with pytest.raises(UsageError, match="VIDCAP_PROGRESS_SECONDS must be a number .* not 'soon'"):
        check()
    monkeypatch.delenv("VIDCAP_PROGRESS_SECONDS")
    monkeypatch.setenv("VIDCAP_TEST_FAULT", "start:kill")
    assert "VIDCAP_TEST_FAULT" not in settings() and settings()["VIDCAP_COMPACT_PARTS"] == "1"


def test_a_bad_value_stops_the_run_before_it_starts_and_a_good_one_is_recorded(tmp_path):
    (tmp_path / "m.csv").write_text("path\nmissing.mp4\n")
    out = tmp_path / "o.csv"
    bad = vidcap("caption", tmp_path / "m.csv", "-o", out, "--model", "fake", check=False, VIDCAP_COMPACT_PARTS="x")
    assert bad.returncode == 2 and "VIDCAP_COMPACT_PARTS must be a whole number" in bad.stderr
    assert "Traceback" not in bad.stderr and not out.exists() and not (tmp_path / "o.csv.parts").exists()
    vidcap("caption", tmp_path / "m.csv", "-o", out, "--model", "fake", check=False, VIDCAP_COMPACT_PARTS="7")
    record = json.loads((tmp_path / "o.csv.run.json").read_text())
    assert record["environment"] == {"VIDCAP_COMPACT_PARTS": "7"}
