"""The transformers chat backend and the tag stage, end to end on a tiny Llama built offline.

The tiny model is rigged into a bigram machine (attention and MLP outputs zeroed, one-hot embeddings), so
its greedy answer depends only on the last prompt token: after the assistant header it writes
`[ dog , person ]` and stops. Any other last token (no generation prompt, right padding, a template not
applied) makes it write something else, so these tests fail when loading, templating or padding is wrong.
"""

import json

import pandas as pd
import pytest

from vidcap.errors import UsageError
from vidcap.manifest import read_table

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from vidcap.backends.base import CaptionOptions  # noqa: E402
from vidcap.backends.llm import ChatRequest, HFChatBackend, _system_role_ok, make_chat_backend  # noqa: E402
from vidcap.prompts.tags import TAG_PROMPTS, tag_prompt  # noqa: E402
from vidcap.runner import RunOptions, run_stage  # noqa: E402
from vidcap.stages.tag import TagStage  # noqa: E402

LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] | trim }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
SPECIAL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "[UNK]"]
WORDS = [
    "[",
    "]",
    ",",
    "dog",
    "person",
    "system",
    "user",
    "assistant",
    "a",
    "the",
    "is",
    "runs",
    "in",
    "park",
    "red",
    "car",
    "on",
    "road",
    "cat",
    "sleeps",
    ".",
]
CHAIN = ["<|end_header_id|>", "[", "dog", ",", "person", "]", "<|eot_id|>"]


def build_rigged_llama(folder, padding_side="left"):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        unk_token="[UNK]",
        padding_side=padding_side,
    )
    tok.add_special_tokens({"additional_special_tokens": SPECIAL[1:5]})
    tok.chat_template = LLAMA3
    size = 64
    assert len(vocab) <= size
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=size,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=vocab["<|begin_of_text|>"],
        eos_token_id=[vocab["<|end_of_text|>"], vocab["<|eot_id|>"]],
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        model.model.embed_tokens.weight.zero_()
        model.model.embed_tokens.weight[:, : len(vocab)] = torch.eye(len(vocab))
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        model.lm_head.weight.zero_()
        for cur, nxt in zip(CHAIN, CHAIN[1:], strict=False):
            model.lm_head.weight[vocab[nxt], vocab[cur]] = 10.0
    model.generation_config.do_sample = True  # like Llama-3-Instruct's shipped config; greedy must override it
    model.generation_config.temperature = 0.6
    model.generation_config.top_p = 0.9
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return build_rigged_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="module")
def backend(llama_dir):
    b = HFChatBackend(str(llama_dir), CaptionOptions(max_new_tokens=12, device="cpu"))
    b.setup("cpu")
    yield b
    b.teardown()


def _captions():
    return ["a dog runs in the park .", "the red car", "a cat sleeps on the road in the park , the dog runs ."]


def test_chat_template_and_left_padded_batch(backend):
    prompt = tag_prompt("objects")
    rendered = backend.render(prompt.messages("a dog runs"))
    assert rendered.startswith("<|begin_of_text|><|start_header_id|>system<|end_header_id|>")
    assert TAG_PROMPTS["objects"].strip() in rendered
    assert rendered.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    assert backend.tokenizer.padding_side == "left"
    results = backend.chat([ChatRequest(prompt.messages(c)) for c in _captions()])
    assert [r.text for r in results] == ["[ dog , person ]"] * 3
    assert all(r.finish_reason == "stop" and r.completion_tokens == 6 and not r.error for r in results)
    assert len({r.prompt_tokens for r in results}) == 3  # different lengths, so padding really happened


def test_right_padding_in_the_saved_tokenizer_is_overridden(tmp_path):
    folder = build_rigged_llama(tmp_path / "m", padding_side="right")
    b = HFChatBackend(str(folder), CaptionOptions(max_new_tokens=8, device="cpu"))
    b.setup("cpu")
    results = b.chat([ChatRequest(tag_prompt("actions").messages(c)) for c in _captions()])
    assert [r.text for r in results] == ["[ dog , person ]"] * 3


def test_token_limit_is_reported(llama_dir):
    b = HFChatBackend(str(llama_dir), CaptionOptions(max_new_tokens=3, device="cpu"))
    b.setup("cpu")
    (res,) = b.chat([ChatRequest(tag_prompt("objects").messages("a dog"))])
    assert res.finish_reason == "length" and res.text == "[ dog ,"


def test_missing_weights_and_bad_paths_are_one_sentence(tmp_path, llama_dir):
    empty = tmp_path / "noweights"
    empty.mkdir()
    (empty / "config.json").write_text((llama_dir / "config.json").read_text())
    with pytest.raises(UsageError, match="safetensors"):
        HFChatBackend(str(empty), CaptionOptions(device="cpu")).setup("cpu")
    with pytest.raises(UsageError, match="does not exist"):  # one sentence naming the missing folder
        HFChatBackend(str(tmp_path / "nope" / "model"), CaptionOptions(device="cpu")).setup("cpu")
    with pytest.raises(UsageError, match="dtype"):
        HFChatBackend(str(llama_dir), CaptionOptions(device="cpu", dtype="int3")).setup("cpu")


