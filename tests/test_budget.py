"""Budgets for API runs against a real local HTTP server: the estimate printed before the first request,
--budget stopping cleanly and resuming, per-request image limits, and --heal over the API."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from clirun import vidcap
from fake_openai_server import FakeOpenAIServer
from media import make_video

from vidcap.budget import image_limit, image_tokens, resized
from vidcap.heal import reasons_of


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("budget")
    paths = []
    for i in range(10):
        make_video(root / f"c{i}.mp4", n_frames=12, size=(320 + 32 * (i % 3), 240))
        paths.append(f"c{i}.mp4")
    pd.DataFrame({"path": paths}).to_csv(root / "m.csv", index=False)
    return root / "m.csv"


def _api(server, *args):
    return ["--backend", "openai", "--base-url", server.base_url, "--workers", "0", "-q", *args]


def _summary(out: Path) -> dict:
    return json.loads(Path(str(out) + ".run.json").read_text())["summary"]


def test_openai_image_token_rule():
    assert image_tokens(1024, 1024, "high") == 765  # OpenAI's own worked examples
    assert image_tokens(2048, 4096, "high") == 1105
    assert image_tokens(4096, 8192, "low") == 85
    assert resized(1920, 1080, 360) == (640, 360)


def test_known_image_limits():
    assert image_limit("https://myres.openai.azure.com/openai/deployments/x", None) == (10, "myres.openai.azure.com")
    assert image_limit("http://localhost:8000/v1", None) is None
    assert image_limit("http://localhost:8000/v1", 4) == (4, "--max-images")


def test_estimate_is_within_20_percent_of_the_counted_cost(manifest, tmp_path):
    with FakeOpenAIServer(usage="openai") as server:
        out = tmp_path / "o.csv"
        proc = vidcap(
            "caption",
            manifest,
            "-o",
            out,
            "--model",
            "gpt-4o",
            "--detail",
            "high",
            "--num-frames",
            "4",
            "--max-new-tokens",
            "96",
            *_api(server),
        )
    assert re.search(r"estimate for 10 rows: 4 frames of \d+x240 at detail=high", proc.stderr)
    summary = _summary(out)
    est, counted = summary["estimate"]["cost_usd"], summary["cost_usd"]
    print(f"estimate ${est} vs counted ${counted}")
    assert counted > 0 and abs(est - counted) / counted < 0.2, (est, counted)
    assert abs(summary["estimate"]["prompt_tokens"] - summary["prompt_tokens"]) / summary["prompt_tokens"] < 0.05


def test_budget_stops_within_one_batch_and_a_rerun_continues(manifest, tmp_path):
    per_row = (10 + 85 * 2) * 1000 / 1e6  # the server's simple usage: 10 + 85 per image; $1000 per M tokens
    out = tmp_path / "o.parquet"
    with FakeOpenAIServer() as server:
        args = [
            "caption",
            manifest,
            "-o",
            out,
            "--model",
            "m",
            "--num-frames",
            "2",
            "--price-in",
            "1000",
            "--price-out",
            "0",
            "--batch-size",
            "2",
            *_api(server),
        ]
        proc = vidcap(*args, "--budget", "0.5", check=False)
        assert proc.returncode == 3 and "budget of $0.50 is spent" in proc.stderr
        spent = len(server.hits) * per_row
        assert 0.5 <= spent <= 0.5 + 2 * per_row  # stopped before the next batch
        assert not out.exists() and Path(str(out) + ".parts").is_dir()  # resumable: the parts are kept
        done_before = len(server.hits)
        proc = vidcap(*args, "--budget", "100")
        assert len(server.hits) == 10  # the rerun sent only the rows left
    assert f"{done_before} skipped" in proc.stderr
    assert (pd.read_parquet(out)["status"] == "ok").all()


def test_max_images_caps_frames_with_a_note(manifest, tmp_path):
    with FakeOpenAIServer() as server:
        proc = vidcap(
            "caption",
            manifest,
            "-o",
            tmp_path / "o.csv",
            "--model",
            "m",
            "--num-frames",
            "6",
            "--max-images",
            "3",
            "--limit",
            "2",
            *_api(server),
        )
        assert {len(h.images) for h in server.hits} == {3}
    assert "at most 3 images per request; sending 3 frames per clip instead of 6" in proc.stderr


def test_heal_over_the_api_sends_penalties_for_the_looping_rows_only(manifest, tmp_path):
    with FakeOpenAIServer() as server:
        server.script[""] = ["loop"]  # every answer loops unless the request carries a frequency penalty
        out = tmp_path / "o.csv"
        vidcap(
            "caption",
            manifest,
            "-o",
            out,
            "--model",
            "m",
            "--num-frames",
            "2",
            "--limit",
            "3",
            "--heal",
            "2",
            "--max-new-tokens",
            "40",
            *_api(server),
        )
        first, heal = server.hits[:3], server.hits[3:]
    assert all("frequency_penalty" not in h.body for h in first)
    assert len(heal) == 3 and all(h.body["frequency_penalty"] > 0 for h in heal)
    df = pd.read_csv(out)
    tried = json.loads(df["heal_attempts"].iloc[0])[1]["decoding"]
    assert tried["frequency_penalty"] > 0 and "repetition_penalty" not in tried  # what was sent, nothing else
    assert (df["heal"] == "healed").all() and not any(reasons_of(f) for f in df["flags"].fillna(""))


def test_budget_without_a_price_is_refused_in_one_sentence(manifest, tmp_path):
    proc = vidcap(
        "caption",
        manifest,
        "-o",
        tmp_path / "o.csv",
        "--backend",
        "openai",
        "--model",
        "my-own-model",
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--budget",
        "5",
        check=False,
    )
    assert proc.returncode == 2 and "--budget needs a price" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.csv.parts").exists()
