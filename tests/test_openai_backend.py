"""The OpenAI-compatible caption backend against a real local HTTP server (tests/fake_openai_server.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_openai_server import FakeOpenAIServer

from vidcap.backends.api_common import Redactor, chat_params, parse_retry_after, price_for
from vidcap.backends.base import CaptionOptions, CaptionRequest
from vidcap.backends.registry import make_backend, resolve_model
from vidcap.errors import FatalRunError, UsageError

pytestmark = pytest.mark.timeout(60)

KEY = "sk-vidcaptest-7f3a9c2e5b1d4e6f8a0b"
ENV = "VIDCAP_TEST_KEY"


@pytest.fixture
def server():
    srv = FakeOpenAIServer(delay=0.02).start()
    yield srv
    srv.stop()


@pytest.fixture
def make(server, monkeypatch):
    monkeypatch.setenv(ENV, KEY)
    made = []

    def _make(model="test-model", **kw):
        kw.setdefault("backoff_base", 0.01)
        opts = CaptionOptions(base_url=server.base_url, api_key_env=ENV, **kw)
        backend = make_backend(resolve_model(model, backend="openai"), opts)
        backend.setup()
        made.append(backend)
        return backend

    yield _make
    for backend in made:
        backend.teardown()


def frames(k=3, h=48, w=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (k, h, w, 3), dtype=np.uint8)


def req(tag, k=3, **kw):
    return CaptionRequest(frames(k), f"Describe the clip. #id={tag}", **kw)


def test_request_shape_and_results(server, make):
    import cv2

    backend = make(detail="low", max_new_tokens=77)
    f = np.zeros((3, 48, 64, 3), np.uint8)
    f[:, :, :, 0] = 200  # red in RGB: the server must see red after JPEG (channel order kept)
    results = backend.caption([CaptionRequest(f, "Describe the clip. #id=a"), req("b", k=5)])
    assert [r.error for r in results] == ["", ""]
    assert results[0].text == "A caption for a from 3 frames."
    assert results[1].text == "A caption for b from 5 frames."
    assert results[0].prompt_tokens == 10 + 85 * 3 and results[0].completion_tokens == 7
    assert server.problems() == []
    hit = server.hits_for("a")[0]
    assert hit.model == "test-model" and hit.prompt == "Describe the clip. #id=a"
    assert hit.details == ["low"] * 3 and hit.body["max_tokens"] == 77 and hit.body["temperature"] == 0
    assert hit.auth == f"Bearer {KEY}"
    img = cv2.imdecode(np.frombuffer(hit.images[0], np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert img.shape == (48, 64, 3) and abs(int(img[..., 0].mean()) - 200) < 6 and img[..., 2].mean() < 6
    assert len(server.hits_for("b")[0].images) == 5


def test_image_sends_one_frame_and_default_prompt(server, make):
    from vidcap.prompts.caption import GPT4V_DEFAULT, get_prompt

    backend = make()
    results = backend.caption(
        [CaptionRequest(frames(1), "Describe #id=img", is_image=True), CaptionRequest(frames(3), "")]
    )
    assert all(r.error == "" for r in results)
    assert len(server.hits_for("img")[0].images) == 1
    default = [h for h in server.hits if h.tag == ""][0]
    assert default.prompt == get_prompt(GPT4V_DEFAULT).text and len(default.images) == 3


def test_retries_are_bounded_and_errors_recorded(server, make):
    server.script.update(
        {
            "flaky": ["500", "503", "ok"],
            "down": ["500"],
            "junk": ["malformed"],
            "nochoice": ["nochoices"],
            "drop": ["drop", "ok"],
            "bad": ["400"],
            "empty": ["empty"],
            "cut": ["length"],
        }
    )
    backend = make(max_retries=2)
    tags = ["ok", "flaky", "down", "junk", "nochoice", "drop", "bad", "empty", "cut"]
    results = dict(zip(tags, backend.caption([req(t) for t in tags]), strict=False))
    assert results["ok"].error == "" and results["flaky"].error == "" and results["drop"].error == ""
    assert results["flaky"].text == "A caption for flaky from 3 frames."
    assert results["down"].error.startswith("api: 500") and "after 3 attempts" in results["down"].error
    assert results["junk"].error.startswith("api: malformed response")
    assert results["nochoice"].error.startswith("api: malformed response")
    assert results["bad"].error.startswith("api: 400")
    assert results["empty"].error.startswith("empty_text:") and results["empty"].finish_reason == "content_filter"
    assert (
        results["cut"].error == ""
        and results["cut"].finish_reason == "length"
        and results["ok"].finish_reason == "stop"
    )
    hits = {t: len(server.hits_for(t)) for t in tags}
    assert hits == {"ok": 1, "flaky": 3, "down": 3, "junk": 3, "nochoice": 3, "drop": 2, "bad": 1, "empty": 1, "cut": 1}
    usage = backend.usage_summary()
    assert usage["api_requests"] == 9 and usage["api_attempts"] == sum(hits.values())
    assert usage["api_retries"] == sum(hits.values()) - 9


def test_timeout_gives_up_with_timeout_code(server, make):
    server.script["slow"] = ["slow:1.5"]
    server.script["late"] = ["slow:1.5", "ok"]
    backend = make(timeout=0.3, max_retries=1)
    slow, late = backend.caption([req("slow"), req("late")])
    assert slow.error.startswith("timeout:") and "after 2 attempts" in slow.error
    assert late.error == "" and late.text.startswith("A caption for late")
    assert len(server.hits_for("slow")) == 2 and len(server.hits_for("late")) == 2


def test_retry_after_is_honoured(server, make):
    server.script["limited"] = ["429:1", "ok"]
    backend = make(max_retries=3)
    (result,) = backend.caption([req("limited")])
    assert result.error == ""
    first, second = server.hits_for("limited")
    assert second.t - first.t >= 0.9  # backoff alone would be ~0.01 s here


def test_chat_params_follow_the_model_family():
    assert chat_params("gpt-4o", 300, 0.0) == {"max_tokens": 300, "temperature": 0.0}
    assert chat_params("gpt-5-mini", 300, 0.0) == {"max_completion_tokens": 300}
    assert chat_params("o4-mini", 300, 0.7) == {"max_completion_tokens": 300, "temperature": 0.7}


def test_retry_after_parsing():
    import email.utils
    import time

    assert parse_retry_after({"retry-after": "7"}, cap=60) == 7
    assert parse_retry_after({"retry-after": "7000"}, cap=60) == 60
    assert parse_retry_after({"retry-after-ms": "250"}, cap=60) == 0.25
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= parse_retry_after({"retry-after": when}, cap=60) <= 30
    assert parse_retry_after({"retry-after": "soon"}, cap=60) is None
    assert parse_retry_after({}, cap=60) is None


def test_concurrency_is_used_and_bounded(server, make):
    server.delay = 0.15
    backend = make(concurrency=4)
    results = backend.caption([req(f"c{i}") for i in range(12)])
    assert all(r.error == "" for r in results)
    assert [r.text for r in results] == [f"A caption for c{i} from 3 frames." for i in range(12)]
    assert 2 <= server.max_inflight <= 4


def test_caption_one_from_another_event_loop(server, make):
    server.delay = 0.1
    backend = make(concurrency=8)

    async def stream():
        return await asyncio.gather(*(backend.caption_one(req(f"s{i}")) for i in range(6)))

    results = asyncio.run(stream())
    assert [r.text for r in results] == [f"A caption for s{i} from 3 frames." for i in range(6)]
    assert server.max_inflight >= 2
    assert backend.caption([req("after")])[0].error == ""  # the sync path still works afterwards


@pytest.mark.parametrize(
    "behaviour, words",
    [
        ("401", "refused the API key"),
        ("403", "refused the API key"),
        ("404", "404 for model 'test-model'"),
        ("quota", "out of quota"),
    ],
)
def test_auth_and_missing_model_stop_the_run(server, make, behaviour, words):
    server.script["boom"] = [behaviour]
    backend = make(max_retries=3)
    with pytest.raises(FatalRunError) as info:
        backend.caption([req("ok1"), req("boom"), req("ok2")])
    assert words in str(info.value) and KEY not in str(info.value)
    assert len(server.hits_for("boom")) == 1  # never retried
    with pytest.raises(FatalRunError):
        backend.caption([req("later")])
    assert server.hits_for("later") == []  # a stopped client sends nothing more


def test_rejected_from_the_start_stops_the_run(server, make):
    server.script.update({f"r{i}": ["400"] for i in range(10)})
    backend = make(concurrency=1)
    with pytest.raises(FatalRunError, match="were all rejected"):
        backend.caption([req(f"r{i}") for i in range(10)])
    assert len(server.hits) == 8


def test_key_never_leaks(server, make, caplog):
    caplog.set_level(logging.DEBUG)
    server.script["echo"] = ["echo-key"]
    backend = make(max_retries=1)
    results = backend.caption([req("echo"), req("fine")])
    assert results[0].error.startswith("api: 500") and "Bearer ***" in results[0].error
    assert len(server.hits_for("echo")) == 2 and server.hits_for("echo")[0].auth == f"Bearer {KEY}"
    text = repr(results) + repr(backend.provenance()) + repr(backend.usage_summary()) + caplog.text
    assert "retry 1" in caplog.text  # the retry was logged (and redacted)
    assert KEY not in text and KEY[5:20] not in text
    assert Redactor(KEY)(f"x {KEY} Bearer abc sk-other123456") == "x *** Bearer *** sk-***"


def test_missing_key_and_self_hosted(server, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    preset = resolve_model("gpt-4o", backend="openai")
    with pytest.raises(UsageError, match=f"set the environment variable {ENV}"):
        make_backend(preset, CaptionOptions(api_key_env=ENV)).setup()
    with pytest.raises(UsageError, match="not the key itself"):
        make_backend(preset, CaptionOptions(api_key_env=KEY)).setup()
    with pytest.raises(UsageError, match="--detail"):
        make_backend(preset, CaptionOptions(detail="ultra"))
    backend = make_backend(
        resolve_model("Qwen/Qwen2.5-VL-7B-Instruct", backend="openai"),
        CaptionOptions(base_url=server.base_url, api_key_env=ENV),
    )
    backend.setup()
    try:
        assert backend.caption([req("local")])[0].error == ""
    finally:
        backend.teardown()
    hit = server.hits_for("local")[0]
    assert hit.auth == "Bearer EMPTY" and hit.model == "Qwen/Qwen2.5-VL-7B-Instruct"


def test_usage_and_cost(server, make):
    backend = make("gpt-4o")
    backend.caption([req("u1"), req("u2")])
    usage = backend.usage_summary()
    assert usage["prompt_tokens"] == 2 * 265 and usage["completion_tokens"] == 14
    assert usage["cost_usd"] == pytest.approx((530 * 2.5 + 14 * 10.0) / 1e6)
    assert make(price_in=1.0, price_out=2.0).usage_summary()["price_source"] == "user"
    assert price_for("gpt-4o-mini-2024-07-18")[:2] == (0.15, 0.60)
    assert price_for("gpt-4o-2024-08-06")[:2] == (2.50, 10.00)
    assert price_for("Qwen/Qwen2.5-VL-7B-Instruct") == (None, None, None)
    assert price_for("my-model", price_in=0.5)[:2] == (0.5, 0.0)


@pytest.mark.timeout(180)  # two CLI runs in subprocesses; slow only on a loaded machine
def _key_env() -> dict:
    """This environment with the API key set and vidcap's source importable."""
    return {**os.environ, ENV: KEY, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}


