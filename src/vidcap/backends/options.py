"""Each backend's own options: a frozen class per kind of backend, so a backend reads only what it takes and a
setting it does not take is refused in one sentence.

    CaptionOptions (vidcap.backends.base)   every caption setting a user may give (the CLI, config files);
                                            the caption stage's fingerprint reads it
    BackendOptions                          what every caption backend takes (frames, prompt, tokens, ...)
      LocalModelOptions                     in-process transformers models (dtype, engine, ...)
        VLMOptions                          + Qwen-VL pixel budgets
        PLLaVAOptions                       + pooling and LoRA alpha
      APIOptions                            OpenAI-compatible servers (URL, key, retries, prices, budget, ...)
    ChatOptions                             text LLMs (tag, summarize)
      LocalChatOptions, APIChatOptions

A backend builds its own with `Options.of(options, name)`; nothing changes them afterwards.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, TypeVar

from ..errors import UsageError

T = TypeVar("T", bound="OwnOptions")


@dataclass(frozen=True)
class OwnOptions:
    """The shared part of every backend's options class: built from a caption-options value or a mapping."""

    @classmethod
    def names(cls) -> frozenset[str]:
        return frozenset(f.name for f in fields(cls))

    @classmethod
    def of(cls: type[T], options: Any, backend: str) -> T:
        """This backend's options from `options`: a dataclass (only its settings set away from their
        defaults count as given) or a mapping (every key is given). A given setting this backend does not
        take is a UsageError in one sentence."""
        if isinstance(options, cls):
            return options
        if options is None:
            return cls()
        if isinstance(options, Mapping):
            values, given = dict(options), set(options)
        elif is_dataclass(options) and not isinstance(options, type):
            values = {f.name: getattr(options, f.name) for f in fields(options)}
            defaults = type(options)()
            given = {k for k, v in values.items() if v != getattr(defaults, k)}
        else:
            raise UsageError(f"the {backend} backend's options must be a mapping, not {type(options).__name__}.")
        foreign = sorted(given - cls.names())
        if foreign:
            raise UsageError(refusal(backend, foreign[0], cls))
        return cls(**{k: v for k, v in values.items() if k in cls.names()})


def refusal(backend: str, name: str, own: type[OwnOptions]) -> str:
    """One sentence for a setting `backend` does not take: a setting of other backends gets its flag named,
    anything else the list of this backend's options."""
    if any(name in kind.names() for kind in KINDS):
        return (
            f"the {backend} backend does not use the option '{name}' (--{name.replace('_', '-')}); "
            "drop it or pick a backend that does."
        )
    return f"unknown option '{name}' for the {backend} backend; its options: {', '.join(sorted(own.names()))}."


@dataclass(frozen=True)
class BackendOptions(OwnOptions):
    """What every caption backend takes; the defaults are CaptionOptions' (tests/test_options.py checks)."""

    num_frames: int | None = None
    fps: float | None = None
    max_frames: int | None = None
    prompt: str | None = None
    prompt_text: str | None = None
    max_new_tokens: int | None = 256
    user_turn: str | None = None
    temperature: float = 0.0
    batch_size: int = 8
    resize: int | None = None
    device: str | None = None
    strip_prefix: bool = False
    heal: int = 0
    caption_format: str = "text"
    schema: str | None = None
    variants: tuple[str, ...] | None = None


@dataclass(frozen=True)
class LocalModelOptions(BackendOptions):
    """In-process (transformers) models."""

    constrain: bool = True
    dtype: str | None = None
    trust_remote_code: bool = False
    prepare_on_workers: bool = True
    engine: bool = True
    static_batches: bool = False
    ignore_eos: bool = False
    lengths: tuple[int, int] | None = None


@dataclass(frozen=True)
class VLMOptions(LocalModelOptions):
    """Qwen-VL, InternVL, LLaVA-OneVision and LLaVA-NeXT (the pixel budgets apply to Qwen-VL)."""

    max_pixels: int | None = None
    total_pixels: int | None = None


@dataclass(frozen=True)
class PLLaVAOptions(LocalModelOptions):
    pooling_shape: tuple[int, int, int] | None = None
    lora_alpha: float | None = None


@dataclass(frozen=True)
class APIOptions(BackendOptions):
    """OpenAI-compatible servers."""

    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    max_retries: int = 5
    timeout: float = 60.0
    detail: str = "auto"
    price_in: float | None = None
    price_out: float | None = None
    jpeg_quality: int = 90
    backoff_base: float = 0.5
    retry_after_cap: float = 120.0
    budget: float | None = None
    max_images: int | None = None


@dataclass(frozen=True)
class ChatOptions(OwnOptions):
    """Text LLMs (vidcap tag, vidcap summarize)."""

    max_new_tokens: int | None = 256
    temperature: float = 0.0
    batch_size: int = 8
    device: str | None = None


@dataclass(frozen=True)
class LocalChatOptions(ChatOptions):
    dtype: str | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class APIChatOptions(ChatOptions):
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 16
    max_retries: int = 5
    timeout: float = 60.0
    price_in: float | None = None
    price_out: float | None = None
    backoff_base: float = 0.5
    retry_after_cap: float = 120.0


KINDS: tuple[type[OwnOptions], ...] = (VLMOptions, PLLaVAOptions, APIOptions, LocalChatOptions, APIChatOptions)
