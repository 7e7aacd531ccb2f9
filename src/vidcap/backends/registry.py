"""The one registry of caption backends and model presets (no if/elif on model names elsewhere)."""

from __future__ import annotations

import importlib
import json
import os
from dataclasses import replace
from pathlib import Path

from ..errors import UsageError
from .preset import PRESETS, Preset, register_preset
from .presets import FAMILY_PRESETS, FINE_TUNES  # importing it registers the built-in presets

__all__ = ["BACKENDS", "PRESETS", "Preset", "make_backend", "register_backend", "register_preset", "resolve_model"]


# backend name -> "module:Class", imported only when used (keeps torch/openai out of the core).
BACKENDS: dict[str, str] = {
    "fake": "vidcap.backends.fake:FakeBackend",
    "hf-vlm": "vidcap.backends.hf_vlm:HFVLMBackend",
    "hf-llava": "vidcap.backends.hf_llava:LlavaNextBackend",
    "hf-pllava": "vidcap.backends.hf_pllava:PllavaBackend",
    "openai": "vidcap.backends.openai_api:OpenAIBackend",
}


def register_backend(name: str, target: str) -> None:
    BACKENDS[name] = target


def _load_entry_points() -> None:
    """Third-party backends/presets register through the `vidcap.backends` entry point group."""
    try:
        from importlib.metadata import entry_points

        for ep in entry_points(group="vidcap.backends"):
            ep.load()()
    except Exception:  # a broken plug-in must not break the built-ins
        pass


def backend_class(name: str):
    if name not in BACKENDS:
        raise UsageError(f"unknown backend '{name}'; known backends: {', '.join(sorted(BACKENDS))}.")
    module, _, attr = BACKENDS[name].partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        extra = "api" if name == "openai" else "hf"
        raise UsageError(
            f"backend '{name}' needs the package '{exc.name}'; install it with: pip install 'vidcap[{extra}]'."
        ) from None
    return getattr(mod, attr)


def _family_from_config(config: dict) -> str:
    model_type = str(config.get("model_type", ""))
    if "pooling_shape" in config or any(
        "Pllava" in a or "Magic" in a or "Plava" in a for a in config.get("architectures", []) or []
    ):
        return "hf-pllava"
    if model_type == "llava_next":
        return "hf-llava"
    return "hf-vlm"


def _family_preset(name: str, family: str, model_id: str, description: str, config: dict | None = None) -> Preset:
    """A preset for a model dir or id: frames, positions, prompt and params of the built-in preset of its
    architecture (config.json's model_type), else of the first preset of its backend."""
    base = PRESETS.get(FAMILY_PRESETS.get(str((config or {}).get("model_type", "")), ""))
    if base is None or base.backend != family:
        base = next((p for p in PRESETS.values() if p.backend == family and p.model_id), None)
    n, pos, prompt = (base.num_frames, base.positions, base.prompt) if base else (4, "uniform", None)
    n = int((config or {}).get("vidcap_num_frames", n))
    return Preset(name, family, model_id, n, pos, prompt, description, dict(base.params) if base else {})


def resolve_model(model: str, backend: str | None = None) -> Preset:
    """A preset name, a local model dir, or a Hugging Face id -> Preset."""
    _load_entry_points()
    if model in PRESETS:
        preset = PRESETS[model]
        return replace(preset, backend=backend) if backend and backend != preset.backend else preset
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.exists():
            raise UsageError(
                f"model directory {model} has no config.json; pass a saved Hugging Face model dir or a preset name (see `vidcap models`)."
            )
        config = json.loads(cfg_file.read_text())
        return _family_preset(
            str(path), backend or _family_from_config(config), str(path), "local model directory", config
        )
    if backend == "openai":
        return _family_preset(model, backend, model, "model id")
    if "/" in model:
        return _hub_preset(model, backend)
    raise UsageError(
        f"unknown model '{model}'; pick a preset ({', '.join(sorted(PRESETS))}), a local model directory or a Hugging Face id."
    )


# The seed's own ids hold the original repositories' weights, which transformers cannot load.
SEED_IDS = {
    "liuhaotian/llava-v1.6-mistral-7b": "llava-1.6-mistral-7b",
    "liuhaotian/llava-v1.6-vicuna-7b": "llava-1.6-vicuna-7b",
    "liuhaotian/llava-v1.6-vicuna-13b": "llava-1.6-vicuna-13b",
    "liuhaotian/llava-v1.6-34b": "llava-1.6-34b",
}


def _hub_preset(model: str, backend: str | None) -> Preset:
    """A Hugging Face id: the preset whose weights it names, else the family its config.json says."""
    if model in SEED_IDS:
        name = SEED_IDS[model]
        raise UsageError(
            f"'{model}' holds the original LLaVA repository's weights, which transformers cannot load; "
            f"use the preset {name} ({PRESETS[name].model_id}), the same model converted."
        )
    preset = next((p for p in PRESETS.values() if p.model_id == model), None)
    if preset is not None:
        return replace(preset, backend=backend) if backend and backend != preset.backend else preset
    if model in FINE_TUNES:
        base = PRESETS[FINE_TUNES[model]]
        return replace(
            base,
            name=model,
            model_id=model,
            backend=backend or base.backend,
            description=f"fine-tune run as {base.name}",
        )
    config = hub_config(model)
    family = backend or (_family_from_config(config) if config else "hf-vlm")
    return _family_preset(model, family, model, "model id", config)


def hub_config(model: str) -> dict | None:
    """The model's config.json from the Hub (the local cache first); None when it cannot be had (offline, a
    typo, gated): loading then says what is missing."""
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(Path(hf_hub_download(model, "config.json", etag_timeout=5)).read_text())
    except Exception:  # noqa: BLE001  (no network, unknown id, no permission: decided at load time)
        return None


def make_backend(preset: Preset, options):
    return backend_class(preset.backend)(preset, options)
