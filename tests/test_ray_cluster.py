"""The Ray engine on a two-node cluster on this machine (`ray.cluster_utils.Cluster`: a head and a second
raylet, 1 CPU each): every stage gives the local run's output; losing the second node mid-run still gives
it; the variables of the run reach the actors (secrets too, never printed); a wrong address ends in one
sentence within the deadline; the head going away mid-run saves the finished rows and ends with the
resume command (slow: it needs a cluster of its own)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from clirun import VIDCAP, cli_env, read_resolved, vidcap
from media import make_text_as_video, make_video

from vidcap.stages.base import Stage

pytest.importorskip("ray")

TESTS = str(Path(__file__).parent)
SRC = str(Path(__file__).parents[1] / "src")
QUICK = ["-q", "--workers", "0"]
STAGES = {
    "caption": ["caption", "--model", "fake", "-b", "2"],
    "motion": ["motion"],
    "tag": ["tag", "--key", "objects", "--backend", "fake", "-b", "2"],
}


class EnvStage(Stage):
    """Reports, for each row, what two variables hold where the stage runs (an actor on the cluster)."""

    name = suffix = "envprobe"
    columns = ("plain", "secret")  # type: ignore[assignment]
    reads_files = False
    batch_size = 2

    def process_batch(self, items):
        return [
            {"plain": os.environ.get("VIDCAP_PROBE_SETTING"), "secret": os.environ.get("PROBE_API_TOKEN")}
            for _ in items
        ]


def start_cluster():
    from ray.cluster_utils import Cluster

    # The raylets' workers import vidcap (and this module, for EnvStage) from here, as a cluster's nodes
    # import the vidcap installed on them.
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([SRC, TESTS, saved or ""])
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        second = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
    finally:
        os.environ["PYTHONPATH"] = saved or ""
    import ray

    if ray.is_initialized():  # Cluster() may connect this process; the runs are other processes
        ray.shutdown()
    return cluster, second


def descendants() -> list:
    """This test process's children and theirs (Ray's raylets, agents and workers), to reap after a node
    loss: a lost node's agents would otherwise outlive the test, reparented to init."""
    import psutil

    return psutil.Process().children(recursive=True)


def reap(procs: list) -> None:
    import psutil

    for proc in procs:
        try:
            proc.kill()  # psutil checks the process is still the one it saw (pid and start time)
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=10)


@pytest.fixture(scope="module")
def cluster():
    cluster, second = start_cluster()
    yield cluster, second
    procs = descendants()
    cluster.shutdown()
    reap(procs)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("raycl")
    (root / "v").mkdir()
    rows = []
    for i in range(10):
        make_video(root / "v" / f"c{i}.mp4", n_frames=10 + i, size=(64, 48))
        rows.append({"path": f"v/c{i}.mp4", "text": f"A dog runs {i} times across a park."})
    make_text_as_video(root / "v" / "bad.mp4")
    rows += [{"path": "v/bad.mp4", "text": ""}, {"path": "v/gone.mp4", "text": "x"}]
    pd.DataFrame(rows).to_csv(root / "m.csv", index=False)
    return root


def run_stage(stage: str, manifest, out, *extra, **env) -> subprocess.CompletedProcess:
    args = STAGES[stage]
    return vidcap(args[0], manifest, *args[1:], "-o", out, *QUICK, *extra, **env)


def test_every_stage_gives_the_local_output_on_two_nodes(cluster, clips, tmp_path):
    address = cluster[0].address
    for stage in STAGES:
        run_stage(stage, clips / "m.csv", tmp_path / f"{stage}-local.parquet")
        proc = run_stage(
            stage, clips / "m.csv", tmp_path / f"{stage}-ray.parquet", "--engine", "ray", "--address", address
        )
        assert "core_worker" not in proc.stderr and ".cc:" not in proc.stderr, proc.stderr  # Ray's C++ lines
        pd.testing.assert_frame_equal(
            read_resolved(tmp_path / f"{stage}-local.parquet"),
            read_resolved(tmp_path / f"{stage}-ray.parquet"),
            obj=stage,
        )


