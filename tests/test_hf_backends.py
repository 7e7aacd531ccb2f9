"""In-process transformers caption backends on tiny models and real decoded clips: PLLaVA pooling and LoRA
merge, batched == one-by-one, prompts reaching the model, token accounting, OOM splitting, missing weights."""

import json
import shutil
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from media import make_video  # noqa: E402

from vidcap.backends.base import CaptionOptions, CaptionRequest  # noqa: E402
from vidcap.backends.registry import make_backend, resolve_model  # noqa: E402
from vidcap.errors import UsageError  # noqa: E402
from vidcap.frames import sample_frames  # noqa: E402
from vidcap.prompts.caption import PROMPTS, get_prompt  # noqa: E402

FAMILY_OF = {"hf-pllava": "pllava", "hf-llava": "llava-next", "hf-vlm": "qwen2-vl"}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("clips")
    return [
        make_video(root / "a.mp4", 40, (160, 120)),
        make_video(root / "b.mkv", 30, (96, 128)),
        make_video(root / "c.mp4", 24, (200, 112)),
    ]


def requests_for(clips, k, positions, prompt="Describe this video.", image=False):
    reqs = [CaptionRequest(sample_frames(c, k, positions).frames, prompt) for c in clips]
    if image:
        reqs.append(CaptionRequest(reqs[0].frames[:1], prompt, is_image=True))
    return reqs


_backends: dict[tuple, Any] = {}


def backend_for(tiny_model, family, **opts):
    key = (family, tuple(sorted(opts.items())))
    if key not in _backends:
        preset = resolve_model(str(tiny_model(family)))
        backend = make_backend(preset, CaptionOptions(max_new_tokens=opts.pop("max_new_tokens", 8), **opts))
        backend.setup("cpu")
        _backends[key] = backend
    return _backends[key]


def test_presets_resolve_to_the_backends():
    from vidcap.backends.registry import backend_class

    assert resolve_model("pllava-13b").backend == "hf-pllava"
    assert backend_class("hf-pllava").__name__ == "PllavaBackend"
    assert backend_class("hf-llava").__name__ == "LlavaNextBackend"
    assert backend_class("hf-vlm").__name__ == "HFVLMBackend"


@pytest.mark.parametrize("family", ["pllava", "llava-next", "qwen2-vl", "llava-onevision"])
def test_batched_output_equals_one_by_one(tiny_model, clips, family):
    backend = backend_for(tiny_model, family)
    preset = backend.preset
    reqs = requests_for(clips, preset.num_frames, preset.positions, image=True)
    reqs[1].prompt = "A much longer prompt, so this row is padded differently from the others in the batch."
    batched = backend.caption(reqs)
    single = [backend.caption([r])[0] for r in reqs]
    assert [r.error for r in batched] == [""] * len(reqs)
    assert [r.text for r in batched] == [r.text for r in single]
    assert [r.prompt_tokens for r in batched] == [r.prompt_tokens for r in single]
    # the first generated token's logits agree too (left padding + attention mask, not just argmax luck)
    prep = backend.prepare(reqs)
    with torch.inference_mode():
        full = backend.model(**prep.inputs).logits[:, -1]
        for i, req in enumerate(reqs):
            one = backend.model(**backend.prepare([req]).inputs).logits[:, -1]
            assert torch.allclose(full[i], one[0], atol=1e-4), (family, i)


def test_pllava_pools_four_frames_to_576_tokens(tiny_model, clips):
    backend = backend_for(tiny_model, "pllava")
    assert backend.pooling_shape == (4, 12, 12) and backend.num_frames == 4
    prep = backend.prepare(requests_for(clips[:2], 4, "segments"))
    assert prep.inputs["pixel_values"].shape == (8, 3, 336, 336)  # CLIP 336 center crop, 4 frames x 2 videos
    image_id = backend.image_token_id
    assert (prep.inputs["input_ids"] == image_id).sum(dim=1).tolist() == [576, 576]
    with torch.inference_mode():
        feats = backend.model.model.get_image_features(prep.inputs["pixel_values"]).pooler_output
    assert len(feats) == 2 and tuple(feats[0].shape) == (576, backend.model.config.text_config.hidden_size)


