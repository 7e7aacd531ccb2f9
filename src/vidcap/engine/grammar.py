"""Decoding constrained to a JSON Schema with llguidance (`vidcap[structured]`), for the engine and generate().

The engine's decode step stays one CUDA graph: it reads a static int32 bitmask [slots, ceil(vocab/32)] on
the device, unpacks it and masks the logits before its argmax. Between steps the CPU advances each
constrained slot's matcher by the token it got and fills that slot's row (slots without a grammar keep all
ones), and one host->device copy carries the rows. llguidance computes a mask in tens of microseconds
(Earley parser over the tokenizer's trie) and fills many slots in parallel threads; why not our own: a
correct JSON Schema -> token automaton over a byte-level BPE vocabulary is that library's whole job.
"""

from __future__ import annotations

import time
from typing import Any

from ..errors import UsageError

# Compact JSON (no whitespace between tokens: nothing for a model to loop on) and only the escapes a
# caption needs (no \uXXXX: a string's characters then bound its tokens).
JSON_OPTIONS = {"whitespace_flexible": False, "json_allowed_escapes": 'nt"\\'}
INSTALL_HINT = "pip install 'vidcap[structured]'"


def available() -> bool:
    try:
        import llguidance  # noqa: F401
    except ImportError:
        return False
    return True


class Grammar:
    """A JSON Schema compiled for one tokenizer and vocabulary; `matcher()` gives a fresh per-caption state."""

    def __init__(self, schema: dict, tokenizer, vocab_size: int, eos: list[int]):
        import llguidance
        import llguidance.hf

        fast = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's tokenizer
        try:
            self.tokenizer = llguidance.hf.from_tokenizer(fast, n_vocab=int(vocab_size), eos_token=list(eos) or None)
        except (ValueError, TypeError) as exc:
            raise UsageError(f"constrained decoding needs a fast (Rust) tokenizer: {exc}.") from None
        self.grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)  # type: ignore[arg-type]
        failed, messages = llguidance.LLMatcher.validate_grammar_with_warnings(self.grammar, self.tokenizer)
        if failed or messages:
            raise UsageError(f"the schema cannot constrain decoding: {messages[0] if messages else 'invalid'}.")
        self.vocab = int(vocab_size)
        self.words = (self.vocab + 31) // 32
        self._executor: Any = None

    def matcher(self):
        import llguidance

        return llguidance.LLMatcher(self.tokenizer, self.grammar, log_level=0)

    def executor(self):
        """llguidance's thread pool that fills many slots' masks at once."""
        if self._executor is None:
            import llguidance

            self._executor = llguidance.LLExecutor()
        return self._executor


def shifts(device):
    import torch

    return torch.arange(32, dtype=torch.int32, device=device)


def apply_bitmask(logits, words, bit_shifts):
    """`logits` [b, V] with every token whose bit is 0 in `words` [b, ceil(V/32)] (int32) set to -inf; plain
    tensor ops, so it runs inside a captured CUDA graph."""
    b, v = logits.shape
    bits = ((words.unsqueeze(-1) >> bit_shifts) & 1).view(b, -1)[:, :v]
    return logits.masked_fill(bits == 0, float("-inf"))


class SlotMasks:
    """The engine's per-slot matchers and the host side of its bitmask (pinned on CUDA, so the copy to the
    device is one asynchronous transfer). A slot without a matcher keeps an all-ones row."""

    PARALLEL_FROM = 4  # slots at which llguidance's thread pool beats filling one by one

    def __init__(self, grammar: Grammar, slots: int, device):
        import torch

        self.grammar, self.device = grammar, device
        pin = str(device).startswith("cuda")
        self.host = torch.full((slots, grammar.words), -1, dtype=torch.int32, pin_memory=pin)
        self.matchers: dict[int, Any] = {}
        self.dirty: set[int] = set()
        self.pending: list[tuple[int, int]] = []  # (slot, token) of the last step, consumed in `fill`
        self.cpu_s = 0.0  # matcher advances, mask fills and the copy's launch
        self.fills = 0

    def start(self, slots: list[int]) -> None:
        new = set(slots)
        self.pending = [(s, t) for s, t in self.pending if s not in new]  # a reused slot's last token stays behind
        for slot in slots:
            self.matchers[slot] = self.grammar.matcher()
            self.dirty.add(slot)

    def advance(self, slot: int, token: int) -> None:
        """The slot's caption got `token`; its matcher takes it at the next `fill` (all slots at once)."""
        if slot in self.matchers:
            self.pending.append((slot, int(token)))

    def _consume(self) -> None:
        """The tokens of the last step into their matchers, in llguidance's thread pool when there are many. A
        matcher that refuses its token (it cannot, under its own mask) lets the slot go unconstrained (an
        all-ones row); the stage's schema check then judges the caption. A stopped matcher (the JSON is
        complete) keeps its row, which allows EOS alone, until the caption ends."""
        todo = [(s, t) for s, t in self.pending if s in self.matchers and not self.matchers[s].is_stopped()]
        self.pending.clear()
        if len(todo) >= self.PARALLEL_FROM:
            ok = self.grammar.executor().consume_token_par([(self.matchers[s], t) for s, t in todo])
        else:
            ok = [self.matchers[s].consume_token(t) for s, t in todo]
        for (slot, _), good in zip(todo, ok, strict=True):
            if good:
                self.dirty.add(slot)
            else:
                self.release(slot)

    def release(self, slot: int) -> None:
        if self.matchers.pop(slot, None) is not None:
            self.host[slot].fill_(-1)
        self.dirty.discard(slot)
        self.pending = [(s, t) for s, t in self.pending if s != slot]

    def keep_only(self, active) -> None:
        for slot in [s for s in self.matchers if s not in active]:
            self.release(slot)

    def fill(self) -> bool:
        """Advance the matchers by the last step's tokens and fill the rows of those that moved; True when
        any row changed."""
        t0 = time.perf_counter()
        if self.pending:
            self._consume()
        if not self.dirty:
            self.cpu_s += time.perf_counter() - t0
            return False
        todo = [(self.matchers[s], s) for s in sorted(self.dirty)]
        if len(todo) >= self.PARALLEL_FROM:
            fill_rows_par(self.grammar.executor(), todo, self.host)
        else:
            for m, s in todo:
                fill_row(m, self.host, s)
        self.dirty.clear()
        self.fills += 1
        self.cpu_s += time.perf_counter() - t0
        return True

    def upload(self, target, rows: int) -> None:
        t0 = time.perf_counter()
        target[:rows].copy_(self.host[:rows], non_blocking=True)
        self.cpu_s += time.perf_counter() - t0

    def rows(self, slots: list[int]):
        """The host rows of `slots` on the device (the prefill's first tokens)."""
        import torch

        return self.host[torch.tensor(slots)].to(self.device)


