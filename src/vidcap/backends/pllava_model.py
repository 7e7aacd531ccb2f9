"""PLLaVA on transformers' LLaVA classes: CLIP -> 2-layer MLP -> 3-D adaptive average pooling over
(frames, h, w) -> the LM, with the published checkpoint's PEFT LoRA merged into q/v once at load time.

Checkpoint layout (ermu2001/pllava-*): `vision_tower.*`, `multi_modal_projector.linear_{1,2}.*`,
`language_model.base_model.model.{model.*,lm_head.weight}` with `…{q,v}_proj.base_layer.weight` and
`…{q,v}_proj.lora_{A,B}.default.weight`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import UsageError

# What transformers 4.37 wrote nothing for, because it equalled its LlavaConfig default (CLIP-L/14-336).
CLIP_L336: dict[str, Any] = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    projection_dim=768,
)
_LORA = re.compile(r"^(?P<mod>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$")


def read_pllava_config(path: Path):
    """(LlavaConfig, raw config dict) from a PLLaVA config.json."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    raw = json.loads((path / "config.json").read_text())
    vision = dict(CLIP_L336, **{k: v for k, v in (raw.get("vision_config") or {}).items() if k != "model_type"})
    text = {k: v for k, v in (raw.get("text_config") or {}).items() if k not in ("model_type", "torch_dtype")}
    text.setdefault("vocab_size", raw.get("vocab_size", 32000))
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision),
        text_config=LlamaConfig(**text),
        image_token_index=raw.get("image_token_index", 32000),
        projector_hidden_act=raw.get("projector_hidden_act", "gelu"),
        vision_feature_layer=raw.get("vision_feature_layer", -2),
        vision_feature_select_strategy=raw.get("vision_feature_select_strategy", "default"),
    )
    return config, raw


def build_model(config, pooling_shape, num_frames: int):
    """A LlavaForConditionalGeneration whose projector pools; parameters on the meta device."""
    from accelerate import init_empty_weights
    from torch import nn
    from transformers import LlavaForConditionalGeneration
    from transformers.activations import ACT2FN
    from transformers.models.llava.modeling_llava import LlavaModel

    class PllavaProjector(nn.Module):
        def __init__(self):
            super().__init__()
            d_v, d = config.vision_config.hidden_size, config.text_config.hidden_size
            self.linear_1 = nn.Linear(d_v, d)
            self.act = ACT2FN[config.projector_hidden_act]
            self.linear_2 = nn.Linear(d, d)

        def forward(self, feats):  # (videos*frames, h*w, d_v) -> (videos, T'*H'*W', d): MLP first, then pool
            x = self.linear_2(self.act(self.linear_1(feats)))
            side = int(round(x.shape[1] ** 0.5))
            x = x.view(-1, num_frames, side, side, x.shape[-1]).permute(0, 4, 1, 2, 3)
            x = nn.functional.adaptive_avg_pool3d(x, tuple(pooling_shape))
            return x.flatten(2).transpose(1, 2)

    class PllavaModel(LlavaModel):
        def get_image_features(
            self,
            pixel_values,
            vision_feature_layer=None,
            vision_feature_select_strategy=None,
            image_sizes=None,
            **kwargs,
        ):
            out = self.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
            feats = out.hidden_states[self.config.vision_feature_layer][:, 1:]  # drop CLS
            out.pooler_output = list(self.multi_modal_projector(feats))
            return out

    with init_empty_weights(include_buffers=False):  # buffers (positions, rotary tables) stay real
        model = LlavaForConditionalGeneration(config)
        model.model = PllavaModel(config)
        model.model.multi_modal_projector = PllavaProjector()
    return model


def checkpoint_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / n for n in names]
    single = path / "model.safetensors"
    shards = sorted(path.glob("model-0*.safetensors"))
    if single.exists() and not shards:
        return [single]
    if shards:
        return shards
    raise UsageError(f"PLLaVA checkpoint {path} has no model.safetensors or model-0*.safetensors files.")


