"""Structured captions (--caption-format json --schema NAME|FILE): the built-in schemas and their prompts,
decoding constrained to the schema (vidcap's engine and generate() with a tiny model, response_format over
the API), every row checked against the schema, invalid ones kept with a `parse` error and healed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from clirun import vidcap
from fake_openai_server import FakeOpenAIServer
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from media import make_video

from vidcap.schemas import BUILTIN, check_schema, load_schema, parse_json, repair_truncated

pytest.importorskip("llguidance")

SMALL = {
    "type": "object",
    "properties": {
        "subject": {"type": "string", "maxLength": 24, "description": "Who or what the clip shows."},
        "action": {"type": "string", "maxLength": 24, "description": "What happens."},
        "shot": {"enum": ["close-up", "wide"], "description": "The shot size."},
    },
    "required": ["subject", "action", "shot"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("structured")
    names = [f"clip{i}" for i in range(5)]
    for i, name in enumerate(names):
        make_video(root / f"{name}.mp4", n_frames=12, size=(96 + 16 * i, 72))
    pd.DataFrame({"path": [f"{n}.mp4" for n in names]}).to_csv(root / "m.csv", index=False)
    (root / "small.json").write_text(json.dumps(SMALL))
    return root


def _valid(text: str, schema: dict) -> bool:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return False
    return Draft202012Validator(schema).is_valid(value)


# -- the schemas --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_schemas_are_in_the_supported_subset_and_their_prompt_lists_every_field(name):
    schema = load_schema(name)
    check_schema(schema.schema, name)  # raises for a keyword constrained decoding does not support
    prompt = schema.prompt()
    for field in schema.fields():
        assert f'"{field}"' in prompt
    assert "JSON object only" in prompt
    if name == "cosmos":
        assert all(f'"{f}"' in prompt for f in ("camera_motion", "framing", "angle"))


def test_a_valid_caption_is_kept_compact_with_keys_in_schema_order():
    schema = load_schema("cosmos")
    value = {
        "cinematography": {"angle": "low angle", "framing": "long shot", "camera_motion": "static"},
        "dense": "d",
        "descriptive": "e",
        "short": "s",
    }
    text, why = schema.check("```json\n" + json.dumps(value, indent=2) + "\n```")
    assert why == ""
    assert text == (
        '{"short":"s","descriptive":"e","dense":"d",'
        '"cinematography":{"camera_motion":"static","framing":"long shot","angle":"low angle"}}'
    )
    text, why = schema.check(json.dumps({**value, "cinematography": {**value["cinematography"], "angle": "sideways"}}))
    assert "cinematography/angle" in why and "sideways" in why


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "neither a built-in schema"),
        ("{not json", "not a readable JSON file"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"type": "string"}', "must describe a JSON object"),
        ('{"type": "object", "properties": {"a": {"type": 5}}}', "not a valid JSON Schema"),
        ('{"type": "object", "properties": {"a": {"type": "string"}}, "not": {"required": ["a"]}}', "'not'"),
        ('{"type": "object", "properties": {"a": {"type": "array", "uniqueItems": true}}}', "'uniqueItems'"),
    ],
)
def test_a_schema_file_that_cannot_be_used_is_one_sentence(clips, tmp_path, content, message):
    path = tmp_path / "s.json"
    if content is not None:
        path.write_text(content)
    proc = vidcap(
        "caption", clips / "m.csv", "--model", "fake", "--workers", "0", "-q", "-o", tmp_path / "o.csv",
        "--caption-format", "json", "--schema", path, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--caption-format", "json"], "needs --schema"),
        (["--schema", "hunyuan"], "goes with --caption-format json"),
        (["--caption-format", "yaml", "--schema", "hunyuan"], "text or json"),
        (["--caption-format", "json", "--schema", "hunyuan", "--variants", "short,dense"], "do not go together"),
    ],
)
def test_format_flags_that_do_not_go_together_are_one_sentence(clips, tmp_path, args, message):
    proc = vidcap(
        "caption", clips / "m.csv", "--model", "fake", "--workers", "0", "-q", "-o", tmp_path / "o.csv", *args,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_invalid_json_is_recorded_not_dropped(clips, tmp_path):
    """The fake backend answers prose: every row is kept, text and all, as a `parse` error."""
    vidcap(
        "caption", clips / "m.csv", "--model", "fake", "--workers", "0", "-q", "-o", tmp_path / "o.csv",
        "--caption-format", "json", "--schema", "hunyuan", check=False,
    )  # fmt: skip
    rows = pd.read_csv(tmp_path / "o.csv", keep_default_na=False)
    assert len(rows) == 5 and (rows["status"] == "failed").all()
    assert rows["error"].str.startswith("parse: the caption holds no JSON object (schema hunyuan)").all()
    assert rows["text"].str.startswith("A clip seen in").all() and (rows["prompt"] == "json-hunyuan").all()


# -- the engine and generate() with a tiny model ---------------------------------------------------------
def test_engine_decoding_constrained_to_the_schema_gives_only_valid_rows(clips, tiny_model, tmp_path):
    model = str(tiny_model("qwen2-vl"))
    common = ["--model", model, "--device", "cpu", "--workers", "0", "-q", "--caption-format", "json"]
    common += ["--schema", str(clips / "small.json"), "--max-new-tokens", "300"]
    proc = vidcap("caption", clips / "m.csv", "-o", tmp_path / "c.csv", *common)
    assert "fast path engaged" in proc.stderr
    rows = pd.read_csv(tmp_path / "c.csv", keep_default_na=False)
    assert len(rows) == 5 and (rows["status"] == "ok").all(), rows["error"].tolist()
    assert all(_valid(t, SMALL) for t in rows["text"])
    assert all(list(json.loads(t)) == ["subject", "action", "shot"] for t in rows["text"])
    assert (rows["finish_reason"] == "stop").all()  # the grammar ends each caption (EOS), not the limit
    free = vidcap("caption", clips / "m.csv", "-o", tmp_path / "u.csv", *common, "--no-constrain", check=False)
    assert free.returncode in (0, 1)
    rows = pd.read_csv(tmp_path / "u.csv", keep_default_na=False)
    assert len(rows) == 5  # a random model's text is not JSON: recorded, not dropped
    bad = rows[rows["status"] == "failed"]
    assert len(bad) >= 4 and bad["error"].str.startswith("parse: ").all() and (bad["text"] != "").all()


def test_cut_off_rows_are_healed_under_the_grammar_with_more_room(clips, tiny_model, tmp_path):
    """Captions the token limit cut off are `parse` rows; --heal captions them again through generate() with the
    grammar's LogitsProcessor and a longer limit, and they come back valid."""
    vidcap(
        "caption", clips / "m.csv", "-o", tmp_path / "h.csv", "--model", str(tiny_model("qwen2-vl")), "--device",
        "cpu", "--workers", "0", "-q", "--caption-format", "json", "--schema", clips / "small.json",
        "--max-new-tokens", "50", "--heal", "2", "--limit", "3",
    )  # fmt: skip
    rows = pd.read_csv(tmp_path / "h.csv", keep_default_na=False)
    assert (rows["status"] == "ok").all() and (rows["heal"] == "healed").all(), rows["error"].tolist()
    assert all(_valid(t, SMALL) for t in rows["text"])
    for cell in rows["heal_attempts"]:
        first, *later = json.loads(cell)
        assert "cut off" in first["error"] and later[-1]["decoding"]["max_new_tokens"] > 50