# llguidance.torch's fill helpers, without importing that module (its torch.compile decorator loads dynamo:
# seconds at first use)
def fill_row(matcher, host, row: int) -> None:
    v = host[row]
    matcher.unsafe_compute_mask_ptr(v.data_ptr(), v.numel() * v.element_size())


def fill_rows_par(executor, todo: list, host) -> None:
    executor.unsafe_compute_mask_ptr(todo, host.data_ptr(), host.shape[1] * 4, host.shape[0])


def logits_processor(grammar: Grammar, batch: int, n_prompt: int):
    """A transformers LogitsProcessor constraining each of `batch` rows of one generate() call."""
    from transformers import LogitsProcessor

    class _Constrained(LogitsProcessor):
        def __init__(self) -> None:
            self.matchers: list[Any] = [grammar.matcher() for _ in range(batch)]
            self.host: Any = None
            self.bit_shifts: Any = None

        def __call__(self, input_ids, scores):
            import torch

            if self.host is None:
                self.host = torch.full((batch, grammar.words), -1, dtype=torch.int32)
                self.bit_shifts = shifts(scores.device)
            if input_ids.shape[1] > n_prompt:
                last = input_ids[:, -1].tolist()
                for i, m in enumerate(self.matchers):
                    if m is not None and not m.is_stopped() and not m.consume_token(int(last[i])):
                        self.matchers[i] = None
                        self.host[i].fill_(-1)
            for i, m in enumerate(self.matchers):
                if m is not None:
                    fill_row(m, self.host, i)
            return apply_bitmask(scores, self.host.to(scores.device), self.bit_shifts)

    return _Constrained()


class ConstrainedDecoding:
    """The Engine's side of constrained decoding (mixed into vidcap.engine.Engine): a matcher per slot
    whose caption follows `grammar`, the first token masked at prefill, each later token masked inside the
    decode step by the rows uploaded before it."""

    grammar: Grammar | None = None  # set by the backend before the engine's first clip
    masks: SlotMasks | None = None
    # provided by Engine
    cache: Any
    device: Any
    stats: Any
    active: dict

    def _arm_grammar(self) -> None:
        """Right after the cache is allocated, before any graph is captured: the step reads the mask."""
        if self.grammar is None:
            return
        self.masks = SlotMasks(self.grammar, self.cache.slots, self.device)
        self.cache.use_mask(self.grammar.words)

    def _first_tokens(self, logits, slots: list[int]):
        """The first caption token of each new slot from its prefill logits, masked when constrained."""
        if self.masks is None:
            return logits.argmax(-1)
        self.masks.start(slots)
        self.masks.fill()
        return apply_bitmask(logits, self.masks.rows(slots), shifts(logits.device)).argmax(-1)

    def _grammar_advance(self, slot: int, token: int) -> None:
        if self.masks is not None:
            self.masks.advance(slot, token)

    def _grammar_before_step(self, b: int) -> None:
        """Advance-and-fill done for the tokens of the last step: upload rows [0, b) for this one."""
        masks = self.masks
        if masks is None:
            return
        t0 = time.perf_counter()
        masks.keep_only({s for s, seq in self.active.items() if seq is not None})
        masks.fill()
        masks.upload(self.cache.mask, b)
        self.stats.constrained_steps += 1
        self.stats.mask_cpu_s += time.perf_counter() - t0