def _api_caption(server, manifest, out, *extra) -> list:
    """`vidcap caption` against the fake server, keeping its parts (the key must be in none of them)."""
    return [
        sys.executable,
        "-m",
        "vidcap",
        "caption",
        str(manifest),
        "-o",
        str(out),
        "--backend",
        "openai",
        "--base-url",
        server.base_url,
        "--model",
        "x",
        "--api-key-env",
        ENV,
        "--keep-parts",
        *extra,
    ]


def test_cli_end_to_end_keeps_the_key_off_disk(server, tmp_path):
    import cv2
    from media import make_video, read_index

    paths = [make_video(tmp_path / f"clip{i}.mp4", n_frames=30) for i in range(4)]
    missing = tmp_path / "gone.mp4"
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(p) for p in paths] + [str(missing)]}).to_csv(manifest, index=False)
    out = tmp_path / "out" / "caps.csv"
    env = _key_env()
    cmd = _api_caption(server, manifest, out, "--num-frames", "3", "--max-retries", "1", "--workers", "1")
    server.script[""] = ["ok", "ok", "401"]  # untagged requests: the third one is refused
    stopped = subprocess.run(
        cmd + ["--concurrency", "1", "--batch-size", "1"], env=env, capture_output=True, text=True, timeout=80
    )
    assert stopped.returncode != 0 and "refused the API key" in stopped.stderr
    assert not out.exists() and len(server.hits) == 3
    server.script[""] = ["ok"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(out)
    assert list(df["status"]) == ["ok"] * 4 + ["failed"]
    assert df["error"].iloc[4].startswith("missing")
    assert (df["prompt_tokens"].iloc[:4] == 10 + 85 * 3).all()
    assert server.problems() == [] and len(server.hits) == 3 + 2  # the resume asked only for the rest
    for hit in server.hits:  # the frames sent are the clip's own, in order
        idx = [read_index(cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]) for b in hit.images]
        assert len(idx) == 3 and idx == sorted(idx) and len(set(idx)) == 3
    on_disk = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in on_disk) and any(p.name.endswith(".json") for p in on_disk)
    for p in on_disk:
        assert KEY.encode() not in p.read_bytes(), p
    assert KEY not in proc.stdout + proc.stderr + stopped.stdout + stopped.stderr


