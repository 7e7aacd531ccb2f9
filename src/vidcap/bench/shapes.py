"""Real-size model skeletons for the bench: config, tokenizer and processor, no weights.

The backends build such a model from its config with random weights on the device (throughput does not
depend on weight values), through the same loading code users run. Sizes follow the published configs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..backends.hf_common import RANDOM_MARKER
from ..backends.pllava_model import CLIP_L336

VICUNA_13B: dict[str, Any] = dict(
    hidden_size=5120,
    intermediate_size=13824,
    num_hidden_layers=40,
    num_attention_heads=40,
    num_key_value_heads=40,
    max_position_embeddings=4096,
)
VICUNA_7B: dict[str, Any] = dict(
    hidden_size=4096,
    intermediate_size=11008,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=32,
    max_position_embeddings=4096,
)
MISTRAL_7B: dict[str, Any] = dict(
    hidden_size=4096,
    intermediate_size=14336,
    num_hidden_layers=32,
    num_attention_heads=32,
    num_key_value_heads=8,
    max_position_embeddings=32768,
)
QWEN25_7B_TEXT: dict[str, Any] = dict(
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    max_position_embeddings=32768,
)
QWEN25_VISION: dict[str, Any] = dict(
    depth=32,
    hidden_size=1280,
    intermediate_size=3420,
    num_heads=16,
    out_hidden_size=3584,
    patch_size=14,
    spatial_merge_size=2,
    temporal_patch_size=2,
    window_size=112,
    fullatt_block_indexes=[7, 15, 23, 31],
    tokens_per_second=2,
)
# Qwen3-VL-8B-Instruct and InternVL3-8B-hf as published (config.json)
QWEN3_VL_8B_TEXT: dict[str, Any] = dict(
    hidden_size=4096,
    intermediate_size=12288,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    max_position_embeddings=262144,
)
QWEN3_VL_VISION: dict[str, Any] = dict(
    depth=27,
    hidden_size=1152,
    intermediate_size=4304,
    num_heads=16,
    out_hidden_size=4096,
    patch_size=16,
    spatial_merge_size=2,
    temporal_patch_size=2,
    num_position_embeddings=2304,
    deepstack_visual_indexes=[8, 16, 24],
    hidden_act="gelu_pytorch_tanh",
)
INTERNVL3_8B_TEXT: dict[str, Any] = dict(
    hidden_size=3584,
    intermediate_size=18944,
    num_hidden_layers=28,
    num_attention_heads=28,
    num_key_value_heads=4,
    max_position_embeddings=32768,
)
INTERNVIT_300M: dict[str, Any] = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=[448, 448],
    patch_size=[14, 14],
    layer_scale_init_value=0.1,
)
PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
_MEAN = [0.48145466, 0.4578275, 0.40821073]
_STD = [0.26862954, 0.26130258, 0.27577711]


def _mark(out: Path, shape: str, params: dict) -> None:
    (out / RANDOM_MARKER).write_text(
        json.dumps(
            {"shape": shape, "params": params, "note": "random weights at real size: for benchmarks only"}, indent=2
        )
    )


def _pllava(out: Path, lm: dict, vocab: int = 32064) -> None:
    import transformers as tf

    from ..dev.tokenizer import build_tokenizer

    special = ["<unk>", "<s>", "</s>", "<image>"]
    tok = build_tokenizer(
        special, add_bos="<s>", bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )
    text_cfg = dict(
        lm,
        model_type="llama",
        architectures=["LlamaForCausalLM"],
        vocab_size=vocab,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    config = {
        "architectures": ["PllavaForConditionalGeneration"],
        "model_type": "llava",
        "image_token_index": tok.convert_tokens_to_ids("<image>"),
        "projector_hidden_act": "gelu",
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2,
        "vocab_size": vocab,
        "pooling_method": "avg",
        "pooling_shape": [16, 12, 12],
        "frame_shape": [24, 24],
        "num_frames": 16,
        "use_pooling": True,
        "pad_token_id": 0,
        "text_config": text_cfg,
        "vision_config": dict(CLIP_L336, model_type="clip_vision_model"),
        "torch_dtype": "bfloat16",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}))
    tok.save_pretrained(out)
    tf.CLIPImageProcessor(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        do_center_crop=True,
        image_mean=_MEAN,
        image_std=_STD,
    ).save_pretrained(out)


def _llava_next(out: Path, lm: dict, vocab: int = 32064) -> None:
    import transformers as tf

    from ..dev.tokenizer import MISTRAL_LLAVA, build_tokenizer

    special = ["<unk>", "<s>", "</s>", "<image>", "<pad>"]
    tok = build_tokenizer(
        special, add_bos="<s>", bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    img, pad = tok.convert_tokens_to_ids("<image>"), tok.convert_tokens_to_ids("<pad>")
    text = tf.MistralConfig(
        **lm, vocab_size=vocab, bos_token_id=1, eos_token_id=2, pad_token_id=pad, sliding_window=None
    )
    config = tf.LlavaNextConfig(
        vision_config=tf.CLIPVisionConfig(**CLIP_L336),
        text_config=text,
        image_token_index=img,
        image_grid_pinpoints=PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=576,
    )
    config.save_pretrained(out)
    image_proc = tf.LlavaNextImageProcessor(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        image_grid_pinpoints=PINPOINTS,
        image_mean=_MEAN,
        image_std=_STD,
    )
    tf.LlavaNextProcessor(
        image_processor=image_proc,
        tokenizer=tok,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=MISTRAL_LLAVA,
    ).save_pretrained(out)
    tf.GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=pad).save_pretrained(out)


def _qwen25_vl(out: Path, vocab: int = 152064) -> None:
    import transformers as tf

    from ..dev.tokenizer import CHATML_QWEN_VL, build_tokenizer

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
    pad, _, eos, vs, ve, img, vid = (tok.convert_tokens_to_ids(s) for s in special)
    text = dict(
        QWEN25_7B_TEXT,
        vocab_size=vocab,
        rms_norm_eps=1e-6,
        rope_parameters=dict(rope_type="default", rope_theta=1000000.0, mrope_section=[16, 24, 24]),
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    config = tf.Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(QWEN25_VISION),
        image_token_id=img,
        video_token_id=vid,
        vision_start_token_id=vs,
        vision_end_token_id=ve,
    )
    config.save_pretrained(out)
    tf.Qwen2_5_VLProcessor(
        image_processor=tf.Qwen2VLImageProcessor(),
        tokenizer=tok,
        video_processor=tf.Qwen2VLVideoProcessor(),
        chat_template=CHATML_QWEN_VL,
    ).save_pretrained(out)
    tf.GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad).save_pretrained(out)


def _qwen3_vl(out: Path, vocab: int = 151936) -> None:
    import transformers as tf

    from ..dev.tokenizer import CHATML_QWEN_VL, build_tokenizer

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
    pad, _, eos, vs, ve, img, vid = (tok.convert_tokens_to_ids(s) for s in special)
    text = dict(
        QWEN3_VL_8B_TEXT,
        vocab_size=vocab,
        rms_norm_eps=1e-6,
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
        rope_parameters=dict(
            rope_type="default", rope_theta=5000000.0, mrope_section=[24, 20, 20], mrope_interleaved=True
        ),
    )
    config = tf.Qwen3VLConfig(
        text_config=text,
        vision_config=dict(QWEN3_VL_VISION),
        image_token_id=img,
        video_token_id=vid,
        vision_start_token_id=vs,
        vision_end_token_id=ve,
    )
    config.save_pretrained(out)
    half: dict[str, Any] = dict(image_mean=[0.5] * 3, image_std=[0.5] * 3)
    image_proc = tf.Qwen2VLImageProcessor(patch_size=16, merge_size=2, min_pixels=65536, max_pixels=16777216, **half)
    video_proc = tf.Qwen3VLVideoProcessor(
        size={"shortest_edge": 4096, "longest_edge": 25165824}, patch_size=16, merge_size=2, **half
    )
    tf.Qwen3VLProcessor(
        image_processor=image_proc, tokenizer=tok, video_processor=video_proc, chat_template=CHATML_QWEN_VL
    ).save_pretrained(out)
    tf.GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad).save_pretrained(out)


def _internvl3(out: Path, vocab: int = 151674) -> None:
    import transformers as tf

    from ..dev.tokenizer import CHATML_INTERNVL, build_tokenizer

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>"]
    extra = {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }
    tok = build_tokenizer(special, eos_token="<|im_end|>", pad_token="<|endoftext|>", extra_special_tokens=extra)
    pad, _, eos, _, _, ctx, _ = (tok.convert_tokens_to_ids(s) for s in special)
    text = tf.Qwen2Config(
        **INTERNVL3_8B_TEXT,
        vocab_size=vocab,
        rms_norm_eps=1e-6,
        rope_theta=1000000.0,  # type: ignore[call-arg]  # accepted at runtime (legacy key -> rope_parameters); the signature lacks **kwargs
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    config = tf.InternVLConfig(
        vision_config=tf.InternVLVisionConfig(**INTERNVIT_300M),
        text_config=text,
        image_token_id=ctx,
        image_seq_length=256,
        tie_word_embeddings=False,
    )
    config.save_pretrained(out)
    mean: dict[str, Any] = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    image_proc = tf.GotOcr2ImageProcessor(size={"height": 448, "width": 448}, crop_to_patches=False, **mean)
    video_proc = tf.InternVLVideoProcessor(size={"height": 448, "width": 448}, **mean)
    tf.InternVLProcessor(
        image_processor=image_proc,
        tokenizer=tok,
        video_processor=video_proc,
        image_seq_length=256,
        chat_template=CHATML_INTERNVL,
    ).save_pretrained(out)
    tf.GenerationConfig(eos_token_id=[eos, pad], pad_token_id=pad).save_pretrained(out)


# bench shape -> (builder, the preset whose frames/positions/prompt the bench uses)
SHAPES = {
    "pllava-13b": (lambda out: _pllava(out, VICUNA_13B), "pllava-13b"),
    "pllava-7b": (lambda out: _pllava(out, VICUNA_7B), "pllava-7b"),
    "llava-1.6-mistral-7b": (lambda out: _llava_next(out, MISTRAL_7B), "llava-1.6-mistral-7b"),
    "qwen2.5-vl-7b": (_qwen25_vl, "qwen2.5-vl-7b"),
    "qwen3-vl-8b": (_qwen3_vl, "qwen3-vl-8b"),
    "internvl3-8b": (_internvl3, "internvl3-8b"),
}


def write_skeleton(out_dir, shape: str) -> Path:
    from ..errors import UsageError

    if shape not in SHAPES:
        raise UsageError(f"unknown bench shape '{shape}'; known: {', '.join(SHAPES)}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    SHAPES[shape][0](out)
    _mark(out, shape, {})
    return out
