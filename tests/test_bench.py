"""`vidcap bench` on the CPU with a tiny model: the command works end to end (no timing asserted)."""

from __future__ import annotations

import json

from clirun import vidcap


def test_bench_tiny_shape_with_baseline(tmp_path):
    work = tmp_path / "bench"
    proc = vidcap(
        "bench",
        "--shape",
        "tiny-qwen2-vl",
        "--videos",
        "4",
        "--batch-size",
        "2",
        "--new-tokens",
        "4",
        "--resolution",
        "160x120",
        "--seconds",
        "1",
        "--workers",
        "1",
        "--baseline",
        "--work-dir",
        work,
        timeout=500,
    )
    report = json.loads((work / "bench.json").read_text())
    labels = [r["label"] for r in report["runs"]]
    assert labels == ["baseline", "vidcap"]
    for run in report["runs"]:
        assert run["videos"] == 4 and run["ok"] == 4  # every clip went through the whole pipeline
        assert run["completion_tokens"] == 4  # EOS ignored: exactly --new-tokens per clip
        assert run["videos_per_s"] > 0
    assert report["speedup"] > 0
    # each run says which path it took: the baseline went through generate(), vidcap through its engine
    assert report["runs"][0]["engine"]["fast_path"] is False and report["runs"][1]["engine"]["fast_path"] is True
    assert "speed-up over the baseline path" in proc.stdout and "[vidcap] 4 videos (4 ok)" in proc.stdout
    # the breakdown says where the engine's time went, not a column of zeros
    stages = report["runs"][1]["stage_s"]
    assert stages["engine prefill (vision+prompt)"] > 0 and stages["engine decode steps"] > 0


def test_bench_with_a_relative_work_dir_captions_every_clip(tmp_path):
    """The default work dir is relative to where you stand; the bench's manifest must still resolve."""
    proc = vidcap(
        "bench",
        "--shape",
        "tiny-qwen2-vl",
        "--videos",
        "2",
        "--batch-size",
        "2",
        "--new-tokens",
        "2",
        "--resolution",
        "160x120",
        "--seconds",
        "1",
        "--workers",
        "0",
        "--work-dir",
        "rel",
        cwd=tmp_path,
        timeout=500,
    )
    assert "[vidcap] 2 videos (2 ok)" in proc.stdout


def test_real_size_shapes_need_a_gpu(tmp_path):
    proc = vidcap("bench", "--shape", "pllava-13b", "--work-dir", tmp_path, check=False, CUDA_VISIBLE_DEVICES="")
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr and "tiny" in proc.stderr


def test_version():
    assert vidcap("--version").stdout.startswith("vidcap ")


def test_bench_windows_of_long_videos_against_pre_cut_clips(tmp_path):
    """--window: as many window rows (range rows of longer videos) as pre-cut clips, each captioned whole."""
    work = tmp_path / "bench"
    args = ["--shape", "tiny-qwen2.5-vl", "--videos", "6", "--batch-size", "3", "--new-tokens", "3"]
    args += ["--resolution", "160x120", "--seconds", "3", "--window", "1", "--workers", "0", "--work-dir", work]
    proc = vidcap("bench", *args, timeout=500)
    report = json.loads((work / "bench.json").read_text())
    assert [r["ok"] for r in report["runs"]] == [6, 6]
    windows = report["windows"]
    assert windows["rows"] == 6 and windows["window_s"] == 1.0 and windows["speed_ratio"] > 0
    manifest = (work / "bench_windows_6_1s.csv").read_text().splitlines()
    assert manifest[0] == "path,start_time,end_time" and len(manifest) == 7  # 2 videos of 3 s, 3 windows each
    assert "windows of 1 s in 3 s videos vs pre-cut clips of 1 s" in proc.stdout
    refused = vidcap("bench", *args[:-6], "--seconds", "1", "--window", "1", "--work-dir", work, check=False)
    assert refused.returncode == 2 and "needs --seconds of at least 2" in refused.stderr
