"""Outputs on an fsspec URL: parts, run.json, the lease lock and the final output live in a real S3 endpoint
(moto's server over HTTP, reached through s3fs from every process). Every runner writes there and gives the
local single-process run's rows; a run killed mid-way resumes with each row once; a live lock refuses a
second run and a dead one is taken over; a bad bucket ends in one sentence."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pandas as pd
import pytest
from clirun import cli_env, read_resolved, vidcap
from media import clip_set

from vidcap.manifest import RID  # noqa: E402

pytest.importorskip("s3fs")
pytest.importorskip("moto")
pytest.importorskip("upath")

FAKE = ["--model", "fake", "-q"]


@pytest.fixture(scope="module")
def s3():
    from s3server import S3

    server = S3()
    server.bucket("runs")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("remote")
    clip_set(root, 10, frame_cycle=4)
    vidcap("caption", root / "m.csv", "-o", root / "single.parquet", *FAKE, "--workers", "0")
    return root


def run(s3, *args, check=True, **env):
    return vidcap(*args, check=check, env=cli_env(**s3.env, **env))


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vidcap"]


@pytest.mark.parametrize("how", ["single", "gpus", "torchrun", "ray"])
def test_every_runner_writes_to_s3_and_matches_the_local_run(s3, clips, how):
    url = f"s3://runs/{how}/out.parquet"
    args = ["caption", clips / "m.csv", "-o", url, *FAKE, "--workers", "0", "-b", "2", "--part-rows", "2"]
    if how == "gpus":
        run(s3, *args, "--gpus", "cpu:2", VIDCAP_CHUNK_ROWS="2")
    elif how == "ray":
        pytest.importorskip("ray")
        run(s3, *args, "--engine", "ray", "--gpus", "cpu:2")
    elif how == "torchrun":
        pytest.importorskip("torch")
        proc = subprocess.run(
            [*TORCHRUN, *map(str, args)], capture_output=True, text=True, timeout=300, env=cli_env(**s3.env)
        )
        assert proc.returncode == 0, proc.stderr
    else:
        run(s3, *args)
    pd.testing.assert_frame_equal(read_resolved(clips / "single.parquet"), s3.read_parquet(url))
    assert s3.ls(f"runs/{how}") == ["out.parquet", "out.parquet.run.json"]  # parts merged and removed
    meta = json.loads(s3.fs.cat_file(f"runs/{how}/out.parquet.run.json"))
    assert meta["summary"]["ok"] == 10 and sum(meta["summary"]["failed"].values()) == 2


def test_a_run_killed_mid_way_on_s3_resumes_with_each_row_once(s3, clips):
    url = "s3://runs/killed/out.parquet"
    args = ["caption", clips / "m.csv", "-o", url, *FAKE, "--workers", "0", "-b", "1", "--part-rows", "2"]
    proc = run(s3, *args, check=False, VIDCAP_TEST_FAULT="part_write:kill:3")
    assert proc.returncode == -9
    assert s3.ls("runs/killed/out.parquet.parts") == sorted(
        ["LOCK", "run.json"] + [n for n in s3.ls("runs/killed/out.parquet.parts") if n.startswith("part-")]
    )
    saved = [n for n in s3.ls("runs/killed/out.parquet.parts") if n.startswith("part-")]
    assert len(saved) == 2  # the third part died before it was put: no half object
    t0 = time.monotonic()
    done = run(s3, *args, "--keep-parts")  # the lock's holder died on this host: taken over at once
    assert time.monotonic() - t0 < 60
    assert "4 skipped (already done)" in done.stderr and "processed 8 rows" in done.stderr
    pd.testing.assert_frame_equal(read_resolved(clips / "single.parquet"), s3.read_parquet(url))
    parts = [
        s3.read_parquet(f"runs/killed/out.parquet.parts/{n}")
        for n in s3.ls("runs/killed/out.parquet.parts")
        if n.startswith("part-")
    ]
    rids = pd.concat(parts)[RID]
    assert rids.is_unique and len(rids) == 12  # nothing done twice
    assert "LOCK" not in s3.ls("runs/killed/out.parquet.parts")  # released at the end


def _lock(s3, key: str, **held):
    s3.fs.pipe_file(key, json.dumps(held).encode())


def test_a_live_lease_refuses_a_second_run_and_a_stale_one_is_taken_over(s3, clips):
    url = "s3://runs/locked/out.parquet"
    lock = "runs/locked/out.parquet.parts/LOCK"
    _lock(s3, lock, owner="x", host="another-host", pid=1, heartbeat=time.time())
    proc = run(s3, "caption", clips / "m.csv", "-o", url, *FAKE, "--workers", "0", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "vidcap: error: another vidcap run is writing s3://runs/locked/out.parquet right now; "
        "wait for it to finish or pick another -o path."
    ]
    _lock(s3, lock, owner="x", host="another-host", pid=1, heartbeat=time.time() - 3600)  # no beat for an hour
    run(s3, "caption", clips / "m.csv", "-o", url, *FAKE, "--workers", "0")
    pd.testing.assert_frame_equal(read_resolved(clips / "single.parquet"), s3.read_parquet(url))


def test_other_settings_on_s3_are_refused_and_leave_nothing(s3, clips):
    url = "s3://runs/settings/out.parquet"
    run(s3, "caption", clips / "m.csv", "-o", url, *FAKE, "--workers", "0")
    proc = run(s3, "caption", clips / "m.csv", "-o", url, *FAKE, "--workers", "0", "--num-frames", "3", check=False)
    assert proc.returncode == 2 and "was written by another command or model" in proc.stderr
    assert s3.ls("runs/settings") == ["out.parquet", "out.parquet.run.json"]
    again = run(s3, "caption", clips / "m.csv", "-o", url, *FAKE, "--workers", "0")
    assert "12 skipped (already done)" in again.stderr  # the finished output counts as done


@pytest.mark.parametrize(
    "url, says",
    [
        ("s3://no-such-bucket/out.parquet", "check the URL"),
        ("nosuchproto://x/out.parquet", "nosuchproto://"),
    ],
)
def test_an_unreachable_url_is_one_sentence(s3, clips, url, says):
    proc = run(s3, "caption", clips / "m.csv", "-o", url, *FAKE, "--workers", "0", check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_merge_reads_and_writes_urls(s3, clips):
    single = pd.read_parquet(clips / "single.parquet")
    s3.fs.pipe_file("runs/tables/a.parquet", single.iloc[:6].to_parquet(index=False))
    vidcap(
        "merge",
        "s3://runs/tables/a.parquet",
        clips / "single.parquet",
        "-o",
        "s3://runs/tables/m.csv",
        env=cli_env(**s3.env),
    )
    merged = pd.read_csv(s3.fs.open("runs/tables/m.csv"))
    assert len(merged) == len(single) and set(merged["path"]) == set(single["path"])
