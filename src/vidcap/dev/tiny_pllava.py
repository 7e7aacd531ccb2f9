"""A tiny checkpoint in the published PLLaVA layout (ermu2001/pllava-*): config.json with the pooling
fields, sharded safetensors whose language-model keys carry PEFT LoRA prefixes, tokenizer and CLIP
preprocessor files. Written by wrapping a tiny Llama with peft exactly as PLLaVA's training did."""

from __future__ import annotations

import json
from pathlib import Path

from .tokenizer import build_tokenizer

LORA_R = 4
LORA_TRAIN_ALPHA = 32  # PLLaVA trains with alpha 32; inference (the seed) uses 4


def _legacy_text_config(lm: dict, vocab: int) -> dict:
    """text_config as transformers 4.37 wrote it for Vicuna (legacy rope keys)."""
    return dict(
        lm,
        model_type="llama",
        architectures=["LlamaForCausalLM"],
        vocab_size=vocab,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        rope_scaling=None,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        torch_dtype="float16",
    )


def _vision_key(key: str) -> str:
    """The published layout names CLIP weights `vision_tower.vision_model.*` (transformers 4.37)."""
    return "vision_tower." + (key if key.startswith("vision_model.") else "vision_model." + key)


def _lora_lm(lm_cfg, seed: int):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(lm_cfg)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            task_type="CAUSAL_LM",
            r=LORA_R,
            lora_alpha=LORA_TRAIN_ALPHA,
            target_modules=["q_proj", "v_proj"],
            lora_dropout=0.0,
        ),
    )
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():  # peft starts B at zero; a trained adapter is not, and the merge must matter
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
    return peft_model


def write_pllava_checkpoint(out: Path, lm: dict, clip: dict, seed: int, mean, std) -> None:
    import torch
    import transformers as tf
    from safetensors.torch import save_file

    special = ["<unk>", "<s>", "</s>", "<image>"]
    tok = build_tokenizer(
        special, add_bos="<s>", bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )
    image_token = tok.convert_tokens_to_ids("<image>")
    text_cfg = _legacy_text_config(lm, len(tok))
    vision_cfg = dict(clip, model_type="clip_vision_model")

    torch.manual_seed(seed)
    vision = tf.CLIPVisionModel(tf.CLIPVisionConfig(**clip))
    projector = torch.nn.ModuleDict(
        {
            "linear_1": torch.nn.Linear(clip["hidden_size"], lm["hidden_size"]),
            "linear_2": torch.nn.Linear(lm["hidden_size"], lm["hidden_size"]),
        }
    )
    lora_lm = _lora_lm(tf.LlamaConfig(**{k: v for k, v in text_cfg.items() if k != "torch_dtype"}), seed)

    shards = {
        "model-00001-of-00002.safetensors": {
            **{_vision_key(k): v for k, v in vision.state_dict().items()},
            **{f"multi_modal_projector.{k}": v for k, v in projector.state_dict().items()},
        },
        "model-00002-of-00002.safetensors": {f"language_model.{k}": v for k, v in lora_lm.state_dict().items()},
    }
    weight_map, total = {}, 0
    for fname, tensors in shards.items():
        tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        for k, v in tensors.items():
            weight_map[k] = fname
            total += v.numel() * v.element_size()
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, indent=2)
    )

    config = {
        "architectures": ["PllavaForConditionalGeneration"],
        "model_type": "llava",
        "ignore_index": -100,
        "image_token_index": image_token,
        "projector_hidden_act": "gelu",
        "vision_feature_select_strategy": "default",
        "vision_feature_layer": -2,
        "vocab_size": len(tok),
        "pooling_method": "avg",
        "pooling_shape": [16, 12, 12],
        "frame_shape": [24, 24],
        "num_frames": 16,
        "use_pooling": True,
        "pad_token_id": 0,
        "use_image_newline_parameter": True,
        "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        "text_config": text_cfg,
        "vision_config": vision_cfg,
        "torch_dtype": "float32",
        "transformers_version": "4.37.1",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen_cfg = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "max_length": 4096}
    (out / "generation_config.json").write_text(json.dumps(gen_cfg, indent=2) + "\n")
    tok.save_pretrained(out)
    tf.CLIPImageProcessor(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        do_center_crop=True,
        image_mean=mean,
        image_std=std,
    ).save_pretrained(out)
