"""Continuous batching over the engine's slots: clips flow in from a source as the decode workers finish
them, a group of new clips is prefilled into whichever slots are free, and every decode step advances
all active slots; a caption that ends (EOS or its length) frees its slot at once.

Nothing is lost on the way: a clip the engine cannot take (a prompt longer than the cache, a failure
inside the engine) is handed back as `fallback` for the plain generate() path, and a prefill group that
runs out of memory is split until it fits (one clip that alone does not fit is that clip's `oom` error).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import OOM, format_error
from ..errors import first_line as _first_line
from ..knobs import knob
from .fused import FusedPrefill
from .grammar import ConstrainedDecoding
from .lm import DecoderLM, Unsupported, find_parts
from .prefill import cache_kwarg, common_prefix, context_error, placeholder_ids, seq_keys, slot_cache, to_device
from .variants import VariantAdmission, VariantStats, entry_keys, fit_count, flat, slots_in
from .vision import GroupedVision

IDLE_WAIT_S = 0.5  # how long an idle engine waits for a clip before looking again
MIN_PREFIX = 32  # a shared prefix shorter than this is not worth a second attention pass


@dataclass
class EngineOut:
    key: Any
    tokens: list[int] = field(default_factory=list)  # generated ids, the EOS included when it ended one
    finish: str = "length"  # "stop" | "length" | "error" | "fallback"
    error: str = ""  # "code: message" when finish is "error"


@dataclass
class EngineStats:
    """What the engine did, for the run summary, run.json and the bench (it checks itself)."""

    fast_path: bool = False
    reason: str = "not started"
    slots: int = 0
    cache_tokens: int = 0
    prefix_tokens: int = 0
    graphs: list[int] = field(default_factory=list)
    capture_s: float = 0.0
    allocate_s: float = 0.0  # the cache, the shared prefix, the kernel checks and the graphs (first group)
    prefills: int = 0
    prefill_rows: int = 0
    prefill_s: float = 0.0
    steps: int = 0
    decode_s: float = 0.0
    decode_tokens: int = 0
    slot_steps: int = 0  # sum over steps of the batch bucket run (occupancy = decode_tokens / slot_steps)
    replays: int = 0
    eager_steps: int = 0
    rows: int = 0
    fallback_rows: int = 0
    oom_splits: int = 0
    attention: str = ""
    vision_attention: str = ""
    fused_kernels: str = ""
    started: float = 0.0  # perf_counter at run start
    first_item_s: float | None = None  # when the first clip reached the engine
    first_row_s: float | None = None  # when the first caption was done
    first_admit_s: float | None = None  # when the first group's prefill began
    frames_wait_s: float = 0.0  # time the engine sat idle waiting for the decode workers' next clip
    ended: float = 0.0  # perf_counter when the run's last caption was out
    constrained_steps: int = 0  # decode steps with a grammar mask (vidcap.engine.grammar)
    mask_cpu_s: float = 0.0  # CPU time advancing matchers, filling and uploading mask rows (inside decode_s)
    variants: VariantStats = field(default_factory=VariantStats)  # --variants: the shared prefill

    def summary(self) -> dict:
        ms = 1e3 * self.decode_s / self.steps if self.steps else None
        return {
            "fast_path": self.fast_path,
            "fast_path_reason": self.reason,
            "slots": self.slots,
            "cache_tokens": self.cache_tokens,
            "shared_prefix_tokens": self.prefix_tokens,
            "graph_buckets": self.graphs,
            "attention": self.attention,
            "vision_attention": self.vision_attention,
            "fused_kernels": self.fused_kernels,
            "graph_replays": self.replays,
            "eager_steps": self.eager_steps,
            "capture_s": round(self.capture_s, 3),
            "allocate_s": round(self.allocate_s, 3),
            "first_admit_s": _round(self.first_admit_s),
            "decode_steps": self.steps,
            "decode_ms_per_step": round(ms, 3) if ms else None,
            "decode_tokens_per_s": round(self.decode_tokens / self.decode_s, 1) if self.decode_s else None,
            "slot_occupancy": round(self.decode_tokens / self.slot_steps, 3) if self.slot_steps else None,
            "prefills": self.prefills,
            "prefill_rows": self.prefill_rows,
            "prefill_s": round(self.prefill_s, 3),
            "rows": self.rows,
            "fallback_rows": self.fallback_rows,
            "oom_splits": self.oom_splits,
            "first_item_s": _round(self.first_item_s),
            "first_row_s": _round(self.first_row_s),
            "frames_wait_s": round(self.frames_wait_s, 3),
            "frames_wait_after_first_s": round(self.frames_wait_s - (self.first_item_s or 0.0), 3),
            "busy_share": self.busy_share(),
            "constrained_steps": self.constrained_steps,
            "mask_cpu_ms_per_step": round(1e3 * self.mask_cpu_s / self.constrained_steps, 3)
            if self.constrained_steps
            else None,
            "variants": self.variants.summary(),
        }

    def busy_share(self) -> float | None:
        """Share of the run's time (first clip in to last caption out) the engine spent in prefill and
        decode steps, the GPU's work; the rest is waiting for clips and Python between steps."""
        span = self.ended - self.started - (self.first_item_s or 0.0)
        return round(min(1.0, (self.prefill_s + self.decode_s) / span), 3) if span > 0 else None


