"""The ledger path (a large manifest: DuckDB plan, compacted parts, one ordered merge) under the executors
that hand rows to other processes: `--gpus cpu:N` workers and torchrun ranks. A killed worker, a kill -9 of
the coordinator alone, and a kill of a whole torchrun launch each resume to every row exactly once, equal to
the one-process run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from clirun import VIDCAP, cli_env, read_resolved, vidcap
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from media import clip_set
from proctools import kill_coordinator, kill_launch, kill_worker, wait_for

from vidcap.manifest import RID

pytest.importorskip("duckdb")

FAKE = ["--model", "fake", "-q"]
LEDGER = {"VIDCAP_STREAM_MIN_BYTES": "0"}  # every manifest takes the ledger path
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "vidcap"]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("lx")
    clip_set(root, 24, frame_cycle=5)
    single = root / "single.parquet"
    vidcap("caption", root / "m.csv", "-o", single, *FAKE, "--workers", "1", **LEDGER)
    assert summary(single)["ledger"]["executor"] == "local"
    return root


def summary(out: Path) -> dict:
    return json.loads(out.with_name(out.name + ".run.json").read_text())["summary"]


def saved_rids(parts: Path) -> pd.Series:
    """Row ids in every part, loose or compacted (compact/<worker>/<NNNN>/c-*.parquet)."""
    files = [*parts.glob("part-*.parquet"), *parts.glob("compact/*/*/c-*.parquet")]
    return pd.concat([pd.read_parquet(p, columns=[RID]) for p in files])[RID]


def _start(clips, out, **env):
    args = [*VIDCAP, "caption", str(clips / "m.csv"), "-o", str(out), *FAKE, "--gpus", "cpu:3", "--workers", "0",
            "--batch-size", "1", "--part-rows", "1", "--keep-parts"]  # fmt: skip
    knobs = {**LEDGER, "VIDCAP_CHUNK_ROWS": "2", "VIDCAP_FAKE_DELAY": "0.3", **env}
    return subprocess.Popen(args, env=cli_env(**knobs), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_killed_worker_loses_nothing_on_the_ledger_path(clips, tmp_path):
    out = tmp_path / "k.parquet"
    parts = out.with_name(out.name + ".parts")
    proc = _start(clips, out, VIDCAP_COMPACT_PARTS="3")
    kill_worker(proc, parts, after_parts=1, timeout=180)
    got = summary(out)
    assert got["ledger"]["executor"] == "host" and got["worker_deaths"] == 1
    pd.testing.assert_frame_equal(read_resolved(clips / "single.parquet"), read_resolved(out))
    rids = saved_rids(parts)
    assert rids.is_unique and len(rids) == 26  # the dead worker's saved rows were not redone
    assert list(parts.glob("compact/cpu0/0000/c-*.parquet"))  # worker parts are compacted per worker


def test_kill_9_of_the_coordinator_alone_then_resume_on_the_ledger_path(clips, tmp_path):
    out = tmp_path / "r.parquet"
    parts = out.with_name(out.name + ".parts")
    proc = _start(clips, out)
    kill_coordinator(proc, parts, after_parts=4)  # the coordinator only: its workers must notice and stop
    assert not out.exists()
    vidcap("caption", clips / "m.csv", "-o", out, *FAKE, "--gpus", "cpu:2", "--workers", "0", **LEDGER)
    got = summary(out)
    assert got["ledger"]["executor"] == "host"
    assert got["skipped"] >= 4 and got["skipped"] + got["processed"] == 26  # only what was missing was done
    pd.testing.assert_frame_equal(read_resolved(clips / "single.parquet"), read_resolved(out))
    assert not parts.exists()


def test_torchrun_ranks_stream_rank_0s_plan_and_a_killed_launch_resumes(clips, tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "t.parquet"
    parts = out.with_name(out.name + ".parts")
    args = [*TORCHRUN, "caption", str(clips / "m.csv"), "-o", str(out), *FAKE, "--workers", "0", "-b", "1",
            "--part-rows", "1"]  # fmt: skip
    env = cli_env(**LEDGER, VIDCAP_FAKE_DELAY="0.3")
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    wait_for(
        lambda: {p.name.split("-")[1] for p in parts.glob("part-*.parquet")} == {"rank0", "rank1"},
        proc,
        what="parts from both ranks",
    )
    assert (parts / "plan.parquet").exists()  # rank 0's plan, which both ranks stream their share of
    kill_launch(proc)
    assert not out.exists()
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert "ranks: 2" in done.stderr and "share: rank1" in done.stderr
    got = summary(out)
    assert got["ledger"]["executor"] == "torchrun" and got["ranks"] == 2
    assert got["skipped"] >= 2 and got["skipped"] + got["processed"] == 26
    pd.testing.assert_frame_equal(read_resolved(clips / "single.parquet"), read_resolved(out))
    assert not parts.exists()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 9000), world=st.integers(1, 7), take=st.integers(1, 5000))
def test_plan_shares_split_the_plan_exactly(tmp_path, n, world, take):
    """Ranks' shares of a plan file: every row once, in order, shares differing by at most one row."""
    import duckdb

    from vidcap.ledger_plan import PlanRows

    path = tmp_path / f"plan-{n}.parquet"
    if not path.exists():
        duckdb.sql(f"COPY (SELECT range AS i, 'r' || range AS {RID} FROM range({n})) TO '{path}' "
                   "(FORMAT parquet, ROW_GROUP_SIZE 2048)")  # fmt: skip
    seen, sizes = [], []
    for rank in range(world):
        share = PlanRows(path, rank, world)
        got = []
        while (rows := share.take(take)) is not None:
            got += [r["i"] for r in rows]
        assert len(got) == len(share)
        sizes.append(len(got))
        seen += got
    assert seen == list(range(n)) and max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("launch", ["local", "torchrun"])
