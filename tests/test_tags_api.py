"""`--backend openai` tagging: one chat request per caption (system prompt + caption) to a real local server."""

from __future__ import annotations

import json
import re

import fake_openai_server as fos
import pandas as pd
import pytest

from vidcap.backends.base import CaptionOptions
from vidcap.errors import UsageError
from vidcap.manifest import read_table
from vidcap.prompts.tags import TAG_PROMPTS
from vidcap.runner import RunOptions, run_stage
from vidcap.stages.tag import build_tag_stage

pytestmark = pytest.mark.timeout(60)
ENV = "VIDCAP_TAG_TEST_KEY"


def _respond(server, hit, behaviour):
    """Answers like a chat model asked for a `[a, b]` list: the caption's long words, bulleted or bracketed."""
    caption = hit.body["messages"][-1]["content"]
    if "#fail" in caption:
        return fos._error(400, "scripted 400")
    words = re.findall(r"[a-z]{4,}", caption.lower())
    text = "\n".join(f"- {w.title()}" for w in words) if "#bullets" in caption else f"Sure! [{', '.join(words)}]"
    return 200, json.dumps(fos.completion(hit, text=text)).encode(), {}


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setattr(fos, "respond", _respond)
    srv = fos.FakeOpenAIServer().start()
    yield srv
    srv.stop()


def test_openai_tagging_end_to_end(tmp_path, server, monkeypatch):
    monkeypatch.setenv(ENV, "sk-tagtest-0123456789")
    manifest = tmp_path / "meta.parquet"
    pd.DataFrame(
        {
            "path": ["a.mp4", "b.mp4", "c.mp4", "d.mp4"],
            "text": ["Horse jumping fence", "", "River boats #bullets", "broken #fail"],
        }
    ).to_parquet(manifest)
    opts = CaptionOptions(
        base_url=server.base_url, api_key_env=ENV, concurrency=4, max_new_tokens=64, max_retries=0, backoff_base=0.01
    )
    stage = build_tag_stage("actions", backend="openai", model="tagger-1", options=opts)
    assert stage.batch_size == 16
    summary = run_stage(stage, manifest, tmp_path / "meta_actions.parquet", RunOptions(workers=0, progress=False))
    df = read_table(tmp_path / "meta_actions.parquet")
    assert [list(c) if c is not None else None for c in df["actions"]] == [
        ["horse", "jumping", "fence"],
        None,
        ["river", "boats", "bullets"],
        None,
    ]
    assert list(df["status"]) == ["ok", "failed", "ok", "failed"]
    assert df["error"][1].startswith("empty_text:") and df["error"][3].startswith("api: 400")
    assert len(server.hits) == 3  # the empty caption was never sent
    for hit in server.hits:
        msgs = hit.body["messages"]
        assert [m["role"] for m in msgs] == ["system", "user"]
        assert msgs[0]["content"] == TAG_PROMPTS["actions"]
        assert hit.body["model"] == "tagger-1" and hit.body["max_tokens"] == 64 and hit.body["temperature"] == 0
        assert hit.auth == "Bearer sk-tagtest-0123456789"
    assert summary["api_requests"] == 3 and summary["prompt_tokens"] > 0


def test_openai_tagging_without_key_is_a_usage_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    stage = build_tag_stage("objects", backend="openai")
    with pytest.raises(UsageError, match="OPENAI_API_KEY"):
        stage.setup()


def test_custom_key_needs_a_prompt_file(tmp_path):
    with pytest.raises(UsageError, match="--prompt-file"):
        build_tag_stage("colors", backend="fake")
    pf = tmp_path / "colors.txt"
    pf.write_text("List the colours named in the caption as [a, b].\n")
    stage = build_tag_stage("colors", backend="fake", prompt_file=pf)
    assert stage.columns == ["colors"] and stage.suffix == "colors"
    assert stage.prompt.messages("red car") == [
        {"role": "system", "content": "List the colours named in the caption as [a, b]."},
        {"role": "user", "content": "red car"},
    ]
    pf.write_text("Colours in this caption, as [a, b]: {}")
    stage = build_tag_stage("colors", backend="fake", prompt_file=pf)
    assert stage.prompt.messages("red car") == [
        {"role": "user", "content": "Colours in this caption, as [a, b]: red car"}
    ]
    for bad in ("status", "path", "_rid", "two words"):
        with pytest.raises(UsageError):
            build_tag_stage(bad, backend="fake", prompt_file=pf)