def test_template_without_system_role_gets_it_merged(llama_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama_dir)
    tok.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" + LLAMA3
    )
    assert not _system_role_ok(tok)
    b = HFChatBackend(str(llama_dir))
    b.tokenizer, b._merge_system = tok, True
    text = b.render(tag_prompt("objects").messages("a dog runs"))
    assert "system<|end_header_id|>" not in text
    assert "user<|end_header_id|>\n\nYou are a AI assistant" in text and "a dog runs<|eot_id|>" in text


def _manifest(tmp_path, ext):
    df = pd.DataFrame(
        {
            "path": ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4"],
            "text": [_captions()[0], "", _captions()[1], "   ", _captions()[2]],
            "fps": [24, 24, 30, 30, 25],
        }
    )
    path = tmp_path / f"meta{ext}"
    df.to_csv(path, index=False) if ext == ".csv" else df.to_parquet(path, index=False)
    return path


@pytest.mark.parametrize("ext", [".csv", ".parquet"])
def test_tag_stage_end_to_end(tmp_path, llama_dir, ext):
    manifest = _manifest(tmp_path, ext)
    out = tmp_path / f"meta_objects{ext}"
    b = make_chat_backend("hf", str(llama_dir), CaptionOptions(max_new_tokens=12, device="cpu"))
    calls = []
    real_chat = b.chat
    b.chat = lambda reqs: calls.append(len(reqs)) or real_chat(reqs)
    stage = TagStage("objects", b, batch_size=2)
    summary = run_stage(stage, manifest, out, RunOptions(workers=0, progress=False, device="cpu", batch_wait=5.0))
    assert sum(calls) == 3 and max(calls) == 2  # the two empty captions never reached the model
    df = read_table(out)
    assert list(df.columns[:3]) == ["path", "text", "fps"] and {"objects", "status", "error"} <= set(df.columns)
    assert list(df["status"]) == ["ok", "failed", "ok", "failed", "ok"]
    assert df["error"].fillna("").str.startswith("empty_text").tolist() == [False, True, False, True, False]
    cells = df["objects"].tolist()
    if ext == ".csv":
        assert cells[0] == '["dog", "person"]'
        cells = [json.loads(c) if isinstance(c, str) else None for c in cells]
    else:
        import pyarrow.parquet as pq

        assert str(pq.read_schema(out).field("objects").type) in ("list<element: string>", "list<item: string>")
        cells = [list(c) if c is not None else None for c in cells]
    assert cells == [["dog", "person"], None, ["dog", "person"], None, ["dog", "person"]]
    assert summary["ok"] == 3 and summary["failed"] == {"empty_text": 2}
    assert summary["completion_tokens"] == 18


def test_changed_caption_is_tagged_again(tmp_path):
    """The row id covers the caption: editing a caption makes the row new, an unchanged one is skipped."""
    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": ["a.mp4", "b.mp4"], "text": ["a shiny red car", "a cat sleeps"]}).to_csv(
        manifest, index=False
    )
    out = tmp_path / "m_actions.csv"
    opts = RunOptions(workers=0, progress=False)
    run_stage(TagStage("actions", make_chat_backend("fake")), manifest, out, opts)
    pd.DataFrame({"path": ["a.mp4", "b.mp4"], "text": ["a shiny red car", "a dog barks loudly"]}).to_csv(
        manifest, index=False
    )
    b = make_chat_backend("fake")
    seen = []
    real_chat = b.chat
    b.chat = lambda reqs: seen.extend(r.messages[-1]["content"] for r in reqs) or real_chat(reqs)
    run_stage(TagStage("actions", b), manifest, out, opts)
    assert seen == ["a dog barks loudly"]
    df = read_table(out)
    assert [json.loads(c) for c in df["actions"]] == [["shiny"], ["barks", "loudly"]]


def test_shared_tiny_llama_runs_through_the_stage(tmp_path):
    """`vidcap dev tiny-model --family llama` (random weights): every row ends ok with a list or as a parse error."""
    from vidcap.dev.tiny import build_tiny_model
    from vidcap.stages.tag import build_tag_stage

    model_dir = build_tiny_model(tmp_path / "llama", "llama")
    manifest = _manifest(tmp_path, ".csv")
    stage = build_tag_stage(
        "objects",
        backend="hf",
        model=str(model_dir),
        batch_size=2,
        options=CaptionOptions(max_new_tokens=8, device="cpu"),
    )
    summary = run_stage(stage, manifest, tmp_path / "out.csv", RunOptions(workers=0, progress=False, device="cpu"))
    df = read_table(tmp_path / "out.csv")
    assert len(df) == 5 and set(df["status"]) <= {"ok", "failed"}
    codes = [e.split(":")[0] if isinstance(e, str) and e else "" for e in df["error"]]
    assert codes[1] == codes[3] == "empty_text"
    for status, code, cell in zip(df["status"], codes, df["objects"], strict=False):
        if status == "ok":
            assert isinstance(json.loads(cell), list)
        else:
            assert code in ("empty_text", "parse")
    assert summary["prompt_tokens"] > 0 and 3 <= summary["completion_tokens"] <= 24