def test_a_closed_port_stops_the_run_quickly(monkeypatch):
    """60 rows against a port nobody listens on: one sentence and a stop after a bounded number of
    attempts, not minutes of backoff per row."""
    import socket

    monkeypatch.setenv(ENV, KEY)
    with socket.socket() as s:  # a port that was free a moment ago
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = CaptionOptions(base_url=f"http://127.0.0.1:{port}/v1", api_key_env=ENV, concurrency=16, backoff_base=0.01)
    backend = make_backend(resolve_model("test-model", backend="openai"), opts)
    backend.setup()
    t0 = time.monotonic()
    try:
        with pytest.raises(FatalRunError, match="all failed the same way") as err:
            backend.caption([req(f"c{i}") for i in range(60)])
    finally:
        backend.teardown()
    assert time.monotonic() - t0 < 30 and "connection error" in str(err.value)


def test_an_html_page_says_so_and_stops(server, make):
    server.script.update({f"h{i}": ["html"] for i in range(40)})
    backend = make(concurrency=4)
    with pytest.raises(FatalRunError, match="HTML page") as err:
        backend.caption([req(f"h{i}") for i in range(40)])
    assert "/v1" in str(err.value) and len(server.hits) <= 40


def test_timeout_bounds_a_trickling_answer(server, make):
    server.script["t"] = ["trickle:6"]
    backend = make(timeout=1.0, max_retries=0)
    t0 = time.monotonic()
    (res,) = backend.caption([req("t")])
    assert res.error.startswith("timeout") and time.monotonic() - t0 < 4


