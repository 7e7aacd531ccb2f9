"""Issue 34: the options and files a user touches around a run never lose, leak or silently change a row."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from clirun import vidcap
from media import make_video


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A 12-row manifest: 10 real clips (fake captions ok) and 2 rows that fail (missing files)."""
    root = tmp_path_factory.mktemp("never_lose")
    make_video(root / "c.mp4", n_frames=12, size=(64, 48))
    rows = [{"path": f"c{i}.mp4", "clip_id": f"{i:03d}"} for i in range(10)]
    for i in range(10):
        shutil.copyfile(root / "c.mp4", root / f"c{i}.mp4")
    rows += [{"path": "gone1.mp4", "clip_id": "100"}, {"path": "gone2.mp4", "clip_id": "101"}]
    pd.DataFrame(rows).to_csv(root / "m.csv", index=False)
    return root


def _copy(clips, tmp_path):
    for f in clips.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / "m.csv"


def _text(path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_failed_out_never_overwrites_the_manifest_or_the_output(clips, tmp_path):
    m = _copy(clips, tmp_path)
    before = m.read_bytes()
    proc = vidcap("caption", m, "--model", "fake", "--workers", "0", "--failed-out", m, check=False)
    assert proc.returncode == 2 and "is the manifest itself" in proc.stderr
    assert m.read_bytes() == before
    out = tmp_path / "out.csv"
    proc = vidcap("caption", m, "--model", "fake", "--workers", "0", "-o", out, "--failed-out", out, check=False)
    assert proc.returncode == 2 and "also the output" in proc.stderr
    assert not out.exists() and not (tmp_path / "out.csv.parts").exists()


def test_failed_out_refuses_a_file_vidcap_did_not_write_and_reuses_its_own(clips, tmp_path):
    m = _copy(clips, tmp_path)
    mine = tmp_path / "notes.csv"
    mine.write_text("path,notes\nx,keep me\n")
    out, bad = tmp_path / "out.csv", tmp_path / "bad.csv"
    proc = vidcap("caption", m, "--model", "fake", "--workers", "0", "-o", out, "--failed-out", mine, check=False)
    assert proc.returncode == 2 and "not written by a run of" in proc.stderr
    assert mine.read_text() == "path,notes\nx,keep me\n"
    vidcap("caption", m, "--model", "fake", "--workers", "0", "-o", out, "--failed-out", bad)
    assert len(_text(out)) == 10 and len(_text(bad)) == 2
    vidcap("caption", m, "--model", "fake", "--workers", "0", "-o", out, "--failed-out", bad)  # its own file: fine
    assert len(_text(out)) == 10 and len(_text(bad)) == 2


@pytest.mark.parametrize("select", [["--limit", "3"], ["--shard", "1/2"], ["--limit", "0"]])
def test_limit_and_shard_never_shrink_a_finished_output(clips, tmp_path, select):
    m = _copy(clips, tmp_path)
    out = tmp_path / "out.csv"
    vidcap("caption", m, "--model", "fake", "--workers", "0", "-o", out)
    full = _text(out)
    assert len(full) == 12
    vidcap("caption", m, "--model", "fake", "--workers", "0", "-o", out, *select, check=False)
    again = _text(out)
    pd.testing.assert_frame_equal(again, full)


def test_limit_after_a_killed_run_keeps_the_rows_its_parts_hold(clips, tmp_path):
    m = _copy(clips, tmp_path)
    out = tmp_path / "out.csv"
    vidcap("caption", m, "--model", "fake", "--workers", "0", "-o", out, "--part-rows", "1", "--batch-size", "1",
           VIDCAP_TEST_FAULT="part_write:kill:6", check=False)
    assert not out.exists() and (tmp_path / "out.csv.parts").exists()
    vidcap("caption", m, "--model", "fake", "--workers", "0", "-o", out, "--limit", "2", check=False)
    got = _text(out)
    assert len(got) >= 5 and set(got["path"][:2]) == {"c0.mp4", "c1.mp4"}
    vidcap("caption", m, "--model", "fake", "--workers", "0", "-o", out, check=False)
    assert len(_text(out)) == 12


def test_damaged_run_records_are_moved_aside(clips, tmp_path):
    m = _copy(clips, tmp_path)
    out = tmp_path / "out.csv"
    vidcap("caption", m, "--model", "fake", "--workers", "0", "-o", out, "--part-rows", "1", "--batch-size", "1",
           VIDCAP_TEST_FAULT="part_write:kill:2", check=False)
    (tmp_path / "out.csv.parts" / "run.json").write_text('{"fingerprint": {')
    proc = vidcap("caption", m, "--model", "fake", "--workers", "0", "-o", out, check=False)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr and "was damaged" in proc.stderr
    assert len(_text(out)) == 12
    sidecar = tmp_path / "out.csv.run.json"
    assert json.loads(sidecar.read_text())["fingerprint"]
