"""Tiny random-weight models of each supported family, written offline in their real checkpoint layouts.

`vidcap dev tiny-model DIR --family F` calls `build_tiny_model`. The output text of these models is
meaningless; they exist so the whole pipeline (loading, preprocessing, batching, generation) runs in
tests and smoke runs without downloading weights. Same seed -> same weights.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .tokenizer import CHATML_INTERNVL, CHATML_ONEVISION, CHATML_QWEN_VL, LLAMA3, MISTRAL_LLAVA, build_tokenizer

SEED = 0
_LM: dict[str, Any] = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=2,
    max_position_embeddings=4096,
)
# CLIP-L/14-336 geometry with tiny width: 24x24 patches per frame, so PLLaVA's 4-12-12 pooling is exact.
_CLIP: dict[str, Any] = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=336,
    patch_size=14,
    projection_dim=32,
)
_OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
_OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]


def _ids(tok, *names):
    return [tok.convert_tokens_to_ids(n) for n in names]


def _save(model, out: Path, tok, eos, pad):
    model.generation_config.eos_token_id = eos
    model.generation_config.pad_token_id = pad
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.do_sample = False
    from ..backends.hf_common import quiet_transformers

    quiet_transformers()
    model.save_pretrained(out)


def _qwen_vl(out: Path, v25: bool = False):
    import torch
    import transformers as tf

    special = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    tok = build_tokenizer(special, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    pad, _, eos, vs, ve, img, vid = _ids(tok, *special)
    text = dict(
        _LM,
        vocab_size=len(tok),
        rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[4, 6, 6]),
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    vision: dict[str, Any] = dict(depth=1, num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
    cfg_cls: Any
    model_cls: Any
    proc_cls: Any
    if v25:
        vision.update(
            hidden_size=32,
            intermediate_size=64,
            out_hidden_size=_LM["hidden_size"],
            window_size=56,
            fullatt_block_indexes=[0],
            tokens_per_second=2,
        )
        cfg_cls, model_cls, proc_cls = (
            tf.Qwen2_5_VLConfig,
            tf.Qwen2_5_VLForConditionalGeneration,
            tf.Qwen2_5_VLProcessor,
        )
    else:
        vision.update(embed_dim=32, hidden_size=_LM["hidden_size"], mlp_ratio=2)
        cfg_cls, model_cls, proc_cls = tf.Qwen2VLConfig, tf.Qwen2VLForConditionalGeneration, tf.Qwen2VLProcessor
    config = cfg_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=img,
        video_token_id=vid,
        vision_start_token_id=vs,
        vision_end_token_id=ve,
    )
    torch.manual_seed(SEED)
    model = model_cls(config).eval()
    # small pixel budget: a frame becomes at most 112x112 (16 merged tokens per 2 frames)
    pix: dict[str, Any] = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 16)
    proc = proc_cls(
        image_processor=tf.Qwen2VLImageProcessor(**pix),
        tokenizer=tok,
        video_processor=tf.Qwen2VLVideoProcessor(**pix),
        chat_template=CHATML_QWEN_VL,
    )
    _save(model, out, tok, [eos, pad], pad)
    proc.save_pretrained(out)


def _qwen3_vl(out: Path):
    """Qwen3-VL: 16-pixel patches, DeepStack features from two vision layers, interleaved multimodal rotary,
    q/k norms in the language model; frame times go into the prompt as `<t seconds>`."""
    import torch
    import transformers as tf

    special = [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    tok = build_tokenizer(special, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    pad, _, eos, vs, ve, img, vid = _ids(tok, *special)
    text = dict(
        _LM,
        head_dim=32,
        vocab_size=len(tok),
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
        rope_parameters=dict(rope_type="default", rope_theta=10000.0, mrope_section=[6, 5, 5], mrope_interleaved=True),
    )
    vision = dict(
        depth=3,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        patch_size=16,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=_LM["hidden_size"],
        num_position_embeddings=64,
        deepstack_visual_indexes=[0, 1],
    )
    config = tf.Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=img,
        video_token_id=vid,
        vision_start_token_id=vs,
        vision_end_token_id=ve,
    )
    torch.manual_seed(SEED)
    model = tf.Qwen3VLForConditionalGeneration(config).eval()
    # small pixel budget: at most 128x128 per frame (16 merged tokens per 2 frames)
    image_proc = tf.Qwen2VLImageProcessor(
        patch_size=16,
        merge_size=2,
        min_pixels=32 * 32 * 4,
        max_pixels=32 * 32 * 16,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    video_proc = tf.Qwen3VLVideoProcessor(
        size={"shortest_edge": 32 * 32 * 4, "longest_edge": 32 * 32 * 16 * 32},
        patch_size=16,
        merge_size=2,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    proc = tf.Qwen3VLProcessor(
        image_processor=image_proc, tokenizer=tok, video_processor=video_proc, chat_template=CHATML_QWEN_VL
    )
    _save(model, out, tok, [eos, pad], pad)
    proc.save_pretrained(out)


def _internvl(out: Path):
    """InternVL3 in its transformers (`-hf`) layout: InternViT with pixel shuffle to a Qwen2 language model;
    each frame is one 448-pixel tile in the real model (56 here, 4 tokens)."""
    import torch
    import transformers as tf

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    extra = {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }
    tok = build_tokenizer(special, eos_token="<|im_end|>", pad_token="<|endoftext|>", extra_special_tokens=extra)
    pad, _, eos, _, _, ctx, _ = _ids(tok, *special)
    size = 56
    vision = tf.InternVLVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=[size, size],
        patch_size=[14, 14],
    )
    text = tf.Qwen2Config(**_LM, vocab_size=len(tok), bos_token_id=pad, eos_token_id=eos, pad_token_id=pad)
    n_tokens = (size // 14) ** 2 // 4
    config = tf.InternVLConfig(
        vision_config=vision, text_config=text, image_token_id=ctx, image_seq_length=n_tokens, tie_word_embeddings=False
    )  # tied random embeddings repeat the last token
    torch.manual_seed(SEED)
    model = tf.InternVLForConditionalGeneration(config).eval()
    common: dict[str, Any] = dict(image_mean=_OPENAI_MEAN, image_std=_OPENAI_STD)
    image_proc = tf.GotOcr2ImageProcessor(size={"height": size, "width": size}, crop_to_patches=False, **common)
    video_proc = tf.InternVLVideoProcessor(size={"height": size, "width": size}, **common)
    proc = tf.InternVLProcessor(
        image_processor=image_proc,
        tokenizer=tok,
        video_processor=video_proc,
        image_seq_length=n_tokens,
        chat_template=CHATML_INTERNVL,
    )
    _save(model, out, tok, [eos, pad], pad)
    proc.save_pretrained(out)


def _llava_next(out: Path):
    import torch
    import transformers as tf

    special = ["<unk>", "<s>", "</s>", "<image>", "<pad>"]
    tok = build_tokenizer(
        special, add_bos="<s>", bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    unk, bos, eos, img, pad = _ids(tok, *special)
    size = 56  # 4x4 patches per view keeps anyres tiling real but cheap
    pinpoints = [[size, size * 2], [size * 2, size], [size * 2, size * 2]]
    vision = tf.CLIPVisionConfig(**dict(_CLIP, image_size=size))
    text = tf.MistralConfig(
        **_LM, vocab_size=len(tok), bos_token_id=bos, eos_token_id=eos, pad_token_id=pad, sliding_window=None
    )
    config = tf.LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=img,
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=(size // 14) ** 2,
    )
    torch.manual_seed(SEED)
    model = tf.LlavaNextForConditionalGeneration(config).eval()
    image_proc = tf.LlavaNextImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_grid_pinpoints=pinpoints,
        image_mean=_OPENAI_MEAN,
        image_std=_OPENAI_STD,
    )
    proc = tf.LlavaNextProcessor(
        image_processor=image_proc,
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=MISTRAL_LLAVA,
    )
    _save(model, out, tok, eos, pad)
    proc.save_pretrained(out)


def _llava_onevision(out: Path):
    import torch
    import transformers as tf

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
    tok = build_tokenizer(special, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    pad, _, eos, img, vid = _ids(tok, *special)
    size = 56
    pinpoints = [[size, size], [size, size * 2], [size * 2, size], [size * 2, size * 2]]
    vision = tf.SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=size,
        patch_size=14,
        vision_use_head=False,
    )
    text = tf.Qwen2Config(**_LM, vocab_size=len(tok), bos_token_id=pad, eos_token_id=eos, pad_token_id=pad)
    config = tf.LlavaOnevisionConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=img,
        video_token_index=vid,
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
    )
    torch.manual_seed(SEED)
    model = tf.LlavaOnevisionForConditionalGeneration(config).eval()
    common: dict[str, Any] = dict(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    image_proc = tf.LlavaOnevisionImageProcessor(
        size={"height": size, "width": size}, image_grid_pinpoints=pinpoints, **common
    )
    video_proc = tf.LlavaOnevisionVideoProcessor(size={"height": size, "width": size}, **common)
    n_tokens = (size // 14) ** 2
    proc = tf.LlavaOnevisionProcessor(
        image_processor=image_proc,
        tokenizer=tok,
        video_processor=video_proc,
        num_image_tokens=n_tokens,
        vision_feature_select_strategy="full",
        chat_template=CHATML_ONEVISION,
    )
    _save(model, out, tok, [eos, pad], pad)
    proc.save_pretrained(out)


def _llama(out: Path):
    import torch
    import transformers as tf

    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
    tok = build_tokenizer(special, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|end_of_text|>")
    tok.chat_template = LLAMA3
    bos, end, _, _, eot = _ids(tok, *special)
    config = tf.LlamaConfig(**_LM, vocab_size=len(tok), bos_token_id=bos, eos_token_id=[eot, end], pad_token_id=end)
    torch.manual_seed(SEED)
    model = tf.LlamaForCausalLM(config).eval()
    _save(model, out, tok, [eot, end], end)
    tok.save_pretrained(out)


def _pllava(out: Path):
    from .tiny_pllava import write_pllava_checkpoint

    write_pllava_checkpoint(out, _LM, _CLIP, SEED, _OPENAI_MEAN, _OPENAI_STD)


FAMILIES = {
    "qwen2-vl": (_qwen_vl, "Qwen2-VL (native video input)"),
    "qwen2.5-vl": (lambda out: _qwen_vl(out, v25=True), "Qwen2.5-VL (native video input)"),
    "qwen3-vl": (_qwen3_vl, "Qwen3-VL (native video input, frame times in the prompt, DeepStack)"),
    "internvl3": (_internvl, "InternVL3 in the transformers layout (-hf checkpoints; frames as 448-pixel tiles)"),
    "llava-next": (_llava_next, "LLaVA-1.6 / LLaVA-NeXT (frames as images, anyres)"),
    "llava-onevision": (_llava_onevision, "LLaVA-OneVision (native video input)"),
    "pllava": (_pllava, "PLLaVA published checkpoint layout (PEFT LoRA keys, pooled video tokens)"),
    "llama": (_llama, "Llama-3-style chat LM (tagging)"),
}


def build_tiny_model(out_dir, family: str) -> Path:
    """Write a tiny random-weight model of `family` into out_dir (created); returns the directory."""
    if family not in FAMILIES:
        raise UsageError(f"unknown tiny-model family '{family}'; known families: {', '.join(FAMILIES)}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    FAMILIES[family][0](out)
    info = {"family": family, "note": "tiny random-weight model from `vidcap dev tiny-model`; output is meaningless"}
    (out / "vidcap_tiny.json").write_text(json.dumps(info, indent=2) + "\n")
    umask = os.umask(0o022)
    os.umask(umask)
    mode = 0o666 & ~umask  # safetensors writes 0600; a model folder is meant to be shared like any file
    for path in out.rglob("*"):
        if path.is_file():
            path.chmod(mode)
    return out