def test_a_caption_echoing_the_key_is_redacted(server, make):
    server.script["k"] = ["caption-key"]
    (res,) = make().caption([req("k")])
    assert res.error == "" and KEY not in res.text and "***" in res.text


def test_a_finish_reason_echoing_the_key_is_redacted(server, make):
    server.script["empty"] = ["finish-key"]
    server.script["full"] = ["finish-key-text"]
    empty, full = make().caption([req("empty"), req("full")])
    assert empty.error.startswith("empty_text") and "finish_reason=Bearer ***" in empty.error
    assert full.error == "" and full.finish_reason == "stop Bearer ***"
    assert KEY not in repr([empty, full]) and KEY[5:20] not in repr([empty, full])


@pytest.mark.timeout(120)
def test_cli_keeps_a_key_echoed_in_finish_reason_off_disk(server, tmp_path):
    """The key a server repeats in `finish_reason` reaches neither the output, the parts, nor the terminal."""
    from media import make_video

    paths = [make_video(tmp_path / f"clip{i}.mp4", n_frames=12) for i in range(2)]
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(p) for p in paths]}).to_csv(manifest, index=False)
    out = tmp_path / "caps.csv"
    env = _key_env()
    server.script[""] = ["finish-key", "finish-key-text"]
    cmd = _api_caption(
        server, manifest, out, "--num-frames", "2", "--workers", "0", "--concurrency", "1", "--batch-size", "1"
    )
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=100)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(out)
    assert sorted(df["status"]) == ["failed", "ok"] and len(server.hits) == 2
    assert "Bearer ***" in df[["finish_reason", "error"]].fillna("").to_string()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    for p in files:
        assert KEY.encode() not in p.read_bytes(), p
    assert KEY not in proc.stdout + proc.stderr


def test_invalid_unicode_in_a_caption_is_replaced_and_flagged(server, tmp_path):
    """A caption with a lone surrogate (valid JSON, invalid UTF-8) cannot crash the write after the work is
    done: it is stored with U+FFFD and flagged `replaced_chars`."""
    from media import make_video

    from vidcap.manifest import read_table

    clip = make_video(tmp_path / "c.mp4", 24, (96, 64))
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(clip)]}).to_csv(manifest, index=False)
    server.script[""] = ["surrogate"]
    for ext in (".csv", ".parquet"):
        out = tmp_path / f"o{ext}"
        env = {**os.environ, ENV: KEY, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "vidcap",
                "caption",
                str(manifest),
                "-o",
                str(out),
                "--backend",
                "openai",
                "--base-url",
                server.base_url,
                "--model",
                "x",
                "--api-key-env",
                ENV,
                "--workers",
                "0",
                "-q",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=80,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        row = read_table(out).iloc[0]
        assert row["status"] == "ok" and row["text"] == "A clip. \ufffd" and "replaced_chars" in str(row["flags"])
