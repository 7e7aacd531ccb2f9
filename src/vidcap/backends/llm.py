"""Text chat models for tagging captions: in-process transformers, OpenAI-compatible APIs, and a fake.

All three take a list of ChatRequest (chat messages) and return CaptionResult in the same order.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

from ..errors import OOM, UsageError, format_error
from .base import CaptionOptions, CaptionResult
from .hf_common import pick_dtype
from .options import APIChatOptions, ChatOptions, LocalChatOptions

DEFAULT_TAG_MODEL = "meta-llama/Meta-Llama-3-8B-Instruct"
DEFAULT_API_TAG_MODEL = "gpt-4o-mini"  # --backend openai without --model
# End-of-turn markers of common chat families; generation stops on whichever the tokenizer knows.
_END_OF_TURN = ("<|eot_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "<|end_of_text|>")


@dataclass
class ChatRequest:
    messages: list[dict]  # [{"role": "system"|"user", "content": str}, ...]
    meta: dict = field(default_factory=dict)


class ChatBackend:
    """One chat turn per request; subclasses load in `setup` and answer in `chat`."""

    name = "base"
    Options: ClassVar[type[ChatOptions]] = ChatOptions  # its own frozen options: any other setting is refused
    options: ChatOptions

    def __init__(self, model: str | None, options: CaptionOptions | ChatOptions | Mapping[str, Any] | None = None):
        self.model = model
        self.options = self.Options.of(options, self.name)

    def provenance(self) -> dict:
        return {
            "backend": self.name,
            "model": self.model,
            "max_new_tokens": self.options.max_new_tokens,
            "temperature": self.options.temperature,
        }

    def setup(self, device: str | None = None) -> None:
        pass

    def chat(self, requests: list[ChatRequest]) -> list[CaptionResult]:
        raise NotImplementedError

    def usage_summary(self) -> dict:
        return {}

    def teardown(self) -> None:
        pass


class HFChatBackend(ChatBackend):
    """A transformers causal LM with its own chat template: left-padded batches, greedy by default."""

    name = "hf"
    model: str  # the default when none is given
    Options = LocalChatOptions
    options: LocalChatOptions

    def __init__(self, model: str | None, options: CaptionOptions | ChatOptions | None = None):
        super().__init__(model or DEFAULT_TAG_MODEL, options)
        self.tokenizer: Any
        self.lm: Any  # transformers objects once set up
        self.tokenizer = self.lm = None
        self.device: str | None = None
        self._merge_system = False
        self._eos: list[int] = []
        self.prompt_tokens = self.completion_tokens = 0

    def provenance(self) -> dict:
        info = super().provenance()
        if self.lm is not None:
            info["revision"] = getattr(self.lm.config, "_commit_hash", None)
            info["dtype"] = str(self.lm.dtype).replace("torch.", "")
        return info

    def setup(self, device: str | None = None) -> None:
        import torch

        if self.lm is not None:
            return
        self.device = device or self.options.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = pick_dtype(self.options.dtype, self.device)
        where = self.model
        if not Path(self.model).expanduser().exists():  # a Hub id: the cache first, one sentence when offline
            from .hf_common import local_model_dir

            where = str(local_model_dir(self.model, self.options.trust_remote_code))
        self.tokenizer = _load_tokenizer(where, self.options.trust_remote_code)
        self.lm = _load_lm(where, dtype, self.device, self.options.trust_remote_code)
        self._eos = _eos_ids(self.tokenizer, self.lm)
        self._merge_system = not _system_role_ok(self.tokenizer)

    def render(self, messages: list[dict]) -> str:
        """The exact prompt text the model sees (its chat template plus the assistant turn opener)."""
        if self._merge_system and messages and messages[0]["role"] == "system":
            rest = list(messages[1:]) or [{"role": "user", "content": ""}]
            rest[0] = dict(rest[0], content=f"{messages[0]['content']}\n\n{rest[0]['content']}")
            messages = rest
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def chat(self, requests: list[ChatRequest]) -> list[CaptionResult]:
        if not requests:
            return []
        import torch

        try:
            return self._generate([self.render(r.messages) for r in requests])
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            if len(requests) == 1:
                return [CaptionResult(error=format_error(OOM, f"out of GPU memory on one caption ({exc})"))]
            half = len(requests) // 2  # a smaller batch often fits; the results keep their order
            return self.chat(requests[:half]) + self.chat(requests[half:])

    def _generate(self, texts: list[str]) -> list[CaptionResult]:
        import torch

        tok = self.tokenizer
        # The template already holds BOS and the special markers, so the tokenizer must not add them again.
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.lm.device)
        with torch.inference_mode():
            out = self.lm.generate(**enc, generation_config=self._gen_config())
        new = out[:, enc["input_ids"].shape[1] :].tolist()
        lengths = enc["attention_mask"].sum(dim=1).tolist()
        results = []
        for ids, n_in in zip(new, lengths, strict=False):
            stop = next((i for i, t in enumerate(ids) if t in self._eos), None)
            kept = ids if stop is None else ids[:stop]
            n_out = len(ids) if stop is None else stop + 1
            self.prompt_tokens += int(n_in)
            self.completion_tokens += n_out
            results.append(
                CaptionResult(
                    text=tok.decode(kept, skip_special_tokens=True).strip(),
                    prompt_tokens=int(n_in),
                    completion_tokens=n_out,
                    finish_reason="length" if stop is None else "stop",
                )
            )
        return results

    def _gen_config(self):
        cfg = copy.deepcopy(self.lm.generation_config)
        temp = float(self.options.temperature or 0.0)
        cfg.do_sample = temp > 0
        if temp > 0:
            cfg.temperature = temp
        else:  # neutral values, not None: generate() refills None from the model's sampling defaults, then warns
            cfg.temperature, cfg.top_p, cfg.top_k, cfg.typical_p = 1.0, 1.0, 50, 1.0
        cfg.max_new_tokens = int(self.options.max_new_tokens)
        cfg.eos_token_id = list(self._eos)
        cfg.pad_token_id = self.tokenizer.pad_token_id
        return cfg

    def usage_summary(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}

    def teardown(self) -> None:
        if self.lm is None:
            return
        import gc

        import torch

        self.lm = self.tokenizer = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _check_local(model: str) -> None:
    """A local folder must hold a config and safetensors weights (pickled .bin weights are refused)."""
    path = Path(model).expanduser()
    if not path.exists():
        return
    if not path.is_dir() or not (path / "config.json").exists():
        raise UsageError(
            f"model path {model} is not a saved Hugging Face model folder (no config.json); pass a model id or such a folder."
        )
    if not any(path.glob("*.safetensors")):
        found = "only .bin weights" if any(path.glob("*.bin")) else "no weights"
        raise UsageError(
            f"model folder {model} has {found}; vidcap loads .safetensors weights only (re-save with save_pretrained(safe_serialization=True))."
        )


def _load_error(model: str, exc: Exception) -> UsageError:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    return UsageError(
        f"could not load chat model '{model}' ({first}); pass a downloaded model id or a local folder with safetensors weights."
    )


def _load_tokenizer(model: str, trust_remote_code: bool):
    from transformers import AutoTokenizer

    _check_local(model)
    try:
        tok = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _load_error(model, exc) from None
    if not getattr(tok, "chat_template", None):
        raise UsageError(
            f"model '{model}' has no chat template; tag with an instruction-tuned chat model such as {DEFAULT_TAG_MODEL}."
        )
    tok.padding_side = "left"  # generation continues from the last position, so padding must come first
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise UsageError(f"the tokenizer of '{model}' has neither a pad nor an eos token; it cannot batch.")
        tok.pad_token = tok.eos_token
    return tok


def _load_lm(model: str, dtype, device: str, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM

    from .hf_common import quiet_transformers

    quiet_transformers()
    kwargs: dict[str, Any] = dict(dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code)
    if str(device).startswith("cuda"):
        kwargs["device_map"] = {"": device}  # load straight onto the GPU, no full copy in host memory
    try:
        lm = AutoModelForCausalLM.from_pretrained(model, **kwargs)
    except (OSError, ValueError) as exc:
        raise _load_error(model, exc) from None
    if "device_map" not in kwargs:
        lm = lm.to(device)  # type: ignore[arg-type]  # transformers types `to` as @wraps(Module.to), self and all
    return lm.eval()


def _eos_ids(tok, lm) -> list[int]:
    ids: list[Any] = []
    for source in (lm.generation_config.eos_token_id, tok.eos_token_id):
        ids += source if isinstance(source, (list, tuple)) else [source]
    vocab = tok.get_vocab()
    ids += [vocab[t] for t in _END_OF_TURN if t in vocab]
    return sorted({int(i) for i in ids if i is not None})


def _system_role_ok(tok) -> bool:
    """Some templates (Gemma, Mistral v0.1) raise on a system turn; those get it merged into the user turn."""
    try:
        text = tok.apply_chat_template(
            [{"role": "system", "content": "S1S"}, {"role": "user", "content": "U1U"}],
            add_generation_prompt=True,
            tokenize=False,
        )
    except Exception:
        return False
    return "S1S" in text


class OpenAIChatBackend(ChatBackend):
    """One chat-completions request per caption through the shared API client (retries, concurrency)."""

    name = "openai"
    model: str  # the default when none is given
    Options = APIChatOptions
    options: APIChatOptions

    def __init__(self, model: str | None, options: CaptionOptions | ChatOptions | None = None):
        from .api_common import ChatClient

        super().__init__(model or DEFAULT_API_TAG_MODEL, options)
        o = self.options
        self.client = ChatClient(
            self.model,
            base_url=o.base_url,
            api_key_env=o.api_key_env,
            concurrency=o.concurrency,
            max_retries=o.max_retries,
            timeout=o.timeout,
            price_in=o.price_in,
            price_out=o.price_out,
            backoff_base=float(o.backoff_base),
            retry_after_cap=float(o.retry_after_cap),
        )

    def provenance(self) -> dict:
        return {**super().provenance(), **self.client.provenance()}

    def setup(self, device: str | None = None) -> None:
        self.client.start()  # a missing key is a UsageError here, before any row is sent

    def _params(self) -> dict:
        from .openai_api import _REASONING_PREFIXES

        tokens, temp = int(cast(int, self.options.max_new_tokens)), float(self.options.temperature or 0.0)
        if self.model.rsplit("/", 1)[-1].startswith(_REASONING_PREFIXES):
            return {"max_completion_tokens": tokens, **({"temperature": temp} if temp not in (0, 1) else {})}
        return {"max_tokens": tokens, "temperature": temp}

    def chat(self, requests: list[ChatRequest]) -> list[CaptionResult]:
        if not requests:
            return []
        import asyncio

        params = self._params()

        async def run_all():
            return await asyncio.gather(*(self.client.chat(r.messages, **params) for r in requests))

        replies = self.client.run(run_all())
        return [
            CaptionResult(
                text=r.text,
                error=r.error,
                prompt_tokens=r.prompt_tokens,
                completion_tokens=r.completion_tokens,
                finish_reason=r.finish_reason or "stop",
            )
            for r in replies
        ]

    def usage_summary(self) -> dict:
        return self.client.usage_summary()

    def teardown(self) -> None:
        self.client.close()


class FakeChatBackend(ChatBackend):
    """No model: answers `[w1, w2, ...]` with the caption's first long words (deterministic, for tests)."""

    name = "fake"

    def chat(self, requests: list[ChatRequest]) -> list[CaptionResult]:
        out = []
        for req in requests:
            caption = req.messages[-1]["content"]
            words = [w.lower() for w in re.findall(r"[A-Za-z]{4,}", caption)][:3]
            text = f"Here are the tags: [{', '.join(words)}]" if words else "I found nothing to list."
            out.append(CaptionResult(text=text, prompt_tokens=len(caption.split()), completion_tokens=len(words) + 4))
        return out


CHAT_BACKENDS = {"hf": HFChatBackend, "openai": OpenAIChatBackend, "fake": FakeChatBackend}


def make_chat_backend(
    backend: str = "hf", model: str | None = None, options: CaptionOptions | None = None
) -> ChatBackend:
    """`--backend hf|openai|fake` -> a chat backend (nothing is loaded until `setup`)."""
    if backend not in CHAT_BACKENDS:
        raise UsageError(f"unknown tag backend '{backend}'; known: {', '.join(sorted(CHAT_BACKENDS))}.")
    return CHAT_BACKENDS[backend](model, options)