def test_a_manifest_read_as_a_stream_reaches_the_actors_from_the_drivers_plan(cluster, clips, tmp_path):
    """The ledger path on two nodes: the driver plans and hands the plan's rows to the actors a chunk at a
    time; the output equals the one-process ledger run's."""
    large = {"VIDCAP_STREAM_MIN_BYTES": "0"}
    run_stage("caption", clips / "m.csv", tmp_path / "local.parquet", **large)
    proc = run_stage("caption", clips / "m.csv", tmp_path / "ray.parquet", "--engine", "ray", "--address",
                     cluster[0].address, **large)  # fmt: skip
    assert "Deprecat" not in proc.stderr, proc.stderr
    meta = json.loads((tmp_path / "ray.parquet.run.json").read_text())["summary"]
    assert meta["ledger"]["executor"] == "ray" and meta["processed"] == 12
    pd.testing.assert_frame_equal(read_resolved(tmp_path / "local.parquet"), read_resolved(tmp_path / "ray.parquet"))


def test_the_run_environment_reaches_the_actors_and_secrets_are_not_printed(cluster, tmp_path):
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [f"x{i}.mp4" for i in range(6)]}).to_csv(manifest, index=False)
    code = (
        "import sys\n"
        "from test_ray_cluster import EnvStage\n"
        "from vidcap.runner import RunOptions, run\n"
        "opts = RunOptions(progress=False, executor='ray', address=sys.argv[3], ray_env=('PROBE_API_TOKEN',), ray_actors=2)\n"
        "s = run(EnvStage(), sys.argv[1], sys.argv[2], opts)\n"
        "print(s['ok'], s['actors'])\n"
    )
    env = cli_env(VIDCAP_PROBE_SETTING="fast", PROBE_API_TOKEN="sk-not-to-be-seen")
    env["PYTHONPATH"] = os.pathsep.join([TESTS, env["PYTHONPATH"]])
    proc = subprocess.run(
        [sys.executable, "-c", code, str(manifest), str(tmp_path / "o.parquet"), cluster[0].address],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["6", "1"]  # 2 CPUs in the cluster: one actor (one CPU decodes)
    out = pd.read_parquet(tmp_path / "o.parquet")
    assert (out["plain"] == "fast").all() and (out["secret"] == "sk-not-to-be-seen").all()
    assert "sk-not-to-be-seen" not in proc.stdout + proc.stderr


def test_a_name_given_to_ray_env_must_be_set(clips, tmp_path):
    proc = vidcap(
        "caption",
        clips / "m.csv",
        "-o",
        tmp_path / "o.parquet",
        "--model",
        "fake",
        *QUICK,
        "--engine",
        "ray",
        "--ray-env",
        "VIDCAP_NOT_SET_ANYWHERE",
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "vidcap: error: --ray-env VIDCAP_NOT_SET_ANYWHERE: VIDCAP_NOT_SET_ANYWHERE is not "
        "set in this environment; set it or drop the flag."
    )
    proc = vidcap(
        "caption",
        clips / "m.csv",
        "-o",
        tmp_path / "o.parquet",
        "--model",
        "fake",
        *QUICK,
        "--ray-actors",
        "2",
        check=False,
    )
    assert proc.returncode == 2 and "add --engine ray" in proc.stderr


def test_a_wrong_address_ends_in_one_sentence_within_the_deadline(clips, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "o.parquet"
    proc = vidcap(
        "caption",
        clips / "m.csv",
        "-o",
        out,
        "--model",
        "fake",
        *QUICK,
        "--engine",
        "ray",
        "--address",
        f"127.0.0.1:{port}",
        check=False,
        timeout=120,
        VIDCAP_RAY_CONNECT_TIMEOUT="2",
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    sentence = (
        f"vidcap: error: cannot reach the Ray cluster at 127.0.0.1:{port} within 2 s; start it with "
        "`ray start --head` there (or fix --address: `ray status` on the head prints it), or allow more "
        "time with VIDCAP_RAY_CONNECT_TIMEOUT."
    )
    assert lines == [sentence], proc.stderr
    assert not out.exists() and not out.with_name(out.name + ".parts").exists()


def _start_slow_run(clips, out, address, delay="0.4") -> subprocess.Popen:
    # VIDCAP_FAKE_DELAY reaches the actors through the run's environment; parts are flushed every second
    cmd = [
        *VIDCAP,
        "caption",
        str(clips / "m.csv"),
        "-o",
        str(out),
        "--model",
        "fake",
        *QUICK,
        "-b",
        "1",
        "--engine",
        "ray",
        "--address",
        address,
    ]
    env = cli_env(VIDCAP_FAKE_DELAY=delay, VIDCAP_RAY_FLUSH_SECONDS="1")
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_a_part(out, proc, limit=240.0) -> None:
    parts = out.with_name(out.name + ".parts")
    t0 = time.monotonic()
    while not list(parts.glob("part-*.parquet")):
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() - t0 < limit, "no part written"
        time.sleep(0.2)


def test_losing_the_second_node_mid_run_still_gives_the_local_output(cluster, clips, tmp_path):
    """Run last in this module: the cluster has one node left afterwards."""
    head, second = cluster
    vidcap("caption", clips / "m.csv", "-o", tmp_path / "local.parquet", "--model", "fake", *QUICK)
    out = tmp_path / "ray.parquet"
    proc = _start_slow_run(clips, out, head.address)
    try:
        _wait_for_a_part(out, proc)
        procs = [p for p in descendants() if p.pid != proc.pid]
        head.remove_node(second, allow_graceful=False)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    pd.testing.assert_frame_equal(read_resolved(tmp_path / "local.parquet"), read_resolved(out))
    reap([p for p in procs if p not in descendants()])  # the lost node's orphans (the head reaps the rest)


@pytest.mark.slow
def test_the_head_going_away_saves_the_finished_rows_and_names_the_resume_command(clips, tmp_path):
    cluster, _ = start_cluster()
    address = cluster.address
    out = tmp_path / "ray.parquet"
    procs: list = []
    try:
        proc = _start_slow_run(clips, out, address)
        try:
            _wait_for_a_part(out, proc)
            procs = [p for p in descendants() if p.pid != proc.pid]
            cluster.remove_node(cluster.head_node, allow_graceful=False)
            _, err = proc.communicate(timeout=120)  # the watch gives up after 5 s without the head
        finally:
            if proc.poll() is None:
                proc.kill()
    finally:
        with contextlib.suppress(Exception):  # the head is gone already
            cluster.shutdown()
        reap(procs)
    assert proc.returncode == 3, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"vidcap: stopped: the Ray cluster at {address} stopped answering mid-run")
    assert "resume with: vidcap caption" in last
    saved = sum(len(pd.read_parquet(p)) for p in out.with_name(out.name + ".parts").glob("part-*.parquet"))
    assert saved >= 1
    # the same command on a local Ray finishes the run: each row once, the local output
    vidcap("caption", clips / "m.csv", "-o", out, "--model", "fake", *QUICK, "-b", "1", "--engine", "ray")
    vidcap("caption", clips / "m.csv", "-o", tmp_path / "local.parquet", "--model", "fake", *QUICK)
    pd.testing.assert_frame_equal(read_resolved(tmp_path / "local.parquet"), read_resolved(out))


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.0.0.5:6379", ("10.0.0.5", 6379)),
        (" ray://head.example:10001 ", ("head.example", 10001)),
        ("[::1]:6379", ("::1", 6379)),
    ],
)
def test_addresses_are_read_as_host_and_port(address, expected):
    from vidcap.runners.ray_cluster import head_address

    assert head_address(address) == expected


