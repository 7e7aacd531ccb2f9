"""A model preset and the table of them (a leaf: `presets` fills it, `registry` resolves names against it)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Preset:
    name: str
    backend: str  # key of BACKENDS
    model_id: str | None = None  # Hugging Face id or local dir
    num_frames: int = 4
    positions: str = "segments"  # frames.positions rule
    prompt: str | None = None  # default prompt name
    description: str = ""
    params: dict = field(default_factory=dict)  # family-specific defaults (pooling, lora alpha, ...)


PRESETS: dict[str, Preset] = {}


def register_preset(preset: Preset) -> Preset:
    PRESETS[preset.name] = preset
    return preset