def target_key(key: str) -> str | None:
    """Checkpoint key -> our state-dict key (None: not a weight we know)."""
    for src, dst in (
        ("vision_tower.", "model.vision_tower."),
        ("multi_modal_projector.", "model.multi_modal_projector."),
        ("language_model.base_model.model.model.", "model.language_model."),
        ("language_model.base_model.model.lm_head.", "lm_head."),
        ("language_model.model.", "model.language_model."),  # an already merged, PEFT-free save
        ("language_model.lm_head.", "lm_head."),
    ):
        if key.startswith(src):
            return dst + key[len(src) :].replace(".base_layer.", ".")
    return None


# Tensor parallelism for PLLaVA's language model (Megatron layout): q/k/v and gate/up split by output rows,
# o/down by input columns, an all-reduce after o and down. PLLaVA is not a transformers architecture, so
# from_pretrained's tensor-parallel plan cannot load its PEFT checkpoint; slicing at read time instead keeps
# each rank at 1/K of the LM weights in host and GPU memory, and the LoRA is merged into each slice.
_COLWISE = re.compile(r"^model\.language_model\.layers\.\d+\.(self_attn\.[qkv]_proj|mlp\.(gate|up)_proj)\.weight$")
_ROWWISE = re.compile(r"^model\.language_model\.layers\.\d+\.(self_attn\.o_proj|mlp\.down_proj)\.weight$")


def _shard_dim(key: str) -> int | None:
    return 0 if _COLWISE.match(key) else 1 if _ROWWISE.match(key) else None


def _read(f, key: str, dim: int | None, tp: tuple[int, int] | None):
    """The whole tensor, or this rank's contiguous 1/K of it along `dim` (read as a slice, not in full)."""
    if tp is None or dim is None:
        return f.get_tensor(key)
    rank, size = tp
    sl = f.get_slice(key)
    n = sl.get_shape()[dim] // size
    return sl[rank * n : (rank + 1) * n] if dim == 0 else sl[:, rank * n : (rank + 1) * n]


def load_state(files: list[Path], device: str, dtype, tp: tuple[int, int] | None = None) -> tuple[dict, dict]:
    """(weights, lora) read onto `device`; lora maps a module key to {"A": tensor, "B": tensor} in fp32.
    tp=(rank, size): this rank's slices of the sharded LM weights (a LoRA B is sliced like its weight)."""
    from safetensors import safe_open

    lora: dict[str, dict[str, Any]]
    weights, lora, unknown = {}, {}, []
    for file in files:
        with safe_open(str(file), framework="pt", device=str(device)) as f:
            for key in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                if key.endswith("rotary_emb.inv_freq"):
                    continue  # a buffer old transformers saved; recomputed from the config
                m = _LORA.match(key)
                if m:
                    mod = target_key(m.group("mod"))
                    if mod is None:
                        unknown.append(key)
                        continue
                    dim = _shard_dim(mod + ".weight")
                    part = m.group("ab")  # B (out x r) splits with a colwise weight, A (r x in) with a rowwise one
                    split = dim if (part == "B" and dim == 0) or (part == "A" and dim == 1) else None
                    lora.setdefault(mod, {})[part] = _read(f, key, split, tp).float()
                    continue
                tgt = target_key(key)
                if tgt is None:
                    unknown.append(key)
                    continue
                weights[tgt] = _read(f, key, _shard_dim(tgt), tp).to(dtype)
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise UsageError(f"PLLaVA checkpoint has an unexpected weight '{unknown[0]}'{more}; is it a PLLaVA checkpoint?")
    return weights, lora


def merge_lora(weights: dict, lora: dict, alpha: float) -> int:
    """W += (alpha / r) * B @ A for every adapted linear; returns how many were merged."""
    for mod, ab in lora.items():
        if set(ab) != {"A", "B"}:
            missing = "lora_B" if "A" in ab else "lora_A"
            raise UsageError(f"PLLaVA checkpoint has no {missing} weight for {mod}; the LoRA adapter is incomplete.")
        key = mod + ".weight"
        if key not in weights:
            raise UsageError(f"PLLaVA checkpoint has a LoRA adapter for {mod} but no base weight for it.")
        a, b = ab["A"], ab["B"]
        base = weights[key]
        weights[key] = (base.float() + (alpha / a.shape[0]) * (b @ a)).to(base.dtype)
    return len(lora)