@pytest.mark.parametrize("address", ["head", "head:port", ":6379", "ray://"])
def test_an_address_without_a_port_is_refused_in_one_sentence(address):
    from vidcap.errors import UsageError
    from vidcap.runners.ray_cluster import head_address

    with pytest.raises(UsageError, match=r"is not HOST:PORT \(e\.g\. 10\.0\.0\.5:6379\), ray://HOST:PORT or auto\.$"):
        head_address(address)


def test_secrets_are_kept_out_of_the_runtime_environment(monkeypatch):
    from vidcap.errors import UsageError
    from vidcap.runners.ray_cluster import run_environment

    monkeypatch.setenv("VIDCAP_FAKE_DELAY", "0.1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("MY_SETTING", "x")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("UNRELATED", "y")
    plain, secret = run_environment(["MY_SETTING", "OPENAI_API_KEY"])
    assert {"VIDCAP_FAKE_DELAY": "0.1", "HF_HUB_OFFLINE": "1", "MY_SETTING": "x"}.items() <= plain.items()
    assert secret == {"HF_TOKEN": "hf_secret", "OPENAI_API_KEY": "sk-secret"}
    assert "UNRELATED" not in plain and not set(secret) & set(plain)
    with pytest.raises(UsageError, match="not 'sk-a...'"):  # a value given for a name is not echoed whole
        run_environment(["sk-abcdefghijklmnop"])