@dataclass
class _Seq:
    key: Any
    limit: int
    tokens: list[int]


class Engine(VariantAdmission, ConstrainedDecoding):
    """`run(source)` yields an EngineOut per item, in the order they finish; keys are hashable and unique
    within a run. An item is a dict of CPU tensors from the backend's `prepare_one` (`input_ids`, masks, pixels, `n_prompt`, optional `max_new`)."""

    def __init__(
        self,
        model,
        *,
        slots: int,
        max_new_tokens: int,
        eos: list[int],
        pad_id: int,
        device,
        dtype,
        collate,
        ignore_eos: bool = False,
        graphs: bool = True,
        prefill_tokens: int = 16384,
        first_wait_s: float = 0.5,
        attention: str = "auto",
        fused: str | None = None,
    ):
        self.model, self.want_slots, self.max_new = model, max(1, int(slots)), int(max_new_tokens)
        self.eos, self.pad_id, self.device, self.dtype = set(eos), pad_id, device, dtype
        self.collate, self.ignore_eos = collate, ignore_eos
        self.use_graphs = graphs and str(device).startswith("cuda")
        self.prefill_tokens, self.first_wait_s = prefill_tokens, first_wait_s
        self.static = False  # True: admit only into an empty engine (static batches; the bench's comparison)
        self.attention = attention  # "auto": Triton on CUDA once it passes its check; "triton" forces it (tests)
        self.parts = find_parts(model)  # raises Unsupported
        self.max_positions = max_positions(model)
        self.base = model.model
        self.kw = cache_kwarg(self.base)
        self.vision = GroupedVision(model)  # batched windowed attention in Qwen-VL vision towers (prefill only)
        fused = fused or knob("VIDCAP_PREFILL_KERNELS")  # "off": transformers' modules
        self.fused = FusedPrefill(self.parts.lm, device, fused)  # Triton norm/MLP/rotary kernels (prefill only)
        self.stats = EngineStats(reason="ready")
        self.lm: DecoderLM | None = None
        self.prefix: list[int] = []
        self.active: dict[int, _Seq | None] = {}  # None: reserved while its prefill runs
        self.out: list[EngineOut] = []
        self.broken = ""
        self.buckets: list[int] = []  # batch buckets of the decode step's CUDA graphs (planned at allocation)
        self.placeholders = placeholder_ids(model.config)

    def reset_stats(self) -> None:
        """Zero the counters (the bench measures each run alone); the engine's setup figures stay."""
        old = self.stats
        self.stats = EngineStats(
            fast_path=old.fast_path,
            reason=old.reason,
            slots=old.slots,
            cache_tokens=old.cache_tokens,
            prefix_tokens=old.prefix_tokens,
            graphs=old.graphs,
            attention=old.attention,
            vision_attention=old.vision_attention,
            fused_kernels=old.fused_kernels,
            capture_s=old.capture_s,
            allocate_s=old.allocate_s,
            started=time.perf_counter(),
        )
        if self.lm is not None:
            self.cache.replays = self.cache.eager_steps = 0

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, source) -> Iterator[EngineOut]:
        import torch

        pending: deque = deque()
        exhausted = False
        self.stats.started = time.perf_counter()
        self.active.clear()  # a run interrupted in this process (Ctrl-C in the bench) left its slots taken
        self.out = []
        with torch.inference_mode():
            while True:
                if not exhausted:
                    exhausted = self._pull(source, pending)
                if self.broken:  # everything not finished goes back to the plain path
                    self.out += [EngineOut(key, finish="fallback") for key, _ in pending]
                    self.out += [EngineOut(s.key, finish="fallback") for s in self.active.values() if s is not None]
                    pending.clear()
                    self.active.clear()
                elif pending and self._should_admit(len(pending), exhausted):
                    take = fit_count(pending, self.free_slots(), self.cache.slots if self.lm else self.want_slots)
                    if self.lm is None:
                        take = min(take, self.first_group())
                    group = [pending.popleft() for _ in range(take)]
                    pending.extendleft(reversed(self._guarded(self._admit, group) or []))
                if self.active and not self.broken:
                    self._guarded(self._step)
                self.stats.ended = time.perf_counter()
                yield from self.out
                self.out = []
                if exhausted and not pending and not self.active:
                    return

    def _pull(self, source, pending: deque) -> bool:
        """Top up the pending queue; True once the source is exhausted."""
        want = (
            self.want_slots - len(self.active) - slots_in(pending)
            if self.lm is None
            else self.free_slots() - slots_in(pending)
        )
        idle = not self.active and not pending
        if want <= 0 and not idle:
            return False
        t0 = time.perf_counter()
        got = source.take(max(want, 1), IDLE_WAIT_S if idle else 0.0)
        if idle:  # nothing to compute until a clip comes
            self.stats.frames_wait_s += time.perf_counter() - t0
        if got is None:
            return True
        if got and self.stats.first_item_s is None:
            self.stats.first_item_s = time.perf_counter() - self.stats.started
        pending.extend(got)
        first = self.first_group()
        if self.lm is None and pending and len(pending) < first:
            # the first group decides the shared prefix and the cache length: give it a moment to fill
            # (two clips at least, a few seconds more if need be: one alone cannot show a shared prefix)
            deadline = time.monotonic() + self.first_wait_s
            while len(pending) < first:
                late = time.monotonic() - deadline
                if (late > 0 and len(pending) >= 2) or late > 5.0:
                    break
                t0 = time.perf_counter()
                more = source.take(first - len(pending), IDLE_WAIT_S)
                self.stats.frames_wait_s += time.perf_counter() - t0
                if more is None:
                    return True
                pending.extend(more)
        return False

    def first_group(self) -> int:
        """How many clips the first prefill takes: half the slots, so the first captions are out after a
        shorter prefill and faster decode steps (issue 16: first batch <= 10 s after the model loads); the
        other half fills as soon as they are. Static batches (the bench's comparison) take them all."""
        return self.want_slots if self.static else min(self.want_slots, max(8, self.want_slots // 2))

    @property
    def cache(self) -> DecoderLM:
        """The slot cache (allocated with the first group of clips)."""
        assert self.lm is not None, "the engine's cache is allocated with the first clips"
        return self.lm

    def free_slots(self) -> int:
        return (self.cache.slots if self.lm else self.want_slots) - len(self.active)

    def _should_admit(self, n_pending: int, exhausted: bool) -> bool:
        free = self.free_slots()
        if free <= 0:
            return False
        if not self.active:
            return True
        if self.static:
            return False
        if self.stats.first_row_s is None:
            # until the first caption is done, refills would pause the first group's decoding: the first
            # rows reach the output one decode length after the first prefill (issue 16: <= 10 s)
            return False
        if exhausted:
            return True
        # refill in groups: each prefill call pauses every active slot and has a fixed cost, so one call
        # per freed slot (measured: 1.6 clips per call on --lengths 40:300) loses more than a few idle slots
        slots = self.cache.slots if self.lm else self.want_slots
        return free >= max(1, slots // 8)

    def _guarded(self, fn, *args):
        import torch

        try:
            return fn(*args)
        except torch.cuda.OutOfMemoryError as exc:
            self._break(f"out of GPU memory in the engine ({_first_line(exc)})", args)
        except (Unsupported, RuntimeError, ValueError, IndexError, TypeError) as exc:
            self._break(f"{type(exc).__name__}: {_first_line(exc)}", args)
        return None

    def _break(self, why: str, args) -> None:
        """The engine failed: what was in its hands goes back (once each) to the plain path."""
        self.broken = why
        self.stats.fast_path = False
        self.stats.reason = f"engine stopped, rest through generate(): {why}"
        placed = {o.key for o in self.out} | {s.key for s in self.active.values() if s is not None}
        self.active = {slot: s for slot, s in self.active.items() if s is not None}
        for key, item in args[0] if args else []:
            for k in entry_keys(key, item):  # a family's variants one by one
                if k not in placed:
                    self.out.append(EngineOut(k, finish="fallback"))

    # -- admitting new clips ---------------------------------------------------------------------------
    def _admit(self, group: list) -> list:
        """Prefill what fits into free slots; returns the clips left over (the cache took fewer slots)."""
        if self.stats.first_admit_s is None:
            self.stats.first_admit_s = time.perf_counter() - self.stats.started
        if self.lm is None:
            t0 = time.perf_counter()
            self._allocate(group)
            self.stats.allocate_s = time.perf_counter() - t0
        fit = fit_count(group, self.free_slots(), self.cache.slots)
        group, rest = group[:fit], group[fit:]
        fams, group = self._split_families(group)  # --variants: families that share their visual prefill
        prefixed: list[tuple] = []
        plain: list[tuple] = []
        p = self.cache.prefix_len
        for key, item in group:
            ids = item["input_ids"][0].tolist()
            limit = int(item.get("max_new") or self.max_new)
            too_long = context_error(len(ids), limit, self.max_positions)
            if too_long:
                self.out.append(EngineOut(key, finish="error", error=too_long))
                continue
            shared = p > 0 and ids[:p] == self.prefix
            need = len(ids) - (p if shared else 0) + limit
            if need > self.cache.length:
                self.out.append(EngineOut(key, finish="fallback"))
                self.stats.fallback_rows += 1
                continue
            (prefixed if shared else plain).append((key, item, limit))
        for batch, shared in ((prefixed, True), (plain, False)):
            if batch:
                self._prefill_split(batch, shared)
        if fams:
            self._admit_families(fams)
        return rest

    def _prefill_split(self, batch: list, shared: bool) -> None:
        """Prefill in chunks of at most `prefill_tokens`; a chunk out of memory is halved (a lone clip
        out of memory is that clip's error), and the budget stays lowered."""
        chunk: list = []
        tokens = 0
        for entry in batch:
            n = int(entry[1]["input_ids"].shape[1])
            if chunk and (tokens + n > self.prefill_tokens):
                self._prefill_halving(chunk, shared)
                chunk, tokens = [], 0
            chunk.append(entry)
            tokens += n
        if chunk:
            self._prefill_halving(chunk, shared)

    def _prefill_halving(self, chunk: list, shared: bool) -> None:
        import torch

        failed = None
        try:
            self._prefill(chunk, shared)
            return
        except torch.cuda.OutOfMemoryError as exc:
            failed = _first_line(exc)
        _free_memory()
        self.stats.oom_splits += 1
        if len(chunk) == 1:
            what = f"out of GPU memory on one clip ({failed})"
            self.out.append(EngineOut(chunk[0][0], finish="error", error=format_error(OOM, what)))
            return
        self.prefill_tokens = max(1, min(self.prefill_tokens, sum(int(c[1]["input_ids"].shape[1]) for c in chunk) // 2))
        half = len(chunk) // 2
        self._prefill_halving(chunk[:half], shared)
        self._prefill_halving(chunk[half:], shared)

    def _prefill(self, chunk: list, shared: bool) -> None:
        import torch

        t0 = time.perf_counter()
        lm = self.cache
        p = lm.prefix_len if shared else 0
        items = [_drop_prefix(item, p) for _, item, _ in chunk]
        lengths = [int(it["input_ids"].shape[1]) for it in items]
        inputs = {k: to_device(v, self.device, self.dtype) for k, v in self.collate(items).items()}
        slots = self._take_slots(len(chunk))
        slot_t = torch.tensor(slots, device=self.device)
        if shared:
            ones = torch.ones(len(chunk), p, dtype=inputs["attention_mask"].dtype, device=self.device)
            inputs["attention_mask"] = torch.cat((ones, inputs["attention_mask"]), dim=1)
        sinks = [_sink(lm, i, slot_t) for i in range(len(self.parts.layers))]
        prefixes = [(lm.pk[i], lm.pv[i]) for i in range(len(self.parts.layers))] if shared else None
        inputs[self.kw] = slot_cache(len(self.parts.layers), sinks, prefixes)
        self.vision.set(self.vision.enabled())
        self.fused.set(self.fused.enabled())
        try:
            hidden = self.base(**inputs, use_cache=True, return_dict=True).last_hidden_state
        except BaseException:
            self._release(slots)
            raise
        finally:
            self.vision.set(False)
            self.fused.set(False)
            self.stats.vision_attention = self.vision.summary()
            self._report_fused()
        n = torch.tensor(lengths, device=self.device)
        last = hidden[torch.arange(len(chunk), device=self.device), n - 1]
        first = self._first_tokens(self.parts.head(last), slots)  # last_hidden_state is after the final norm
        rope = n + p
        deltas = getattr(self.base, "rope_deltas", None) if self.parts.mrope else None
        if deltas is not None:
            rope = n + deltas.view(-1).to(n.device)
        lm.start(slot_t, first, n, rope, shared)
        firsts = first.tolist()
        self.stats.prefills += 1
        self.stats.prefill_rows += len(chunk)
        self.stats.prefill_s += time.perf_counter() - t0
        for slot, (key, _, limit), tok in zip(slots, chunk, firsts, strict=False):
            seq = _Seq(key, limit, [])
            self.active[slot] = seq
            self._append(slot, seq, tok)

    def _emit(self, key, finish: str, error: str = "") -> None:
        self.out.append(EngineOut(key, finish=finish, error=error))

    def _arm(self, slot: int, key, limit: int, tok: int) -> None:
        seq = _Seq(key, limit, [])
        self.active[slot] = seq
        self._append(slot, seq, tok)

    def _take_slots(self, n: int) -> list[int]:
        free = [s for s in range(self.cache.slots) if s not in self.active]  # lowest first: small buckets
        taken = free[:n]
        for s in taken:
            self.active[s] = None  # reserved until started
        return taken

    def _release(self, slots: list[int]) -> None:
        for s in slots:
            self.active.pop(s, None)

    # -- decoding ------------------------------------------------------------------------------------------
    def _step(self) -> None:
        top = max(self.active) + 1
        b = next((g for g in self.buckets if g >= top), top)
        if b not in self.cache.graphs and self.buckets:
            self._capture_bucket(b)  # counted in capture_s, not in the decode time
        t0 = time.perf_counter()
        # a grammar's mask rows are filled while the GPU runs the step's layers (DecoderLM.step's `between`)
        toks = self.cache.step(b, lambda: self._grammar_before_step(b)).tolist()
        self.stats.steps += 1
        self.stats.decode_s += time.perf_counter() - t0
        self.stats.slot_steps += b
        self.stats.decode_tokens += len(self.active)
        for slot, seq in list(self.active.items()):
            if seq is not None:
                self._append(slot, seq, toks[slot])
        self.stats.replays, self.stats.eager_steps = self.cache.replays, self.cache.eager_steps

    def _append(self, slot: int, seq: _Seq, tok: int) -> None:
        self._grammar_advance(slot, tok)
        seq.tokens.append(int(tok))
        stop = not self.ignore_eos and tok in self.eos
        if stop or len(seq.tokens) >= seq.limit:
            del self.active[slot]
            self.stats.rows += 1
            if self.stats.first_row_s is None:
                self.stats.first_row_s = time.perf_counter() - self.stats.started
            self.out.append(EngineOut(seq.key, seq.tokens, "stop" if stop else "length"))

    # -- the cache, the shared prefix, the graphs -------------------------------------------------------
    def _allocate(self, group: list) -> None:
        import torch

        parts = self.parts
        group = flat(group)  # a family's variants count one by one
        prefix: list[int] = []
        if not parts.mrope and len(group) > 1:
            prefix = common_prefix([it["input_ids"][0].tolist() for _, it in group], placeholder_ids(self.model.config))
            prefix = prefix if len(prefix) >= MIN_PREFIX else []
        longest = max(int(it["input_ids"].shape[1]) for _, it in group) - len(prefix)
        limit = max(int(it.get("max_new") or self.max_new) for _, it in group)
        # a little room for longer prompts (other aspect ratios, longer texts); every step reads all of it
        length = _round_up(longest + longest // 16 + 16 + max(limit, self.max_new), 64)
        slots = self.want_slots
        per_slot = 2 * len(parts.layers) * parts.kv_heads * length * parts.head_dim * self.dtype.itemsize
        if str(self.device).startswith("cuda"):
            _free_memory()  # blocks the caching allocator holds count as free
            free, total = torch.cuda.mem_get_info(torch.device(self.device))
            room = free - max(4 << 30, int(0.1 * total))  # prefill activations and the vision tower need room too
            slots = max(1, min(slots, room // per_slot))
        while True:
            try:
                self.lm = DecoderLM(parts, slots, length, self.device, self.dtype)
                break
            except torch.cuda.OutOfMemoryError:
                _free_memory()
                if slots == 1:
                    raise
                slots //= 2
                self.stats.oom_splits += 1
        self._arm_grammar()
        if prefix:
            self._set_prefix(prefix)
        self.stats.slots, self.stats.cache_tokens, self.stats.prefix_tokens = slots, length, len(prefix)
        self.stats.fast_path, self.stats.reason = True, "decode step run eagerly (no CUDA)"
        self.stats.attention = "matmul over the whole cache"
        why = self._attention_check()
        if why != "not used":
            self.cache.triton = why is None
            self.stats.attention = "triton (each slot read up to its length)" if why is None else f"matmul: {why}"
        if self.fused.enabled() and self.fused.covers_decode(parts.lm):
            self.cache.fused = self.fused.ready()  # the decode step uses the checked kernels too
        self._report_fused()
        if self.use_graphs:
            self._capture()

    def warm(self) -> None:
        """What needs no clip, done right after the model loads while the decode workers start on the first
        clips: the Triton kernels' checks (the kernels compiled during the load: `fused.precompile`)."""
        import torch

        with torch.inference_mode():
            self._attention_check()
            if self.fused.enabled():
                self.fused.ready()

    _attention_why: str | None = "unchecked"

    def _attention_check(self) -> str | None:
        """None when the Triton decode attention passed its check on this GPU, else why not ("not used" off
        CUDA unless forced); checked once per engine."""
        if not (self.attention == "triton" or (self.use_graphs and self.attention == "auto")):
            return "not used"
        if self._attention_why == "unchecked":
            from .attention import self_check

            p = self.parts
            self._attention_why = self_check(self.device, self.dtype, p.heads, p.kv_heads, p.head_dim)
        return self._attention_why

    def _report_fused(self) -> None:
        decode = self.lm is not None and self.lm.fused
        self.stats.fused_kernels = self.fused.summary() + ("; the decode step uses them too" if decode else "")

    def _set_prefix(self, prefix: list[int]) -> None:
        """Keys and values of the shared prompt prefix, computed once by the language model itself."""
        import torch

        keys: list = []
        values: list = []

        def keep(k, v) -> None:
            keys.append(k[0])
            values.append(v[0])

        sinks = [keep for _ in self.parts.layers]
        cache = slot_cache(len(self.parts.layers), sinks, None)
        ids = torch.tensor([prefix], device=self.device)
        self.parts.lm(input_ids=ids, use_cache=True, **{cache_kwarg(self.parts.lm): cache})
        self.cache.pk = torch.stack(keys).contiguous()
        self.cache.pv = torch.stack(values).contiguous()
        self.prefix = prefix

    def _capture(self) -> None:
        """Plan the batch buckets and capture the one the first group decodes in; the others are captured
        when first needed (each ~0.3 s: the first captions do not wait for graphs they do not use)."""
        s = self.cache.slots
        self.buckets = sorted({max(1, s // d) for d in (1, 2, 4, 8)})
        self.stats.reason = f"CUDA graphs for batch buckets {self.buckets} (each captured on first use)"
        first = min(self.first_group(), s)
        self._capture_bucket(next(b for b in self.buckets if b >= first))

    def _capture_bucket(self, b: int) -> None:
        import torch

        t0 = time.perf_counter()
        try:
            self.cache.capture([b], keep_state=self.lm is not None and bool(self.active))
        except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
            self.cache.graphs.pop(b, None)
            _free_memory()
            self.buckets = []  # no more captures: steps without a graph run eagerly (counted in eager_steps)
            self.stats.fast_path = bool(self.cache.graphs)
            self.stats.reason = f"CUDA graph capture failed, decode runs eagerly: {_first_line(exc)}"
        self.stats.graphs = sorted(self.cache.graphs)
        self.stats.capture_s += time.perf_counter() - t0


def max_positions(model) -> int | None:
    """How many positions the language model was built for (None: not stated)."""
    config = getattr(model, "config", None)
    get_text = getattr(config, "get_text_config", None)
    text = get_text() if get_text is not None else config
    value = getattr(text, "max_position_embeddings", None)
    return int(value) if value else None


def _sink(lm: DecoderLM, layer: int, slots):
    return lambda k, v: lm.write(layer, slots, k, v)


def _drop_prefix(item: dict, p: int) -> dict:
    if p == 0:
        return item
    cut = set(seq_keys(item))
    return {k: (v[:, p:] if k in cut else v) for k, v in item.items()}


def _round_up(n: int, k: int) -> int:
    return -(-n // k) * k


def _round(x: float | None) -> float | None:
    return None if x is None else round(x, 3)


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
