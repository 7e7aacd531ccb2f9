"""One request/result shape for every caption engine: in-process transformers, HTTP APIs, fakes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CaptionOptions:
    """Settings a user picks per run; every backend reads what applies to it."""

    num_frames: int | None = None  # None: the preset's
    prompt: str | None = None  # prompt name from the prompt table, None: the preset's
    prompt_text: str | None = None  # a custom prompt (from --prompt-file); wins over `prompt`
    max_new_tokens: int | None = 256  # None: the prompt's own limit (CaptionStage resolves it), else 256
    user_turn: str | None = None  # PLLaVA: the user turn that goes with the prompt (CaptionStage sets it)
    temperature: float = 0.0  # 0 = greedy
    batch_size: int = 8
    resize: int | None = None  # short side, pixels, applied on the decode workers
    device: str | None = None  # "cuda", "cuda:1", "cpu"; None: cuda if available
    dtype: str | None = None  # "bfloat16" on GPU by default, float32 on CPU
    pooling_shape: tuple[int, int, int] | None = None  # PLLaVA
    lora_alpha: float | None = None  # PLLaVA
    max_pixels: int | None = None  # Qwen-VL pixel budget per frame
    trust_remote_code: bool = False
    # API backends
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    max_retries: int = 5
    timeout: float = 60.0
    detail: str = "auto"
    price_in: float | None = None
    price_out: float | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class CaptionRequest:
    frames: np.ndarray  # [K, H, W, 3] uint8 RGB
    prompt: str
    is_image: bool = False
    meta: dict = field(default_factory=dict)


@dataclass
class CaptionResult:
    text: str = ""
    error: str = ""  # "code: message"; empty on success
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"  # "length" when the token limit cut the text
    raw_text: str = ""  # the model's text before cleaning, when cleaning changed it


class CaptionBackend:
    """Subclasses load in `setup` (once per worker/GPU) and caption a batch in `caption`."""

    name = "base"

    def __init__(self, preset, options: CaptionOptions):
        self.preset = preset
        self.options = options

    def model_label(self) -> str:
        return self.preset.model_id or self.preset.name

    def provenance(self) -> dict:
        """What a user needs later to tell how a caption was made (written to run.json and metadata)."""
        return {"backend": self.name, "model": self.model_label()}

    def setup(self, device: str | None = None) -> None:
        pass

    def caption(self, requests: list[CaptionRequest]) -> list[CaptionResult]:
        raise NotImplementedError

    def teardown(self) -> None:
        pass
