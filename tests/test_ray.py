"""The Ray engine on a local CPU-only Ray: CPU actors running the worker loop, parts written by the driver;
the output equals the single-process run's, a rerun resumes, and the local path never imports Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from clirun import VIDCAP, cli_env, read_resolved, vidcap
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


def _actor_pids() -> list[int]:
    """The processes of vidcap's Ray actors on this machine (Ray titles them `ray::RayWorker...`)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if fh.read().startswith(b"ray::RayWorker"):
                    pids.append(int(pid))
        except OSError:
            continue
    return pids


def test_a_killed_actor_loses_nothing_and_a_new_one_takes_its_place(clips, tmp_path):
    """SIGKILL of one actor mid-run: its unsaved rows go to the other actor and a new one; the run ends
    well, each row once, with the single-process run's output."""
    out = tmp_path / "ray.parquet"
    cmd = [*VIDCAP, "caption", clips / "m.csv", "-o", out, *FAKE, "--engine", "ray", "--gpus", "cpu:2", "-b", "1"]
    env = cli_env(VIDCAP_FAKE_DELAY="1", VIDCAP_RAY_FLUSH_SECONDS="0.5")
    proc = subprocess.Popen(list(map(str, cmd)), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        parts = out.with_name(out.name + ".parts")
        t0 = time.monotonic()
        while not (list(parts.glob("part-ray*.parquet")) and len(_actor_pids()) == 2):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() - t0 < 240, "no part written"
            time.sleep(0.2)
        os.kill(_actor_pids()[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "was lost" in err and "a new worker ray2" in err and "worker deaths: 1" in err, err
    pd.testing.assert_frame_equal(read_resolved(clips / "single.parquet"), read_resolved(out))