def test_the_mask_unpacks_as_llguidance_packs_it():
    """Bit j of word i allows token 32 * i + j; tokens past the vocabulary's last word are cut."""
    import numpy as np
    import torch

    from vidcap.engine.grammar import apply_bitmask, shifts

    rng = np.random.default_rng(1)
    for vocab in (31, 32, 100, 513):
        allowed = rng.random((3, vocab)) < 0.3
        padded = np.zeros((3, -(-vocab // 32) * 32), dtype=bool)
        padded[:, :vocab] = allowed
        words = (padded.reshape(3, -1, 32).astype(np.int64) << np.arange(32)).sum(-1)
        words = torch.tensor(words.astype(np.uint32).view(np.int32))
        out = apply_bitmask(torch.zeros(3, vocab), words, shifts("cpu"))
        assert torch.equal(out == 0, torch.tensor(allowed)) and bool(torch.isinf(out[~torch.tensor(allowed)]).all())


def test_generate_path_is_constrained_too(clips, tiny_model):
    """The plain generate() path (--baseline, heal attempts) decodes under the grammar's LogitsProcessor."""
    import numpy as np

    from vidcap.backends.base import CaptionOptions, CaptionRequest
    from vidcap.backends.registry import make_backend, resolve_model

    opts = CaptionOptions(
        caption_format="json", schema=str(clips / "small.json"), engine=False, max_new_tokens=300, device="cpu"
    )
    backend = make_backend(resolve_model(str(tiny_model("qwen2-vl"))), opts)
    backend.setup("cpu")
    rng = np.random.default_rng(0)
    reqs = [CaptionRequest(rng.integers(0, 255, (4, 72, 96, 3), dtype=np.uint8), f"JSON please {i}") for i in range(3)]
    results = backend.caption(reqs)
    assert backend.engine() is None
    assert all(r.error == "" and _valid(r.text, SMALL) for r in results), [r.text for r in results]


# -- the API backend ----------------------------------------------------------------------------------
def _api(clips: Path, out: Path, answers: list[str], *extra) -> tuple[pd.DataFrame, FakeOpenAIServer]:
    """`vidcap caption` over the API, one request at a time in manifest order; the fake server gives the
    n-th request the n-th of `answers` (vidcap's prompt carries no tag)."""
    env = {**os.environ, "FAKE_KEY": "sk-test", "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    with FakeOpenAIServer() as server:
        server.script[""] = answers
        cmd = [sys.executable, "-m", "vidcap", "caption", str(clips / "m.csv"), "-o", str(out), "--backend"]
        cmd += ["openai", "--base-url", server.base_url, "--model", "x", "--api-key-env", "FAKE_KEY", "-q"]
        cmd += ["--workers", "0", "--max-retries", "0", "--concurrency", "1", "--batch-size", "1"]
        cmd += ["--caption-format", "json", "--schema", "hunyuan", "--limit", "3", *extra]
        subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    return pd.read_csv(out, keep_default_na=False), server


def test_api_asks_for_the_schema_and_heals_invalid_answers(clips, tmp_path):
    schema = load_schema("hunyuan")
    answers = ["ok", "json-cut", "json-bad", "ok"]
    plain, server = _api(clips, tmp_path / "a.csv", answers)
    assert server.problems() == [] and len(server.hits) == 3
    fmt = server.hits[0].body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "hunyuan"
    assert fmt["json_schema"]["schema"] == schema.schema and fmt["json_schema"]["strict"] is False  # maxLength
    assert "Fields, in this order:" in server.hits[0].prompt
    good, cut, bad = (plain.iloc[i] for i in range(3))
    assert good["status"] == "ok" and _valid(good["text"], schema.schema) and good["flags"] == ""
    assert good["text"].startswith('{"short":') and "\n" not in good["text"]  # compact, keys in schema order
    for row in (cut, bad):
        assert row["status"] == "failed" and row["error"].startswith("parse: ") and row["text"]
    assert "cut off" in cut["error"] and "truncated" in cut["flags"]
    healed, server = _api(clips, tmp_path / "h.csv", answers, "--heal", "2")
    assert len(server.hits) == 4  # the cut-off answer repaired without asking again, the prose one asked again
    assert (healed["status"] == "ok").all(), healed["error"].tolist()
    good, cut, bad = (healed.iloc[i] for i in range(3))
    assert cut["heal"] == "healed" and "json_repaired" in cut["flags"] and "truncated" not in cut["flags"]
    assert json.loads(cut["heal_attempts"])[1]["decoding"] == {"repair": "closed the JSON"}
    assert _valid(cut["text"], schema.schema)
    assert bad["heal"] == "healed" and len(json.loads(bad["heal_attempts"])) == 2 and _valid(bad["text"], schema.schema)
    assert good["heal"] == "" and good["text"] == plain.iloc[0]["text"]


# -- parsing and repair on random input -----------------------------------------------------------------
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-1000, 1000), st.text(max_size=12))
_json = st.recursive(
    _scalars,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.dictionaries(st.text(max_size=6), kids, max_size=4)),
    max_leaves=12,
)


def _within(part, whole) -> bool:
    """`part` is `whole` with trailing members left off (at any depth): no value invented or cut."""
    if isinstance(part, dict) and isinstance(whole, dict):
        return all(k in whole and _within(v, whole[k]) for k, v in part.items())
    if isinstance(part, list) and isinstance(whole, list):
        return len(part) <= len(whole) and all(_within(a, b) for a, b in zip(part, whole, strict=False))
    return part == whole


@settings(max_examples=300, deadline=None)
@given(
    value=st.dictionaries(st.text(max_size=6), _json, min_size=1, max_size=5), cut=st.floats(0, 1), indent=st.booleans()
)
def test_repair_closes_only_at_whole_values(value, cut, indent):
    text = json.dumps(value, indent=1 if indent else None, ensure_ascii=bool(cut > 0.5))
    assert repair_truncated(text) is None  # nothing was cut off
    head = text[: int(len(text) * cut)]
    fixed = repair_truncated(head)
    if fixed is not None:
        assert _within(json.loads(fixed), value), (head, fixed)
    if head.rstrip().endswith(("}", "]")) is False and head.strip() and len(head) == len(text) - 1:
        assert fixed is not None  # only the closing brace missing (a number or literal before it is dropped)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=80) | _json.map(json.dumps))
def test_checking_any_text_gives_valid_compact_json_or_one_sentence(text):
    schema = load_schema("hunyuan")
    out, why = schema.check(text)
    if why:
        assert out == text and "\n" not in why and why.startswith("the ")
    else:
        assert _valid(out, schema.schema) and out == json.dumps(
            json.loads(out), ensure_ascii=False, separators=(",", ":")
        )
    value, why = parse_json(text)
    assert (value is None) == bool(why)


def test_a_split_step_runs_the_cpu_work_between_the_layers_and_the_pick():
    """With a grammar the step is two halves (two CUDA graphs on a GPU): the layers are launched, the CPU
    fills and uploads this step's mask rows while they run, then the masked pick reads them."""
    from vidcap.engine.lm import DecoderLM

    order: list[str] = []
    lm = object.__new__(DecoderLM)
    lm.split, lm.graphs, lm.heads, lm.replays, lm.eager_steps = True, {}, {}, 0, 0
    lm.tok = list(range(4))
    lm._body = lambda b: order.append("layers")  # type: ignore[method-assign]
    lm._head = lambda b: order.append("pick")  # type: ignore[method-assign]
    assert lm.step(2, lambda: order.append("mask rows")) == [0, 1]
    assert order == ["layers", "mask rows", "pick"] and lm.eager_steps == 1
