"""Built-in model presets: frames, positions and prompts follow the seed where it defines them."""

from .preset import Preset, register_preset

register_preset(
    Preset(
        "fake", "fake", None, 4, "segments", "video", "deterministic fake captioner for tests and dry runs (no model)"
    )
)

_PLLAVA = dict(pooling_shape=(4, 12, 12), lora_alpha=4.0, resolution=336)
for size in ("7b", "13b", "34b"):
    register_preset(
        Preset(
            f"pllava-{size}",
            "hf-pllava",
            f"ermu2001/pllava-{size}",
            4,
            "segments",
            "pllava",
            f"PLLaVA {size.upper()} (seed v1.2 captioner), 4 frames, 4-12-12 pooling, LoRA alpha 4",
            dict(_PLLAVA),
        )
    )

register_preset(
    Preset(
        "llava-1.6-mistral-7b",
        "hf-llava",
        "llava-hf/llava-v1.6-mistral-7b-hf",
        3,
        "points",
        "video",
        "LLaVA-1.6 (seed v1.0/1.1 captioner), frames at 10/50/90 % as images",
    )
)
# Vicuna and Yi-34B have 4,096 positions: three anyres frames (~4.9k tokens at 336 px, ~5.8k at 720p) do not
# fit, so these take the seed's LLaVA default instead: the middle frame with `video-f1-detail-3ex` (~2-3.5k).
for name, hf in (
    ("llava-1.6-vicuna-7b", "llava-hf/llava-v1.6-vicuna-7b-hf"),
    ("llava-1.6-vicuna-13b", "llava-hf/llava-v1.6-vicuna-13b-hf"),
    ("llava-1.6-34b", "llava-hf/llava-v1.6-34b-hf"),
):
    register_preset(
        Preset(
            name,
            "hf-llava",
            hf,
            1,
            "points",
            "video-f1-detail-3ex",
            "LLaVA-1.6 (seed v1.0/1.1 captioner), the middle frame (4,096 positions)",
        )
    )

register_preset(
    Preset(
        "qwen2.5-vl-7b",
        "hf-vlm",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        8,
        "uniform",
        "video",
        "Qwen2.5-VL-7B-Instruct, native video input",
        dict(max_pixels=448 * 252),
    )
)
register_preset(
    Preset(
        "qwen2.5-vl-3b",
        "hf-vlm",
        "Qwen/Qwen2.5-VL-3B-Instruct",
        8,
        "uniform",
        "video",
        "Qwen2.5-VL-3B-Instruct, native video input",
        dict(max_pixels=448 * 252),
    )
)
# Frames by time (the model card's 2 fps, at most `max_frames`); the per-frame and per-clip pixel budgets are
# the processor's own (16-pixel patches merged 2x2: 768 tokens a frame at most) unless --max-pixels /
# --total-pixels say otherwise. Sizes of the dense Qwen3-VL family.
for size in ("2b", "4b", "8b", "32b"):
    register_preset(
        Preset(
            f"qwen3-vl-{size}",
            "hf-vlm",
            f"Qwen/Qwen3-VL-{size.upper()}-Instruct",
            8,
            "uniform",
            "video",
            f"Qwen3-VL-{size.upper()}-Instruct, native video at 2 fps, frame times in the prompt",
            dict(fps=2.0, max_frames=768),
        )
    )
# InternVL3 in the transformers layout (the `-hf` checkpoints): the model card's 8 frames over the clip
# (segment centres), each one 448-pixel tile of 256 tokens.
for size in ("1b", "2b", "8b", "14b", "38b"):
    register_preset(
        Preset(
            f"internvl3-{size}",
            "hf-vlm",
            f"OpenGVLab/InternVL3-{size.upper()}-hf",
            8,
            "segments",
            "video",
            f"InternVL3-{size.upper()} (transformers layout), 8 frames as 448-pixel tiles",
        )
    )
register_preset(
    Preset(
        "llava-onevision-7b",
        "hf-vlm",
        "llava-hf/llava-onevision-qwen2-7b-ov-hf",
        8,
        "uniform",
        "video",
        "LLaVA-OneVision Qwen2 7B, native video input",
    )
)

DEFAULT_MODEL = "qwen2.5-vl-7b"

# config.json model_type -> the preset whose frames, positions, prompt and budgets a model dir or Hub id of
# that architecture gets (fine-tunes such as SkyCaptioner-V1 or Tarsier2-Recap keep their base's setup)
FAMILY_PRESETS = {
    "qwen2_5_vl": "qwen2.5-vl-7b",
    "qwen2_vl": "qwen2.5-vl-7b",
    "qwen3_vl": "qwen3-vl-8b",
    "internvl": "internvl3-8b",
    "llava_onevision": "llava-onevision-7b",
    "llava_next": "llava-1.6-mistral-7b",
}
# Captioners published as fine-tunes of a preset's architecture: resolved without their config.json
# (offline), loaded from their own weights through that preset's backend.
FINE_TUNES = {
    "Skywork/SkyCaptioner-V1": "qwen2.5-vl-7b",  # SkyReels' captioner (Qwen2.5-VL-7B)
    "omni-research/Tarsier2-Recap-7b": "qwen2.5-vl-7b",  # Tarsier2 (Qwen2-VL-7B), DREAM-1K
    "omni-research/Tarsier2-7b-0115": "qwen2.5-vl-7b",
}

# The seed's GPT-4V recipe (3 frames at 10/50/90 %, the video-f3-detail-3ex prompt) over any
# OpenAI-compatible API; `--backend openai --model <id>` inherits it for other model ids.
register_preset(
    Preset(
        "gpt-4o",
        "openai",
        "gpt-4o",
        3,
        "points",
        "video-f3-detail-3ex",
        "OpenAI GPT-4o, the seed's GPT-4V recipe: 3 frames at 10/50/90 %",
    )
)
register_preset(
    Preset(
        "gpt-4o-mini",
        "openai",
        "gpt-4o-mini",
        3,
        "points",
        "video-f3-detail-3ex",
        "OpenAI GPT-4o-mini, the seed's GPT-4V recipe",
    )
)
