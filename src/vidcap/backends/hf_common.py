"""What every in-process transformers caption backend shares: finding the weights, device and dtype,
the prepare/generate split, batched greedy generation, token accounting, OOM splitting, seed cleaning."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, cast

from ..engine.prefill import seq_keys, to_device
from ..engine.variants import VARIANTS, VariantKey, family, is_family
from ..errors import MODEL, OOM, UsageError, format_error
from ..rows import ListSource
from .base import CaptionBackend, CaptionRequest, CaptionResult
from .options import LocalModelOptions
from .structured import generate_kwargs, model_grammar

_DTYPES = {
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "float32": "float32",
    "fp32": "float32",
}
# Only what loading needs: configs, safetensors weights, tokenizer and processor files (never .bin pickles).
_WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]


GATED_ORGS = ("meta-llama/",)  # Hub organisations whose models need an accepted license and a login


def missing_weights_error(model: str, why: str = "") -> UsageError:
    why = f" ({why})" if why else ""
    gated = (
        ""
        if "gated" in why or not model.startswith(GATED_ORGS)
        else (" (it is a gated model: accept its license on its Hub page and run `hf auth login` first)")
    )
    return UsageError(
        f"model '{model}' is not on this machine and could not be downloaded{why}; run "
        f"`hf download {model}`{gated} on a machine with internet (then copy the Hugging Face cache "
        f"here), or pass --model /path/to/a/local/model/dir."
    )


def _looks_local(model: str) -> bool:
    return model.startswith(("/", ".", "~")) or model.count("/") != 1


def local_model_dir(model: str, trust_remote_code: bool = False) -> Path:
    """A local directory holding the model: the path itself, or the Hub snapshot (cached or downloaded now)."""
    path = Path(os.path.expanduser(model))
    if path.is_dir():
        _check_dir(path, model)
        return path
    if _looks_local(model):
        raise UsageError(
            f"model directory {model} does not exist; pass a model directory, a Hugging Face id or a preset name (see `vidcap models`)."
        )
    from huggingface_hub import snapshot_download

    patterns = _WEIGHT_PATTERNS + (["*.py"] if trust_remote_code else [])
    try:  # the cache first: a model downloaded once needs no network again
        snap = snapshot_download(model, allow_patterns=patterns, local_files_only=True)
    except Exception:  # noqa: BLE001  (not cached, or cached in part)
        snap = None
    if snap is None:
        offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
        if offline or not hub_reachable():
            why = "HF_HUB_OFFLINE is set" if offline else "the Hugging Face Hub cannot be reached from here"
            raise missing_weights_error(model, why)
        try:
            snap = snapshot_download(model, allow_patterns=patterns, etag_timeout=5)
        except Exception as exc:  # noqa: BLE001  no route, gated, unknown id: all end the same way for the user
            gated = "gated" in type(exc).__name__.lower() or "gated" in str(exc).lower()
            why = (
                "a gated model: accept its license on its Hub page and log in with `hf auth login`"
                if gated
                else _first_line(exc)
            )
            raise missing_weights_error(model, why) from None
    path = Path(snap)
    _check_dir(path, model)
    return path


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub's host answers a TCP connection within `timeout` s (a quick no, instead of the
    library's retries against a machine with no network)."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


RANDOM_MARKER = "vidcap_random_weights.json"  # written by `vidcap bench`: build from config, random weights


def is_random_skeleton(path: Path | None) -> bool:
    return path is not None and (Path(path) / RANDOM_MARKER).exists()


def _check_dir(path: Path, model: str) -> None:
    if not (path / "config.json").exists():
        raise UsageError(f"model directory {model} has no config.json; pass a saved Hugging Face model dir.")
    if not any(path.glob("*.safetensors")) and not is_random_skeleton(path):
        found = "only .bin weights" if any(path.glob("*.bin")) else "no weights"
        raise UsageError(
            f"model {model} has {found}; vidcap loads .safetensors weights only (re-save the model with save_pretrained)."
        )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:160]


def pick_device(requested: str | None) -> str:
    import torch

    if requested:
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def pick_dtype(name: str | None, device: str):
    import torch

    if name is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    key = _DTYPES.get(str(name).lower())
    if key is None:
        raise UsageError(f"--dtype '{name}' is not one of bfloat16, float16, float32.")
    return getattr(torch, key)


def clean_caption(text: str) -> str:
    """The seed's output cleaning (LLaVA and PLLaVA captioners): newlines become spaces, ends stripped."""
    return text.replace("\n", " ").strip()


