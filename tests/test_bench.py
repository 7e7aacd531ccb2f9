"""`vidcap bench` on the CPU with a tiny model: the command works end to end (no timing asserted)."""

from __future__ import annotations

import json

from clirun import vidcap


def test_bench_tiny_shape_with_baseline(tmp_path):
    work = tmp_path / "bench"
    proc = vidcap("bench", "--shape", "tiny-qwen2-vl", "--videos", "4", "--batch-size", "2", "--new-tokens", "4",
                  "--resolution", "160x120", "--seconds", "1", "--workers", "1", "--baseline",
                  "--work-dir", work, timeout=500)
    report = json.loads((work / "bench.json").read_text())
    labels = [r["label"] for r in report["runs"]]
    assert labels == ["baseline", "vidcap"]
    for run in report["runs"]:
        assert run["videos"] == 4 and run["ok"] == 4  # every clip went through the whole pipeline
        assert run["completion_tokens"] == 4  # EOS ignored: exactly --new-tokens per clip
        assert run["videos_per_s"] > 0
    assert report["speedup"] > 0
    assert "speed-up over the baseline path" in proc.stdout and "[vidcap] 4 videos (4 ok)" in proc.stdout
