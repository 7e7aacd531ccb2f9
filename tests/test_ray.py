"""The Ray engine on a local CPU-only Ray: decode tasks, fractional-CPU caption actors, parts written by the
driver; the output equals the single-process run's, a rerun resumes, and the local path never imports Ray."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
from clirun import read_resolved, vidcap
from media import make_text_as_video, make_video

pytest.importorskip("ray")

FAKE = ["--model", "fake", "-q", "--workers", "0"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("ray")
    (root / "v").mkdir()
    rows = []
    for i in range(16):
        make_video(root / "v" / f"c{i:02d}.mp4", n_frames=12 + (i % 4), size=(64, 48))
        rows.append({"path": f"v/c{i:02d}.mp4", "clip_id": i, "note": None if i % 3 else "x"})
    make_text_as_video(root / "v" / "bad.mp4")
    rows += [{"path": "v/bad.mp4", "clip_id": 100}, {"path": "v/gone.mp4", "clip_id": 101}]
    pd.DataFrame(rows).to_csv(root / "m.csv", index=False)
    vidcap("caption", root / "m.csv", "-o", root / "single.parquet", *FAKE)
    return root


def test_ray_run_equals_the_single_process_run_and_resumes(clips, tmp_path):
    out = tmp_path / "ray.parquet"
    vidcap("caption", clips / "m.csv", "-o", out, *FAKE, "--shard", "0/2")  # half done beforehand
    proc = vidcap("caption", clips / "m.csv", "-o", out, *FAKE, "--engine", "ray", "--gpus", "cpu:2", "-b", "2")
    assert "9 skipped (already done)" in proc.stderr and "processed 9 rows" in proc.stderr
    assert "actors: 2" in proc.stderr
    pd.testing.assert_frame_equal(read_resolved(clips / "single.parquet"), read_resolved(out))
    assert not out.with_name(out.name + ".parts").exists()


def test_the_single_host_path_does_not_import_ray(clips, tmp_path):
    code = (
        "import sys\n"
        "from vidcap.cli import main\n"
        f"rc = main(['caption', {str(clips / 'm.csv')!r}, '-o', {str(tmp_path / 'o.parquet')!r}, '--model', 'fake',"
        " '-q', '--workers', '0', '--gpus', 'cpu:2'])\n"
        "assert rc == 0, rc\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr
    pd.testing.assert_frame_equal(read_resolved(clips / "single.parquet"), read_resolved(tmp_path / "o.parquet"))
