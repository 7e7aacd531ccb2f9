"""Tensor parallelism with real (tiny) models on CPU ranks over gloo: each family's captions with --tp 2
equal the single-process ones; PLLaVA's own sharding (slices read from the checkpoint, LoRA merged per
slice, all-reduce after o/down) gives the unsharded logits; a split the heads cannot take is one sentence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from clirun import cli_env, vidcap
from media import make_video

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("tp")
    for i in range(4):
        make_video(root / f"c{i}.mp4", n_frames=10 + 2 * i, size=(64, 48))
    pd.DataFrame({"path": [f"c{i}.mp4" for i in range(4)]}).to_csv(root / "m.csv", index=False)
    return root


@pytest.mark.parametrize("family", ["qwen2.5-vl", "llava-next", "pllava"])
def test_tp_2_captions_equal_the_single_process_run(tiny_model, clips, tmp_path, family):
    model = tiny_model(family)
    common = ["--model", model, "-q", "--workers", "0", "--max-new-tokens", "8"]
    vidcap("caption", clips / "m.csv", "-o", tmp_path / "one.parquet", *common)
    proc = vidcap("caption", clips / "m.csv", "-o", tmp_path / "tp.parquet", *common, "--gpus", "cpu:2", "--tp", "2")
    assert "tensor parallel: 2 devices per model" in proc.stderr  # the model really was split
    one, tp = pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "tp.parquet")
    assert (tp["status"] == "ok").all(), tp["error"].tolist()
    assert tp["text"].tolist() == one["text"].tolist()
    assert tp["completion_tokens"].tolist() == one["completion_tokens"].tolist()


def test_pllava_shards_give_the_unsharded_logits(tiny_model, tmp_path):
    model = tiny_model("pllava")
    full = subprocess.run(
        [sys.executable, HERE / "tp_logits.py", model, tmp_path / "full.pt"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )
    assert full.returncode == 0, full.stderr
    split = subprocess.run(
        [*TORCHRUN, HERE / "tp_logits.py", model, tmp_path / "tp.pt"],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=300,
    )
    assert split.returncode == 0, split.stderr
    a, b = torch.load(tmp_path / "full.pt"), torch.load(tmp_path / "tp.pt")
    assert a["tp"] == 1 and b["tp"] == 2 and b["q_rows"] * 2 == a["q_rows"]  # half the heads on each rank
    assert a["logits"].shape == b["logits"].shape
    assert torch.allclose(a["logits"], b["logits"], atol=1e-4), (a["logits"] - b["logits"]).abs().max()


@pytest.mark.parametrize("family", ["qwen2.5-vl", "pllava"])
def test_a_tp_the_heads_cannot_take_is_one_sentence(tiny_model, clips, tmp_path, family):
    out = tmp_path / "o.parquet"
    proc = vidcap(
        "caption",
        clips / "m.csv",
        "-o",
        out,
        "--model",
        tiny_model(family),
        "-q",
        "--workers",
        "0",
        "--gpus",
        "cpu:3",
        "--tp",
        "3",
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "--tp 3 does not divide the 2 attention heads" in proc.stderr
    assert not out.exists() and not out.with_name(out.name + ".parts").exists()
