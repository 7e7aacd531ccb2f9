"""`vidcap dev tiny-model`: every family writes a loadable checkpoint in its real layout, deterministically."""

import json

import pytest

pytest.importorskip("transformers")

from vidcap.dev.tiny import FAMILIES, build_tiny_model  # noqa: E402
from vidcap.errors import UsageError  # noqa: E402


@pytest.mark.parametrize("family", ["qwen2-vl", "qwen2.5-vl", "llava-next", "llava-onevision", "qwen3-vl", "internvl3"])
def test_vlm_families_load_through_auto_classes(tiny_model, family):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path = tiny_model(family)
    proc = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, use_safetensors=True)
    assert model.config.text_config.hidden_size <= 64
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    text = proc.apply_chat_template(
        [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], add_generation_prompt=True, tokenize=False
    )
    assert "hi" in text
    assert json.loads((path / "vidcap_tiny.json").read_text())["family"] == family


def test_llama_chat_model(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model("llama")
    tok = AutoTokenizer.from_pretrained(path)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "tag this"}], add_generation_prompt=True, tokenize=False
    )
    assert text.startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\ntag this<|eot_id|>")
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True)
    assert tok.convert_tokens_to_ids("<|eot_id|>") in model.generation_config.eos_token_id


def test_pllava_checkpoint_has_the_published_layout(tiny_model):
    from safetensors import safe_open

    path = tiny_model("pllava")
    config = json.loads((path / "config.json").read_text())
    assert config["model_type"] == "llava" and config["pooling_shape"] == [16, 12, 12]
    assert config["frame_shape"] == [24, 24] and "num_frames" in config
    index = json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]
    assert sorted(set(index.values())) == ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    keys = set(index)
    lm = "language_model.base_model.model.model.layers.0.self_attn."
    for proj in ("q_proj", "v_proj"):
        assert {
            f"{lm}{proj}.base_layer.weight",
            f"{lm}{proj}.lora_A.default.weight",
            f"{lm}{proj}.lora_B.default.weight",
        } <= keys
    assert f"{lm}k_proj.weight" in keys and "language_model.base_model.model.lm_head.weight" in keys
    assert "vision_tower.vision_model.embeddings.patch_embedding.weight" in keys
    assert "multi_modal_projector.linear_1.weight" in keys
    with safe_open(str(path / index[f"{lm}q_proj.lora_A.default.weight"]), "pt") as f:
        a = f.get_tensor(f"{lm}q_proj.lora_A.default.weight")
        b = f.get_tensor(f"{lm}q_proj.lora_B.default.weight")
    assert a.shape[0] == b.shape[1] == 4 and b.abs().sum() > 0  # a trained (non-zero) adapter
    assert (path / "preprocessor_config.json").exists() and (path / "tokenizer.json").exists()


def test_builds_are_deterministic(tmp_path, tiny_model):
    first = tiny_model("llama")
    again = build_tiny_model(tmp_path / "again", "llama")
    assert (first / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()
    assert (first / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()


def test_unknown_family_lists_the_known_ones(tmp_path):
    with pytest.raises(UsageError, match="pllava"):
        build_tiny_model(tmp_path / "x", "nope")
    assert {"qwen2-vl", "llava-next", "pllava", "llama"} <= set(FAMILIES)