def test_tensor_parallel_groups_on_the_ledger_path(clips, tmp_path, launch):
    """`--tp 2`: the group's leader takes the rows of the plan (its share of rank 0's plan file under
    torchrun), the follower runs every batch with it and takes none itself."""
    pytest.importorskip("torch")
    out = tmp_path / "tp.parquet"
    args = ["caption", str(clips / "m.csv"), "-o", str(out), *FAKE, "--workers", "0", "--tp", "2"]
    if launch == "local":
        vidcap(*args, "--gpus", "cpu:4", **LEDGER)
    else:
        proc = subprocess.run(
            [*TORCHRUN, *args], capture_output=True, text=True, timeout=300, env=cli_env(**LEDGER), check=False
        )
        assert proc.returncode == 0, proc.stderr
    assert summary(out)["ledger"]["executor"] == {"local": "host"}.get(launch, launch)
    pd.testing.assert_frame_equal(read_resolved(clips / "single.parquet"), read_resolved(out))


def test_a_torchrun_rank_whose_every_row_failed_does_not_stop_the_merge(clips, tmp_path):
    """Rank 1's share is all missing files: it exits 0 (torchrun would otherwise end rank 0 before its
    merge) and rank 0 writes the whole output."""
    pytest.importorskip("torch")
    rows = [f"v/c{i:02d}.mp4" for i in range(4)] + [f"v/none{i}.mp4" for i in range(4)]
    manifest = tmp_path / "half.csv"
    pd.DataFrame({"path": [str(clips / p) for p in rows]}).to_csv(manifest, index=False)
    out = tmp_path / "half.parquet"
    args = [*TORCHRUN, "caption", str(manifest), "-o", str(out), *FAKE, "--workers", "0"]
    proc = subprocess.run(args, capture_output=True, text=True, env=cli_env(**LEDGER), timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    got = read_resolved(out)
    assert len(got) == 8 and list(got["status"]) == ["ok"] * 4 + ["failed"] * 4
