"""Budgets for API runs against a real local HTTP server: the estimate printed before the first request,
--budget stopping cleanly and resuming, per-request image limits, and --heal over the API."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from clirun import vidcap
from fake_openai_server import FakeOpenAIServer, openai_completion
from media import make_video

from vidcap.backends.api_common import image_limit
from vidcap.budget import image_tokens, resized
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


def _cost(server, pin: float, pout: float) -> float:
    """What the server's answers cost: each hit's usage as the server counted it, at these prices."""
    total = 0.0
    for hit in server.hits:
        usage = openai_completion(hit)["usage"]
        total += (usage["prompt_tokens"] * pin + usage["completion_tokens"] * pout) / 1e6
    return total


def _worst(hit, pin: float, pout: float, max_tokens: int) -> float:
    """An upper bound on one request's cost: its text at 2 characters a token, 85 per low-detail image."""
    return ((len(hit.prompt) / 2 + 8 + 85 * len(hit.images)) * pin + max_tokens * pout) / 1e6


def test_budget_holds_across_batching_and_reruns(manifest, tmp_path):
    """Default batching (4 x --concurrency rows a round, all in flight at once): the run spends at most its
    budget; the same command again spends nothing more; a higher budget finishes the output, and the summary
    gives this run's cost and the output's total."""
    pin, pout, limit = 100.0, 400.0, 64
    out = tmp_path / "o.csv"
    with FakeOpenAIServer(usage="openai") as server:
        args = [
            "caption",
            manifest,
            "-o",
            out,
            "--model",
            "m",
            "--num-frames",
            "2",
            "--detail",
            "low",
            "--max-new-tokens",
            str(limit),
            "--price-in",
            str(pin),
            "--price-out",
            str(pout),
            "--backend",
            "openai",
            "--base-url",
            server.base_url,
            "--workers",
            "0",
        ]
        proc = vidcap(*args, "--budget", "0.5", check=False)
        first = len(server.hits)
        spent = _cost(server, pin, pout)
        print(f"budget $0.50: {first} of 10 requests sent, ${spent:.4f} spent")
        assert proc.returncode == 3, proc.stderr
        assert 0 < first < 10 and spent <= 0.5 + max(_worst(h, pin, pout, limit) for h in server.hits)
        assert spent <= 0.5  # the gate reserves each request's worst case before sending it
        said = re.search(r"budget of \$0\.50 for this output is spent: \$([\d.]+) in all", proc.stderr)
        assert said and abs(float(said.group(1)) - spent) < 1e-3, proc.stderr
        assert "Traceback" not in proc.stderr and "higher --budget" in proc.stderr and not out.exists()
        record = json.loads(Path(str(out) + ".spend.json").read_text())
        assert abs(record["spent_usd"] - spent) < 1e-6
        for _ in range(3):
            proc = vidcap(*args, "--budget", "0.5", check=False)
            assert proc.returncode == 3 and "for this output is spent" in proc.stderr
            assert len(server.hits) == first  # not one more request
        proc = vidcap(*args, "--budget", "5")
        assert len(server.hits) == 10  # the rows the budget held back, and only those
        total = _cost(server, pin, pout)
    summary = _summary(out)
    assert abs(summary["cost_usd_output"] - total) < 1e-4 and abs(summary["cost_usd"] - (total - spent)) < 1e-4
    assert f"${summary['cost_usd']:.4f} this run, ${summary['cost_usd_output']:.4f} for this output" in proc.stderr
    assert (pd.read_csv(out)["status"] == "ok").all()


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
