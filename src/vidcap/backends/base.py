"""One request/result shape for every caption engine: in-process transformers, HTTP APIs, fakes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import numpy as np

from ..errors import UsageError
from .options import BackendOptions
from .spend import SpendGate


@dataclass(frozen=True)
class CaptionOptions:
    """Every caption setting a user may pick for a run (the CLI's flags, a config file); frozen. Each backend
    takes its own part as its own frozen class (vidcap.backends.options), refusing what it does not use."""

    num_frames: int | None = None  # None: the preset's
    fps: float | None = None  # frames by time: this many per second of the clip (None: the preset's, if any)
    max_frames: int | None = None  # with fps: the most frames a clip gives (None: the preset's, else 768)
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
    total_pixels: int | None = None  # Qwen-VL pixel budget per clip (all its frames together)
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
    jpeg_quality: int = 90  # frames travel as JPEG
    backoff_base: float = 0.5  # seconds before the first retry, doubled each time
    retry_after_cap: float = 120.0  # the longest Retry-After a server may ask for
    budget: float | None = None  # USD: the most this output may cost, over every run that writes it
    max_images: int | None = None  # images one request may carry (None: the provider's known limit, if any)
    # in-process (transformers) backends
    prepare_on_workers: bool = True  # decode workers also turn frames into model inputs (the processor)
    engine: bool = True  # vidcap's own decode loop; False: plain generate() (the bench's --baseline)
    static_batches: bool = False  # engine without continuous batching (the bench compares the two)
    ignore_eos: bool = False  # every caption exactly max_new_tokens long (benchmarks)
    lengths: tuple[int, int] | None = None  # benchmarks: each clip's token limit drawn from A..B
    # the caption stage
    strip_prefix: bool = False  # drop stock openings like "The video shows"
    heal: int = 0  # attempts to recaption a looping/empty/cut-off/prompt-echoing row (vidcap.heal)
    caption_format: str = "text"  # "json": structured captions following `schema` (vidcap.schemas)
    schema: str | None = None  # a built-in schema's name or a JSON Schema file (with caption_format json)
    constrain: bool = True  # JSON captions: in-process decoding masked to the schema (False: only checked after)
    variants: tuple[str, ...] | None = None  # prompt names: one caption per prompt from one visual encoding

    @classmethod
    def from_dict(cls, values: dict) -> CaptionOptions:
        """Options from a mapping (a config file, library callers); an unknown key is refused by name."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown caption option '{unknown[0]}'; known options: {', '.join(sorted(known))}.")
        return cls(**values)

    def changed(self) -> set[str]:
        """Names of the options set to something other than their default."""
        defaults = type(self)()
        return {f.name for f in fields(self) if getattr(self, f.name) != getattr(defaults, f.name)}


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
    """Subclasses load in `setup` (once per worker/GPU) and caption a batch in `caption`.

    Every optional hook is declared here with a default that does nothing; a backend overrides what it
    supports. `Options` is its own frozen options class: given a CaptionOptions (or a mapping), a setting
    outside it is refused in one sentence."""

    name = "base"
    Options: ClassVar[type[BackendOptions]] = BackendOptions
    options: BackendOptions

    def __init__(self, preset, options: CaptionOptions | BackendOptions | Mapping[str, Any] | None):
        self.preset = preset
        self.options = self.Options.of(options, self.name)

    @property
    def takes(self) -> frozenset[str]:
        """The options this backend reads."""
        return self.Options.names()

    def model_label(self) -> str:
        return self.preset.model_id or self.preset.name

    def provenance(self) -> dict:
        """What a user needs later to tell how a caption was made (written to run.json and metadata)."""
        return {"backend": self.name, "model": self.model_label()}

    def setup(self, device: str | None = None) -> None:
        pass

    def caption(self, requests: list[CaptionRequest]) -> list[CaptionResult]:
        raise NotImplementedError

    def caption_variants(self, groups: list[list[CaptionRequest]]) -> list[list[CaptionResult]]:
        """--variants: for each clip, its requests (one per prompt, same frames) -> one result per request.
        The default sends each as its own request; the in-process backends prefill what they share once."""
        flat = iter(self.caption([r for reqs in groups for r in reqs]))
        return [[next(flat) for _ in reqs] for reqs in groups]

    def teardown(self) -> None:
        pass

    def resolve(self, device: str | None = None) -> None:
        """Cheap preparation before `setup` (find the weights, pick the device) so decode workers can start."""

    def check_tp(self, tp: int) -> None:
        """Refuse (UsageError) a tensor-parallel split this model cannot take; the default takes any."""

    def worker_preprocessor(self):
        """A picklable callable decode workers run to turn a request into model inputs; None: not supported."""
        return

    def engine(self):
        """The continuous-batching engine when this run uses one, else None (captions go through `caption`)."""
        return

    def caption_stream(self, source) -> Iterator[tuple]:
        """(key, CaptionResult) as captions finish, for (key, prepared inputs) pairs from `source.take`;
        only called when `engine()` is not None."""
        raise NotImplementedError

    def prepare_item(self, request: CaptionRequest):
        """One request turned into model inputs in this process (when the workers did not)."""
        raise NotImplementedError

    def caption_prepared(self, items: list) -> list[CaptionResult]:
        """Captions for inputs the decode workers prepared (see `worker_preprocessor`)."""
        raise NotImplementedError

    def usage_summary(self) -> dict:
        """Figures for the run summary (tokens, cost, tensor-parallel size)."""
        return {}

    def heal_caption(self, requests: list[CaptionRequest], decoding) -> list[CaptionResult]:
        """Captions for `requests` with `decoding` (a vidcap.heal.Decoding) applied to these requests only;
        the default ignores it (a deterministic backend then gives the same caption, and the row stays flagged)."""
        return self.caption(requests)

    def max_images(self) -> tuple[int, str] | None:
        """(images one request may carry, where that limit comes from), None when there is no known limit."""
        return None

    def spent_usd(self) -> float | None:
        """What this run has spent so far (API backends with a price), None when nothing is counted."""
        return None

    counts_spend = False  # True for backends that pay per request (see vidcap.budget.attach_spend)

    def spend_gate(self) -> SpendGate | None:
        """The gate that keeps this backend's requests within the output's --budget (API backends), or None."""
        return None

    def set_spend_gate(self, gate: SpendGate) -> None:
        """Ask `gate` before every request (only backends with counts_spend)."""
        raise NotImplementedError

    def engine_summary(self) -> dict | None:
        """The engine's figures (fast_path and why not, decode ms per step, ...); None: this backend has none."""
        return None