def test_pllava_pooling_shape_option(tiny_model, clips):
    backend = backend_for(tiny_model, "pllava", pooling_shape=(2, 6, 6))
    prep = backend.prepare(requests_for(clips[:1], 4, "segments"))
    assert (prep.inputs["input_ids"] == backend.image_token_id).sum().item() == 72
    assert backend.caption(requests_for(clips[:1], 4, "segments"))[0].error == ""


def test_pllava_uses_the_seed_conversation(tiny_model):
    backend = backend_for(tiny_model, "pllava")
    system = PROMPTS["pllava"][1]
    ids = backend.token_ids(system)
    assert ids[0] == backend.tokenizer.bos_token_id
    text = backend.tokenizer.decode([i for i in ids if i != backend.image_token_id], skip_special_tokens=True)
    assert text == system + " USER: Describe the video in details. ASSISTANT:"


def test_pllava_lora_merge_matches_unmerged_peft_model(tiny_model, clips):
    from peft import LoraConfig, get_peft_model

    from vidcap.backends import pllava_model as pm

    backend = backend_for(tiny_model, "pllava")
    path = backend.model_dir
    weights, lora = pm.load_state(pm.checkpoint_files(path), "cpu", torch.float32)
    config, _ = pm.read_pllava_config(path)
    ref = pm.build_model(config, backend.pooling_shape, backend.num_frames)
    ref.load_state_dict(pm._align_vision_prefix(weights, set(ref.state_dict())), strict=True, assign=True)
    ref.eval()
    prep = backend.prepare(requests_for(clips[:2], 4, "segments"))
    with torch.inference_mode():
        base_logits = ref(**prep.inputs).logits
        merged_logits = backend.model(**prep.inputs).logits
    r = next(iter(lora.values()))["A"].shape[0]
    ref.model.language_model = get_peft_model(
        ref.model.language_model,
        LoraConfig(r=r, lora_alpha=backend.lora_alpha, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for mod, ab in lora.items():
            name = mod.replace("model.language_model.", "model.language_model.base_model.model.")
            params[f"{name}.lora_A.default.weight"].copy_(ab["A"])
            params[f"{name}.lora_B.default.weight"].copy_(ab["B"])
    ref.eval()
    with torch.inference_mode():
        peft_logits = ref(**prep.inputs).logits
    assert len(lora) == 2 * config.text_config.num_hidden_layers
    assert torch.allclose(merged_logits, peft_logits, atol=1e-4)
    assert not torch.allclose(merged_logits, base_logits, atol=1e-2)  # the adapter changes the model


def _copy_with(src, dst, drop=None, add=None):
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    shard = dst / "model-00002-of-00002.safetensors"
    tensors = load_file(str(shard))
    if drop:
        del tensors[drop]
        del index["weight_map"][drop]
    if add:
        tensors[add] = torch.zeros(2)
        index["weight_map"][add] = shard.name
    save_file(tensors, str(shard))
    (dst / "model.safetensors.index.json").write_text(json.dumps(index))
    return dst


@pytest.mark.parametrize(
    "drop,add,named",
    [
        (
            "language_model.base_model.model.model.layers.1.mlp.up_proj.weight",
            None,
            "model.language_model.layers.1.mlp.up_proj.weight",
        ),
        ("language_model.base_model.model.model.layers.0.self_attn.v_proj.lora_B.default.weight", None, "lora_B"),
        (None, "language_model.base_model.model.model.layers.0.self_attn.extra.weight", "extra.weight"),
    ],
)
def test_pllava_strict_keys(tiny_model, tmp_path, drop, add, named):
    broken = _copy_with(tiny_model("pllava"), tmp_path / "broken", drop, add)
    backend = make_backend(resolve_model(str(broken)), CaptionOptions())
    with pytest.raises(UsageError, match=named.replace(".", r"\.")):
        backend.setup("cpu")


def test_llava_frames_go_in_as_images_in_the_models_own_template(tiny_model, clips):
    backend = backend_for(tiny_model, "llava-next")
    prompt = get_prompt("video-f3-detail-3ex").text
    text, images, videos = backend.render(requests_for(clips[:1], 3, "points", prompt)[0])
    assert len(images) == 3 and videos == []
    assert text == "[INST] " + "<image>\n" * 3 + prompt + " [/INST]"  # not ChatML (the seed's bug)


@pytest.mark.parametrize("family", ["qwen2-vl", "llava-next", "pllava"])
def test_prompt_selection_reaches_the_model(tiny_model, clips, family):
    backend = backend_for(tiny_model, family)
    tok = backend.tokenizer
    for name in ("video", "video-f3-detail-3ex"):
        prompt = get_prompt(name).text
        req = requests_for(clips[:1], backend.preset.num_frames, backend.preset.positions, prompt)[0]
        ids = backend.prepare([req]).inputs["input_ids"][0].tolist()
        assert prompt in tok.decode(ids, skip_special_tokens=True), (family, name)


def test_qwen_video_is_native_and_pixel_budget_applies(tiny_model, clips):
    small = backend_for(tiny_model, "qwen2-vl", max_pixels=28 * 28 * 4)
    big = backend_for(tiny_model, "qwen2-vl", max_pixels=28 * 28 * 16)
    req = requests_for(clips[:1], 4, "uniform")[0]
    assert small.native_video and small.render(req)[2]  # sent as a video, not as images
    n_small = small.prepare([req]).inputs["video_grid_thw"].prod().item()
    n_big = big.prepare([req]).inputs["video_grid_thw"].prod().item()
    assert n_small < n_big


def test_token_counts_and_length_finish(tiny_model, clips):
    backend = backend_for(tiny_model, "qwen2-vl", max_new_tokens=3)
    reqs = requests_for(clips[:2], 4, "uniform")
    prep = backend.prepare(reqs)
    results = backend.caption(reqs)
    assert [r.prompt_tokens for r in results] == prep.inputs["attention_mask"].sum(dim=1).tolist()
    for r in results:  # random weights rarely hit EOS within 3 tokens; either way the counts must agree
        assert (r.finish_reason, r.completion_tokens) in (("length", 3), ("stop", 1), ("stop", 2), ("stop", 3))


def test_oom_splits_the_batch_then_fails_one_row(tiny_model, clips, monkeypatch):
    """The plain generate() path (--baseline, sampling, engine fallback); the engine's own: test_engine.py."""
    backend = backend_for(tiny_model, "qwen2-vl")
    monkeypatch.setattr(type(backend), "engine", lambda self: None)
    reqs = requests_for(clips, 4, "uniform")
    real = type(backend).generate
    sizes = []

    def flaky(self, prepared):
        n = prepared.inputs["input_ids"].shape[0]
        sizes.append(n)
        if n > 1 or prepared.prompt_tokens[0] == max_tokens:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, prepared)

    max_tokens = max(backend.prepare([r]).prompt_tokens[0] for r in reqs)
    monkeypatch.setattr(type(backend), "generate", flaky)
    results = backend.caption(reqs)
    assert sizes[0] == 3 and 1 in sizes
    errors = [r.error for r in results]
    assert sum(e.startswith("oom: ") for e in errors) == 1 and errors.count("") == 2


def test_seed_cleaning_for_pllava():
    from vidcap.backends.hf_pllava import parse_pooling, seed_clean

    assert seed_clean(" A cat.\nIt sleeps.</s>") == "A cat. It sleeps.</s>".removesuffix("</s>")
    assert seed_clean("x ASSISTANT: A dog\n") == "A dog"
    assert parse_pooling("4-12-12") == (4, 12, 12)
    with pytest.raises(UsageError):
        parse_pooling("4-12")


def test_missing_weights_is_one_sentence(monkeypatch, tmp_path):
    from vidcap.backends.hf_common import local_model_dir

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(UsageError) as exc:
        make_backend(resolve_model("Qwen/Qwen2.5-VL-7B-Instruct"), CaptionOptions()).setup("cpu")
    msg = str(exc.value)
    assert "hf download Qwen/Qwen2.5-VL-7B-Instruct" in msg and "--model" in msg
    assert "\n" not in msg
    with pytest.raises(UsageError, match="does not exist"):
        local_model_dir(str(tmp_path / "no-such-dir"))
    (tmp_path / "bin_only").mkdir()
    (tmp_path / "bin_only" / "config.json").write_text("{}")
    (tmp_path / "bin_only" / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(UsageError, match="safetensors"):
        local_model_dir(str(tmp_path / "bin_only"))


def test_images_use_one_frame(tiny_model, clips):
    backend = backend_for(tiny_model, "llava-next")
    frames = np.stack([sample_frames(clips[0], 1, "points").frames[0]] * 3)
    _, images, _ = backend.render(CaptionRequest(frames, "An image.", is_image=True))
    assert len(images) == 1