def eos_ids(tokenizer, generation_config) -> list[int]:
    ids = []
    for source in (getattr(generation_config, "eos_token_id", None), tokenizer.eos_token_id):
        ids += list(source) if isinstance(source, (list, tuple)) else [source]
    return sorted({int(i) for i in ids if i is not None})


@dataclass
class Prepared:
    """A batch turned into model inputs on the CPU (the part a worker process could do)."""

    inputs: dict  # tensors for model.generate
    prompt_tokens: list[int]
    max_new: list[int | None] = field(default_factory=list)  # per-caption token limits (bench --lengths)


class HFCaptionBackend(CaptionBackend):
    """Subclasses implement `_load(path, device, dtype)` and `prepare(requests)`; the rest is shared."""

    name = "hf"
    Options: ClassVar[type[LocalModelOptions]] = LocalModelOptions
    options: LocalModelOptions

    def __init__(self, preset, options):
        super().__init__(preset, options)
        self.model: Any
        self.tokenizer: Any  # transformers objects once set up
        self.model = self.tokenizer = None
        self.device = None
        self.dtype = None
        self.eos: list[int] = []
        self.pad_id = 0
        self.model_dir: Path | None = None

    def param(self, key: str, default=None):
        """An option set by the user wins over the preset's family default."""
        value = getattr(self.options, key, None)
        return value if value is not None else self.preset.params.get(key, default)

    def provenance(self) -> dict:
        info = super().provenance()
        info.update(max_new_tokens=self.options.max_new_tokens, temperature=self.options.temperature)
        if self.model is not None:
            info["revision"] = getattr(self.model.config, "_commit_hash", None) or _snapshot_revision(self.model_dir)
            info["dtype"] = str(self.dtype).replace("torch.", "")
        return info

    def resolve(self, device: str | None = None) -> None:
        """Find the weights (download if needed) and pick device and dtype, without loading the model,
        so decode workers can start (and load the processor) while the model loads."""
        if self.model_dir is not None:
            return
        self.device = pick_device(device or self.options.device)
        self.dtype = pick_dtype(self.options.dtype, self.device)
        model_id = self.preset.model_id or self.preset.name
        self.model_dir = local_model_dir(model_id, self.options.trust_remote_code)

    def setup(self, device: str | None = None) -> None:
        if self.model is not None:
            return
        self.resolve(device)
        quiet_transformers()
        t0 = time.perf_counter()
        compiled = self._precompile()  # the engine's Triton kernels compile while the weights load
        assert self.model_dir is not None  # resolve() found it
        self._load(self.model_dir, self.device, self.dtype)
        cast(Any, self.model).eval()  # _load set it (the check above narrowed it to None)
        self.loaded_at = time.perf_counter()
        self.load_s = self.loaded_at - t0
        compiled()
        self.compile_wait_s = time.perf_counter() - self.loaded_at
        self.loaded_tp = self.tensor_parallel  # still reported after teardown frees the model
        engine = self.engine()  # built now: its kernels are checked while the decode workers start
        if engine is not None and engine.use_graphs:
            engine.warm()

    def _load(self, path: Path, device: str, dtype) -> None:
        raise NotImplementedError

    def _precompile(self):
        """Start compiling the engine's kernels for this model's sizes (a thread; see engine.fused.precompile)
        when the engine will run; returns the function that waits for it."""
        if not self.options.engine or float(self.options.temperature or 0) > 0 or self.model_dir is None:
            return lambda: None
        try:
            text = self.text_config(self.model_dir)
        except (OSError, ValueError, KeyError, TypeError):  # the load itself says what is wrong with the config
            return lambda: None
        from ..engine.fused import precompile

        return precompile(text, self.device, self.dtype)

    def text_config(self, path: Path):
        """The language model's config (all sizes filled in: a checkpoint's config.json may list only
        what differs from its architecture's defaults)."""
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(path, trust_remote_code=self.options.trust_remote_code).get_text_config()

    def check_tp(self, tp: int) -> None:
        """Refuse a --tp that does not divide the model's heads, from its config alone (nothing loaded)."""
        import json

        # the folder only: this stage is sent to the workers, which pick their own device
        path = self.model_dir or local_model_dir(
            self.preset.model_id or self.preset.name, self.options.trust_remote_code
        )
        raw = json.loads((path / "config.json").read_text())
        text = raw.get("text_config") or raw
        heads = text.get("num_attention_heads")
        check_tp_split(
            tp,
            f"'{self.model_label()}'",
            {"attention heads": heads, "key-value heads": text.get("num_key_value_heads") or heads},
        )

    def usage_summary(self) -> dict:
        tp = getattr(self, "loaded_tp", 1)
        return {"tensor_parallel": f"{tp} devices per model"} if tp > 1 else {}

    @property
    def tensor_parallel(self) -> int:
        """K when this model is one shard of a --tp K group (its decode then runs eagerly, no static cache)."""
        return getattr(self.model, "_tp_size", None) or getattr(self.model, "vidcap_tp", None) or 1

    def load_preprocessor(self, path: Path) -> None:
        """Load what `prepare_one` needs (processor/tokenizer), without the model: runs in decode workers."""
        raise NotImplementedError

    def prepare_one(self, request: CaptionRequest) -> dict:
        """One request as unpadded model inputs (CPU tensors with a batch dim of 1) + `n_prompt`."""
        raise NotImplementedError

    def collate(self, items: list[dict]) -> Prepared:
        return collate_items(items, self.pad_id)

    def prepare_item(self, request: CaptionRequest) -> dict:
        """`prepare_one` plus the caption's own token limit when the bench draws lengths (--lengths A:B)."""
        item = self.prepare_one(request)
        limit = drawn_length(self.options.lengths, request.meta.get("path")) or request.meta.get("max_new")
        if limit:
            item["max_new"] = int(limit)
        return item

    def prepare_variants(self, requests: list[CaptionRequest]) -> dict:
        """One clip's requests, one per --variants prompt, as one family item (the engine prefills what they
        share once)."""
        return family([self.prepare_item(r) for r in requests])

    def caption_variants(self, groups: list[list[CaptionRequest]]) -> list[list[CaptionResult]]:
        if self.engine() is None:
            return super().caption_variants(groups)
        return self._through_engine(
            groups, self.prepare_variants, lambda reqs, error: [CaptionResult(error=error) for _ in reqs]
        )

    def _through_engine(self, inputs: list, prepare, failed) -> list:
        """Each input prepared (`prepare`) and captioned by the engine, in order; one the processor rejects is
        `failed(input, error)` without reaching the engine."""
        items, early = [], {}
        for i, x in enumerate(inputs):
            try:
                items.append((i, prepare(x)))
            except (UsageError, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001  a request the processor rejects is that row's error
                early[i] = failed(x, format_error(MODEL, f"{type(exc).__name__}: {_first_line(exc)}"))
        done = dict(self.caption_stream(ListSource(items)))
        return [early[i] if i in early else done[i] for i in range(len(inputs))]

    def prepare(self, requests: list[CaptionRequest]) -> Prepared:
        return self.collate([self.prepare_item(r) for r in requests])

    def worker_preprocessor(self):
        """A picklable object decode workers call to turn a request into model inputs (None: not supported)."""
        if type(self).prepare_one is HFCaptionBackend.prepare_one or self.model_dir is None:
            return None
        return WorkerPreprocessor(type(self), self.preset, self.options, str(self.model_dir))

    def postprocess(self, text: str) -> str:
        return clean_caption(text)

    def caption(self, requests: list[CaptionRequest]) -> list[CaptionResult]:
        if self.engine() is None:
            return self._run(requests, self.prepare)
        return self._through_engine(requests, self.prepare_item, lambda _, error: CaptionResult(error=error))

    _decoding = None  # a heal attempt's decoding (vidcap.heal.Decoding) while `heal_caption` runs

    def heal_caption(self, requests: list[CaptionRequest], decoding) -> list[CaptionResult]:
        """Captions through generate() with a heal attempt's repetition penalty, no-repeat n-grams and
        seeded sampling, for these requests only (the engine decodes greedily with the run's settings)."""
        self._decoding = decoding
        try:
            return self._run(requests, self.prepare)
        finally:
            self._decoding = None

    def caption_prepared(self, items: list[dict]) -> list[CaptionResult]:
        """Like `caption`, for requests the decode workers already turned into model inputs."""
        if self.engine() is None:
            if any(is_family(it) for it in items):  # --variants through generate(): each variant a request
                flat = iter(self._run([m for it in items for m in it[VARIANTS]], self.collate))
                return [[next(flat) for _ in it[VARIANTS]] for it in items]  # type: ignore[misc]
            return self._run(items, self.collate)
        done = dict(self.caption_stream(ListSource(list(enumerate(items)))))
        return [done[i] for i in range(len(items))]

    # -- the engine ----------------------------------------------------------------------------------
    _engine = None
    _engine_stats = None  # the last engine's figures, kept after teardown for the run summary
    _engine_off: str | None = None  # why this model runs through generate() instead
    load_s = 0.0  # seconds the model took to load
    loaded_at = 0.0  # perf_counter when it was loaded (the first caption is timed from here)
    compile_wait_s = 0.0  # seconds waited after the load for the kernels compiling during it

    def engine(self):
        """vidcap's engine for this model (built once, reused across batches and runs), or None where it
        does not apply: --baseline, sampling, a --tp shard, or an architecture it does not implement."""
        if self.model is None:
            return None
        why = self._engine_refusal()  # asked each time: the bench switches --baseline on and off
        if why is None and self._engine is None:
            from ..engine import Engine, Unsupported

            try:
                self._engine = Engine(
                    self.model,
                    slots=self.options.batch_size,
                    eos=self.eos,
                    pad_id=self.pad_id,
                    max_new_tokens=int(self.options.max_new_tokens),
                    device=self.device,
                    dtype=self.dtype,
                    collate=self._collate_right,
                    ignore_eos=self.options.ignore_eos,
                )
            except Unsupported as exc:
                why = str(exc)
        if why is None:
            self._engine.static = self.options.static_batches
            self._engine.grammar = model_grammar(self)  # --caption-format json: decoding follows the schema
            return self._engine
        if why != self._engine_off:
            self._engine_off = why
            if self.options.engine:
                warn(f"vidcap's engine is off for this run, captions go through generate() ({why}).")
        return None

    def _engine_refusal(self) -> str | None:
        if not self.options.engine:
            return "switched off (--baseline or engine=False)"
        if float(self.options.temperature or 0) > 0:
            return "sampling (--temperature > 0) runs through generate(); the engine decodes greedily"
        if self.tensor_parallel > 1:
            return f"tensor parallel over {self.tensor_parallel} devices"
        return None

    def _collate_right(self, items: list[dict]) -> dict:
        return collate_items(items, self.pad_id, side="right").inputs

    def caption_stream(self, source):
        """(key, CaptionResult) as each caption finishes; `source` (a vidcap.rows.RowSource) gives (key, item)
        pairs of `prepare_item` outputs. Never loses or doubles an item."""
        held: dict = {}
        parts: dict = {}  # --variants: a family's results so far; the row is out when all its variants are
        for out in self._engine.run(_Holding(source, held)):
            if isinstance(out.key, VariantKey):
                key, item = out.key.key, held[out.key.key]
                got = parts.setdefault(key, {})
                got[out.key.index] = self._engine_result(out, item[VARIANTS][out.key.index])
                if len(got) == len(item[VARIANTS]):
                    del held[key], parts[key]
                    yield key, [got[j] for j in range(len(got))]
                continue
            item = held.pop(out.key)
            if is_family(item):  # a whole family handed back (fallback): each variant through generate()
                yield out.key, [self._engine_result(out, m) for m in item[VARIANTS]]
            else:
                yield out.key, self._engine_result(out, item)

    def _engine_result(self, out, item: dict) -> CaptionResult:
        if out.finish == "fallback":
            return self._generate_guarded([item], self.collate)[0]
        if out.finish == "error":
            return CaptionResult(error=out.error)
        return self.decode([out.tokens], [int(item["n_prompt"])])[0]

    def engine_summary(self) -> dict:
        """fast_path and the engine's own figures (decode ms per step, graph replays, ...) for run.json."""
        why = self._engine_refusal() if self.model is not None else None
        if why is not None:  # this run went through generate(), whatever an earlier run in this process did
            return {"fast_path": False, "fast_path_reason": why}
        stats = self._engine.stats if self._engine is not None else self._engine_stats
        if stats is not None:  # first_row_s counts from the engine's start; first_row_after_load_s from the load
            from .. import STARTED

            after = since_start = None
            if stats.first_row_s is not None and self.loaded_at:
                after = round(stats.started + stats.first_row_s - self.loaded_at, 3)
                since_start = round(stats.started + stats.first_row_s - STARTED, 3)
            return dict(
                stats.summary(),
                model_load_s=round(self.load_s, 1),
                first_row_after_load_s=after,
                first_row_after_start_s=since_start,
                kernel_compile_wait_s=round(self.compile_wait_s, 2),
            )
        return {"fast_path": False, "fast_path_reason": self._engine_off or "not used"}

    def _run(self, batch: list, prepare) -> list[CaptionResult]:
        if not batch:
            return []
        if isinstance(batch[0], dict):  # prepared items: a prompt past the model's positions is that row's error
            from ..engine.scheduler import context_error, max_positions

            limit, n_new = max_positions(self.model), int(self.options.max_new_tokens or 0)
            errors = [context_error(int(it["n_prompt"]), int(it.get("max_new") or n_new), limit) for it in batch]
            if any(errors):
                fits = iter(self._run([it for it, e in zip(batch, errors, strict=False) if not e], prepare))
                return [CaptionResult(error=e) if e else next(fits) for e in errors]
        size = min(self.options.batch_size, self._fits or self.options.batch_size)
        results = []
        for i in range(0, len(batch), size):  # a batch size that ran out of memory once is not tried again
            results += self._generate_guarded(batch[i : i + size], prepare)
        return results

    _fits: int | None = None  # the largest batch known to fit in GPU memory, once one did not

    def _generate_guarded(self, batch: list, prepare) -> list[CaptionResult]:
        import torch

        failure = None
        try:
            return self.generate(prepare(batch))
        except torch.cuda.OutOfMemoryError as exc:
            failure = ("oom", _first_line(exc))
        except (UsageError, KeyboardInterrupt):
            raise
        except Exception as exc:  # noqa: BLE001  (a failed batch is retried smaller, then per row)
            failure = ("error", f"{type(exc).__name__}: {_first_line(exc)}")
        # retried outside the except block: the failed attempt's tensors (held by the traceback) are freed first
        import gc

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        kind, message = failure
        if len(batch) == 1:
            code = OOM if kind == "oom" else MODEL
            what = f"out of GPU memory on one clip ({message})" if kind == "oom" else message
            return [CaptionResult(error=format_error(code, what))]
        if kind == "oom":
            half = len(batch) // 2  # a smaller batch often fits; results keep their order
            self._fits = half if self._fits is None else min(self._fits, half)
            return self._generate_guarded(batch[:half], prepare) + self._generate_guarded(batch[half:], prepare)
        return [r for one in batch for r in self._generate_guarded([one], prepare)]  # isolate the bad row

    def generation_config(self):
        import copy

        cfg = copy.deepcopy(self.model.generation_config)
        temp = float(self.options.temperature or 0.0)
        cfg.do_sample = temp > 0
        cfg.temperature = temp if temp > 0 else None
        if temp <= 0:  # the checkpoint's sampling defaults would only warn under greedy decoding
            cfg.top_p = cfg.top_k = None
        cfg.num_beams = 1
        cfg.max_new_tokens = int(self.options.max_new_tokens)
        cfg.max_length = None
        cfg.eos_token_id = list(self.eos)
        cfg.pad_token_id = self.pad_id
        if self.options.ignore_eos:  # benchmarks: every caption exactly max_new_tokens long
            cfg.min_new_tokens = cfg.max_new_tokens
        if self._decoding is not None:
            apply_decoding(cfg, self._decoding)
        return cfg

    def generate(self, prepared: Prepared) -> list[CaptionResult]:
        import torch

        inputs = {k: to_device(v, self.device, self.dtype) for k, v in prepared.inputs.items()}
        n_in = inputs["input_ids"].shape[1]
        cfg = self.generation_config()
        limits = [m or cfg.max_new_tokens for m in prepared.max_new]
        if limits:  # drawn lengths (bench --lengths): a static batch runs until its longest caption is done
            cfg.max_new_tokens = max(limits)
            if cfg.min_new_tokens:  # ignore_eos
                cfg.min_new_tokens = cfg.max_new_tokens
        if self._decoding is not None and self._decoding.seed is not None:
            torch.manual_seed(self._decoding.seed)  # a heal attempt samples the same way every run
        extra = generate_kwargs(self, int(inputs["input_ids"].shape[0]), n_in)  # the schema's grammar, if any
        with torch.inference_mode():
            out = self.model.generate(**inputs, generation_config=cfg, **extra)
        new = out[:, n_in:].tolist()
        if limits:
            new = [ids[:m] for ids, m in zip(new, limits, strict=False)]
        return self.decode(new, prepared.prompt_tokens)

    def decode(self, new_tokens: list[list[int]], prompt_tokens: list[int]) -> list[CaptionResult]:
        results = []
        for ids, n_in in zip(new_tokens, prompt_tokens, strict=False):
            stop = next((i for i, t in enumerate(ids) if t in self.eos), None)
            kept = ids if stop is None else ids[:stop]
            raw = self.tokenizer.decode(kept, skip_special_tokens=True)
            text = self.postprocess(raw)
            res = CaptionResult(
                text=text,
                prompt_tokens=int(n_in),
                completion_tokens=len(ids) if stop is None else stop + 1,
                finish_reason="length" if stop is None else "stop",
            )
            if text != raw and hasattr(res, "raw_text"):
                res.raw_text = raw
            results.append(res)
        return results

    def teardown(self) -> None:
        if self.model is None:
            return
        import gc

        import torch

        if self._engine is not None:
            self._engine_stats = self._engine.stats
        self.model = self._engine = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _snapshot_revision(path: Path | None) -> str | None:
    """The commit hash of a Hub snapshot dir (…/snapshots/<hash>), None for a plain local dir."""
    if path is not None and path.parent.name == "snapshots":
        return path.name
    return None


def random_model(auto_cls, path: Path, device: str, dtype):
    """A model of the skeleton's config with random weights, built on the device (benchmarks only)."""
    import torch
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(path)
    torch.manual_seed(0)
    with torch.device(device):
        model = auto_cls.from_config(config, dtype=dtype, attn_implementation="sdpa")
    if (path / "generation_config.json").exists():
        model.generation_config = GenerationConfig.from_pretrained(path)
    return model


def collate_items(items: list[dict], pad_id: int, side: str = "left") -> Prepared:
    """Per-request inputs -> one left-padded batch, as the processor would have made it in one call
    (right-padded for the engine's prefill, where each clip's last token is read at its own length)."""
    import torch

    def pad(v, fill, width):
        p = torch.full((1, width - v.shape[1]), fill, dtype=v.dtype)
        return torch.cat([p, v] if side == "left" else [v, p], 1)

    seq = seq_keys(items[0])
    width = max(it["input_ids"].shape[1] for it in items)
    batch: dict[str, Any] = {}
    keys = list(dict.fromkeys(k for it in items for k in it))  # image and video rows carry different keys
    for k in keys:
        if k in ("n_prompt", "max_new"):
            continue
        vals = [it[k] for it in items if k in it]
        if k in seq:
            fill = pad_id if k == "input_ids" else 0
            batch[k] = torch.cat([pad(v, fill, width) for v in vals])
        elif hasattr(vals[0], "dim") and vals[0].dim() >= 3 and len({v.shape[1] for v in vals}) > 1:
            # anyres pixel_values [images, patches, C, H, W]: pad the patch axis as the processor does
            most = max(v.shape[1] for v in vals)
            batch[k] = torch.cat(
                [torch.nn.functional.pad(v, (0, 0) * (v.dim() - 2) + (0, most - v.shape[1])) for v in vals]
            )
        elif hasattr(vals[0], "dim"):
            batch[k] = torch.cat(vals)
        else:
            batch[k] = vals
    max_new = [it.get("max_new") for it in items] if any("max_new" in it for it in items) else []
    return Prepared(batch, [int(it["n_prompt"]) for it in items], max_new)


def check_tp_split(tp: int, label: str, counts: dict) -> None:
    """Tensor parallelism splits heads (and widths) K ways: refuse, in one sentence, a K that does not divide
    one of `counts` ({"attention heads": 40, ...})."""
    for what, n in counts.items():
        if n and n % tp:
            raise UsageError(
                f"--tp {tp} does not divide the {n} {what} of {label}; pick a --tp that divides "
                f"{n}, or run one model per GPU with --gpus alone."
            )


class WorkerPreprocessor:
    """Runs a backend's `prepare_one` in a decode worker: the processor's CPU work leaves the GPU's path."""

    def __init__(self, backend_cls, preset, options, model_dir: str):
        self.backend_cls, self.preset, self.options, self.model_dir = backend_cls, preset, options, model_dir
        self._backend: Any = None

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_backend"}

    def __setstate__(self, state):
        self.__dict__.update(state, _backend=None)

    def __call__(self, request: CaptionRequest) -> dict:
        return self._loaded().prepare_item(request)

    def _loaded(self):
        if self._backend is None:
            import torch

            torch.set_num_threads(1)  # one core per decode worker; the pool is the parallelism
            backend = self.backend_cls(self.preset, self.options)
            backend.model_dir = Path(self.model_dir)
            backend.load_preprocessor(Path(self.model_dir))
            self._backend = backend
        return self._backend

    def variants(self, requests: list[CaptionRequest]) -> dict:
        """One clip's --variants requests as one family item (see HFCaptionBackend.prepare_variants)."""
        return self._loaded().prepare_variants(requests)


def drawn_length(lengths, path) -> int | None:
    """The caption length for a clip when the bench draws them (`--lengths A:B`): fixed by a seeded hash
    of its path, so the engine and the baseline end every clip's caption at the same token."""
    if not lengths:
        return None
    import random

    low, high = lengths
    return random.Random(f"vidcap-lengths:{path}").randint(int(low), int(high))


def quiet_transformers() -> None:
    """No "Loading weights" / "Writing model shards" bars: a load takes seconds and vidcap shows its own progress.
    Hugging Face Hub download bars stay as they were (a first download can take minutes)."""
    try:
        from huggingface_hub import utils as hub
        from transformers.utils import logging as tf_logging
    except ImportError:
        return
    hub_on = not hub.are_progress_bars_disabled()
    tf_logging.disable_progress_bar()  # also turns the Hub's bars off ...
    if hub_on:
        hub.enable_progress_bars()  # ... so they are turned back on


def warn(message: str) -> None:
    import sys

    print(f"warning: {message}", file=sys.stderr, flush=True)


class _Holding:
    """Wraps an engine source and keeps each item by key until its caption comes back."""

    def __init__(self, source, held: dict):
        self.source, self.held = source, held

    def take(self, n: int, timeout: float = 0.0):
        got = self.source.take(n, timeout)
        for key, item in got or []:
            self.held[key] = item
        return got


def apply_decoding(cfg, decoding) -> None:
    """A heal attempt's settings on a GenerationConfig (vidcap.heal.Decoding; None fields keep the run's)."""
    if decoding.repetition_penalty is not None:
        cfg.repetition_penalty = float(decoding.repetition_penalty)
    if decoding.no_repeat_ngram_size is not None:
        cfg.no_repeat_ngram_size = int(decoding.no_repeat_ngram_size)
    if decoding.max_new_tokens is not None:
        cfg.max_new_tokens = int(decoding.max_new_tokens)
    if decoding.samples:
        cfg.do_sample, cfg.temperature = True, float(decoding.temperature)
        cfg.top_p = decoding.top_p
