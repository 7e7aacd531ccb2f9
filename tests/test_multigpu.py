"""The one-host scale-out path, proven on the CPU: several worker processes (`--gpus cpu:N`) take rows from
the coordinator, write their own parts, and the merged output equals the single-process run's; a killed
worker's rows go to the others; a killed run resumes; tensor-parallel groups see every batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from clirun import VIDCAP, read_resolved, vidcap
from media import clip_set
from proctools import kill_coordinator, kill_launch, kill_worker, wait_for

from vidcap.errors import UsageError
from vidcap.manifest import RID  # noqa: E402
from vidcap.runners import device_groups, parse_gpus
from vidcap.runners.multigpu import make_specs

FAKE = ["--model", "fake", "-q"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("mg")
    clip_set(root, 24, frame_cycle=5)
    single = root / "single.parquet"
    vidcap("caption", root / "m.csv", "-o", single, *FAKE, "--workers", "1")
    return root


def parts_rids(parts: Path) -> pd.Series:
    return pd.concat([pd.read_parquet(p, columns=[RID]) for p in parts.glob("part-*.parquet")])[RID]


def test_cpu_workers_share_rows_and_match_the_single_process_run(clips, tmp_path):
    out = tmp_path / "multi.parquet"
    env = dict(os.environ, VIDCAP_CHUNK_ROWS="2", VIDCAP_FAKE_DELAY="0.05")
    proc = vidcap(
        "caption",
        clips / "m.csv",
        "-o",
        out,
        *FAKE,
        "--gpus",
        "cpu:3",
        "--workers",
        "3",
        "--batch-size",
        "2",
        "--keep-parts",
        env=env,
    )
    pd.testing.assert_frame_equal(read_resolved(clips / "single.parquet"), read_resolved(out))
    parts = out.with_name(out.name + ".parts")
    writers = {p.name.split("-")[1] for p in parts.glob("part-*.parquet")}
    assert writers == {"cpu0", "cpu1", "cpu2"}  # rows were handed to every worker
    rids = parts_rids(parts)
    assert rids.is_unique and len(rids) == 26  # each row done once, by one worker
    assert "workers: 3" in proc.stderr and "24 ok, 2 failed" in proc.stderr


def _start(clips, out, env):
    args = [
        *VIDCAP,
        "caption",
        str(clips / "m.csv"),
        "-o",
        str(out),
        *FAKE,
        "--gpus",
        "cpu:3",
        "--workers",
        "0",
        "--batch-size",
        "1",
        "--part-rows",
        "1",
        "--keep-parts",
    ]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_worker_loses_nothing_and_nothing_is_done_twice(clips, tmp_path):
    out = tmp_path / "k.parquet"
    parts = out.with_name(out.name + ".parts")
    env = dict(os.environ, VIDCAP_CHUNK_ROWS="2", VIDCAP_FAKE_DELAY="0.3")
    proc = _start(clips, out, env)
    kill_worker(proc, parts, after_parts=2, timeout=120)
    pd.testing.assert_frame_equal(read_resolved(clips / "single.parquet"), read_resolved(out))
    rids = parts_rids(parts)
    assert rids.is_unique and len(rids) == 26  # the dead worker's saved rows were not redone


def test_kill_9_of_the_whole_run_then_rerun(clips, tmp_path):
    out = tmp_path / "r.parquet"
    parts = out.with_name(out.name + ".parts")
    env = dict(os.environ, VIDCAP_CHUNK_ROWS="2", VIDCAP_FAKE_DELAY="0.3")
    proc = _start(clips, out, env)
    kill_coordinator(proc, parts, after_parts=4)
    assert not out.exists()
    done = vidcap("caption", clips / "m.csv", "-o", out, *FAKE, "--gpus", "cpu:2", "--workers", "0")
    skipped = int(done.stderr.split(" skipped")[0].split(",")[-1].strip())
    assert skipped >= 4
    pd.testing.assert_frame_equal(read_resolved(clips / "single.parquet"), read_resolved(out))
    assert not parts.exists()


def test_gpu_lists_and_groups():
    visible = ["0", "1", "2", "3"]
    assert parse_gpus("all", visible) == visible
    assert parse_gpus("2", visible) == ["0", "1"]
    assert parse_gpus("0,1,3", visible) == ["0", "1", "3"]
    assert parse_gpus("1,3", ["GPU-a", "GPU-b", "GPU-c", "GPU-d"]) == ["GPU-b", "GPU-d"]
    assert parse_gpus("cpu:3", visible) == ["cpu"] * 3
    assert device_groups(["0", "1", "2", "3"], 2) == [["0", "1"], ["2", "3"]]
    for text, expect in [
        ("5", "5 GPUs but 4 are visible"),
        ("0,4", "only 4 are visible"),
        ("0,0", "twice"),
        ("x", "cpu:N"),
        ("cpu:0", "no workers"),
    ]:
        with pytest.raises(UsageError, match=expect.replace("(", r"\(")):
            parse_gpus(text, visible)
    with pytest.raises(UsageError, match="no CUDA GPU"):
        parse_gpus("all", [])
    with pytest.raises(UsageError, match="does not divide"):
        device_groups(["0", "1", "2"], 2)
    specs = make_specs([["0", "1"], ["2", "3"]], workers=9)
    assert [s.wid for s in specs] == ["gpu0", "gpu1"] and [s.decode_workers for s in specs] == [4, 4]
    assert specs[1].env() == {"CUDA_VISIBLE_DEVICES": "2,3"} and specs[1].device(1) == "cuda:1"
    assert make_specs([["cpu"]] * 2, workers=0)[0].decode_workers == 0


def test_bad_scale_out_options_end_in_one_sentence(clips):
    for args, expect in [
        (["--gpus", "cpu:3", "--tp", "2"], "does not divide"),
        (["--gpus", "cpu:2", "--device", "cpu"], "--device"),
        (["--engine", "spark"], "--engine"),
        (["--address", "ray://x:1"], "--engine ray"),
    ]:
        proc = vidcap("caption", clips / "m.csv", *FAKE, *args, check=False)
        assert proc.returncode == 2, proc.stderr
        assert expect in proc.stderr and "Traceback" not in proc.stderr


TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vidcap"]


def test_torchrun_ranks_share_rows_and_a_killed_launch_resumes(clips, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "t.parquet"
    parts = out.with_name(out.name + ".parts")
    args = [
        *TORCHRUN,
        "caption",
        str(clips / "m.csv"),
        "-o",
        str(out),
        *FAKE,
        "--workers",
        "0",
        "-b",
        "1",
        "--part-rows",
        "1",
    ]
    env = dict(os.environ, VIDCAP_FAKE_DELAY="0.3")
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    wait_for(
        lambda: {p.name.split("-")[1] for p in parts.glob("part-*.parquet")} == {"rank0", "rank1"},
        proc,
        what="parts from both ranks",
    )
    kill_launch(proc)
    assert not out.exists()
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "ranks: 2" in done.stderr and "share: rank1" in done.stderr
    summary = json.loads(out.with_name(out.name + ".run.json").read_text())["summary"]
    assert summary["skipped"] >= 2 and summary["skipped"] + summary["processed"] == 26
    pd.testing.assert_frame_equal(read_resolved(clips / "single.parquet"), read_resolved(out))


@pytest.mark.parametrize("launch", ["local", "torchrun"])
def test_tensor_parallel_groups_on_cpu(clips, tmp_path, launch):
    """Groups of 2 processes on gloo: the leader broadcasts every batch, the follower runs it, all exit."""
    pytest.importorskip("torch")
    out = tmp_path / "tp.parquet"
    if launch == "local":
        vidcap("caption", clips / "m.csv", "-o", out, *FAKE, "--workers", "0", "--gpus", "cpu:4", "--tp", "2")
    else:
        proc = subprocess.run(
            [*TORCHRUN, "caption", str(clips / "m.csv"), "-o", str(out), *FAKE, "--workers", "0", "--tp", "2"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
    pd.testing.assert_frame_equal(read_resolved(clips / "single.parquet"), read_resolved(out))