def load_pllava(
    path: Path, device: str, dtype, pooling_shape, num_frames: int, lora_alpha: float, tp: tuple[int, int] | None = None
):
    """The merged model on `device`, plus the raw config dict; every key must match (strict).
    tp=(rank, size): this rank's share of a tensor-parallel group (torch.distributed initialized)."""
    config, raw = read_pllava_config(path)
    if tp is not None:
        shard_config(config.text_config, tp[1])
    model = build_model(config, pooling_shape, num_frames)
    weights, lora = load_state(checkpoint_files(path), "cpu" if tp else device, dtype, tp)
    merge_lora(weights, lora, lora_alpha)
    expected = set(model.state_dict())
    weights = _align_vision_prefix(weights, expected)
    missing = sorted(expected - set(weights))
    extra = sorted(set(weights) - expected)
    if missing:
        raise UsageError(
            f"PLLaVA checkpoint {path} lacks the weight '{missing[0]}'"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
            + "."
        )
    if extra:
        raise UsageError(
            f"PLLaVA checkpoint {path} has a weight '{extra[0]}' the model does not use"
            + (f" and {len(extra) - 1} more" if len(extra) > 1 else "")
            + "."
        )
    model.load_state_dict(weights, strict=True, assign=True)
    model = model.to(device).eval()
    if tp is not None:
        add_all_reduce(model, tp[1])
    return model, raw


def shard_config(text_config, size: int) -> None:
    """The LM config of one rank's share: 1/K of the heads and of the MLP width, the same head size (so the
    attention, rotary tables and a static KV cache all take the local shapes)."""
    from .hf_common import check_tp_split

    heads = text_config.num_attention_heads
    kv = getattr(text_config, "num_key_value_heads", None) or heads
    check_tp_split(
        size,
        "this PLLaVA model",
        {"attention heads": heads, "key-value heads": kv, "MLP width": text_config.intermediate_size},
    )
    text_config.head_dim = getattr(text_config, "head_dim", None) or text_config.hidden_size // heads
    text_config.num_attention_heads = heads // size
    text_config.num_key_value_heads = kv // size
    text_config.intermediate_size //= size


def add_all_reduce(model, size: int) -> None:
    """Sum the partial outputs of the row-split layers (o_proj, down_proj) over the group. Eager only: a
    tensor-parallel model runs without the compiled static-cache decode (HFCaptionBackend.static_cache)."""
    import torch.distributed as dist

    def hook(module, args, output):
        dist.all_reduce(output)
        return output

    for layer in model.model.language_model.layers:
        layer.self_attn.o_proj.register_forward_hook(hook)
        layer.mlp.down_proj.register_forward_hook(hook)
    model.vidcap_tp = size


def random_pllava(path: Path, device: str, dtype, pooling_shape, num_frames: int):
    """The same architecture with random weights, built on the device (benchmarks: speed only)."""
    import torch
    from transformers import GenerationConfig

    config, _ = read_pllava_config(path)
    model = build_model(config, pooling_shape, num_frames)
    buffers = {n: b.clone() for n, b in model.named_buffers()}  # rotary tables are real: keep them
    model = model.to(dtype).to_empty(device=device)  # allocate in the target dtype: no fp32 copy
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
        for name, b in model.named_buffers():
            if name in buffers:
                b.copy_(buffers[name])
    if (path / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model.eval()


def _align_vision_prefix(weights: dict, expected: set) -> dict:
    """Checkpoints say `vision_tower.vision_model.*`; newer transformers name CLIP's weights without it."""
    ours = "model.vision_tower.vision_model."
    if any(k.startswith(ours) for k in expected):
        return weights
    return {("model.vision_tower." + k[len(ours) :] if k.startswith(ours) else k): v for k, v in weights.items()}
