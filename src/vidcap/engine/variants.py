"""Variants in the engine (`--variants short,dense`): several captions of one clip from one visual encoding.

A family item (`{"variants": [item, ...]}`: one prepared item per prompt, same pixels) is admitted as one
unit. The clip's prompt up to where the variants' texts part (every visual token included) is prefilled
once, with the pixels, into the first variant's slot; its keys and values are copied into one slot per
other variant; then each variant's own text (its suffix) is prefilled as text against that copy, all
suffixes of a group in one call, and every variant decodes as an ordinary slot. Where a template puts the
variant's text before a visual token, each variant is prefilled whole (its vision tower runs per variant)
and the stats count it (`full_prefill_clips`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .prefill import cache_kwarg, context_error, row_prefix_cache, seq_keys, slot_cache, to_device

VARIANTS = "variants"  # the key of a family item: its list of per-prompt items


@dataclass(frozen=True)
class VariantKey:
    """The engine key of one variant of a family (`key` is the family's own key)."""

    key: Any
    index: int


@dataclass
class VariantStats:
    clips: int = 0  # families whose shared part was prefilled once
    rows: int = 0  # variants decoded from those families
    shared_tokens: int = 0  # prompt tokens each family prefilled once instead of once per variant
    saved_tokens: int = 0  # prefill tokens saved: the shared part times (variants - 1)
    suffix_tokens: int = 0  # the variants' own text, prefilled against the copy
    suffix_s: float = 0.0
    full_prefill_clips: int = 0  # families whose template parts before a visual token: prefilled per variant

    def summary(self) -> dict | None:
        if not (self.clips or self.full_prefill_clips):
            return None
        return {
            "clips_shared": self.clips,
            "variant_rows": self.rows,
            "shared_prefill_tokens": self.shared_tokens,
            "prefill_tokens_saved": self.saved_tokens,
            "suffix_tokens": self.suffix_tokens,
            "suffix_prefill_s": round(self.suffix_s, 3),
            "full_prefill_clips": self.full_prefill_clips,
            "mode": "shared visual prefill"
            if not self.full_prefill_clips
            else "full prefill per variant for some clips",
        }


def is_family(item) -> bool:
    return isinstance(item, dict) and VARIANTS in item


def slots_needed(item) -> int:
    return len(item[VARIANTS]) if is_family(item) else 1


def slots_in(entries) -> int:
    return sum(slots_needed(item) for _, item in entries)


def flat(entries) -> list:
    """(key, item) pairs with each family spread into its variants' items."""
    out = []
    for key, item in entries:
        if is_family(item):
            out += [(VariantKey(key, j), m) for j, m in enumerate(item[VARIANTS])]
        else:
            out.append((key, item))
    return out


def entry_keys(key, item) -> list:
    return [VariantKey(key, j) for j in range(len(item[VARIANTS]))] if is_family(item) else [key]


def fit_count(entries, free: int, total: int) -> int:
    """How many leading entries fit `free` slots (a family takes one per variant; one larger than the whole
    cache counts as one: it is handed back to the plain path)."""
    n = used = 0
    for _, item in entries:
        need = slots_needed(item)
        need = 1 if need > total else need
        if used + need > free:
            break
        used += need
        n += 1
    return n


def family(items: list[dict]) -> dict:
    """One clip's prepared items, one per variant prompt, as a family item; inputs equal to the first
    item's (the pixels) become the same object, so they cross processes once."""
    first = items[0]
    out = [first]
    for item in items[1:]:
        same = {}
        for k, v in item.items():
            w = first.get(k)
            if w is not None and _same_tensor(v, w) and k not in seq_keys(item):
                same[k] = w
        out.append({**item, **same})
    return {VARIANTS: out}


def _same_tensor(a, b) -> bool:
    if a is b:
        return True
    if not (hasattr(a, "equal") and hasattr(b, "equal")) or getattr(a, "shape", None) != getattr(b, "shape", None):
        return False
    return a.dtype == b.dtype and bool(a.equal(b))


def split_point(ids_lists: list[list[int]], placeholders: set[int]) -> int:
    """Where the variants' prompts part: their common token prefix, one short of the shortest prompt (every
    variant prefills its last token itself); 0 when a visual token comes after it (nothing to share)."""
    first = ids_lists[0]
    n = min(len(ids) for ids in ids_lists) - 1
    for ids in ids_lists[1:]:
        n = next((i for i in range(n) if ids[i] != first[i]), n)
    if n <= 0 or any(t in placeholders for ids in ids_lists for t in ids[n:]):
        return 0
    return n


def cut(item: dict, start: int, end: int | None = None) -> dict:
    """An item's sequence inputs cut to [start:end] (the rest, pixels and grids, as they are)."""
    keys = set(seq_keys(item))
    return {k: (v[:, start:end] if k in keys else v) for k, v in item.items()}


class VariantAdmission:
    """The engine's admission of families (mixed into `Engine`; uses its cache, model parts and slots)."""

    # set or defined by Engine (annotations only: the MRO finds the real ones)
    _take_slots: Any
    _release: Any
    _emit: Any
    _arm: Any
    _first_tokens: Any  # vidcap.engine.grammar: masked when decoding is constrained
    cache: Any
    base: Any
    parts: Any
    vision: Any
    fused: Any
    device: Any
    dtype: Any
    collate: Any
    kw: str
    pad_id: int
    prefix: list[int]
    stats: Any
    out: list
    max_new: int
    max_positions: int | None
    prefill_tokens: int
    placeholders: set[int]

    def _split_families(self, group: list) -> tuple[list, list]:
        """(families to share, the other entries): a family whose variants cannot share a visual prefill
        joins the others as its variants' own entries (each prefilled whole)."""
        fams, rest = [], []
        for key, item in group:
            if not is_family(item):
                rest.append((key, item))
                continue
            ids = [m["input_ids"][0].tolist() for m in item[VARIANTS]]
            c = split_point(ids, self.placeholders) if len(ids) > 1 else 0
            if c:
                fams.append((key, item, c))
            else:
                self.stats.variants.full_prefill_clips += len(ids) > 1
                rest += flat([(key, item)])
        return fams, rest

    def _admit_families(self, fams: list) -> None:
        """Check each variant against the model's positions and the cache, then prefill the families in
        groups (those that use the engine's shared prompt prefix apart from those that do not)."""
        p = self.cache.prefix_len
        groups: dict[bool, list] = {True: [], False: []}
        for key, item, c in fams:
            first = item[VARIANTS][0]["input_ids"][0]
            shared = p > 0 and c > p and first[:p].tolist() == self.prefix
            members = []
            for j, m in enumerate(item[VARIANTS]):
                n = int(m["input_ids"].shape[1])
                limit = int(m.get("max_new") or self.max_new)
                err = context_error(n, limit, self.max_positions)
                if err:
                    self._emit(VariantKey(key, j), "error", err)
                elif n - (p if shared else 0) + limit > self.cache.length:
                    self._emit(VariantKey(key, j), "fallback")
                    self.stats.fallback_rows += 1
                else:
                    members.append((j, m, limit))
            if members:
                groups[shared].append((key, members, c))
        for shared, group in groups.items():
            chunk: list = []
            tokens = 0
            for fam in group:
                if chunk and tokens + fam[2] > self.prefill_tokens:
                    self._prefill_family_chunk(chunk, shared)
                    chunk, tokens = [], 0
                chunk.append(fam)
                tokens += fam[2]
            if chunk:
                self._prefill_family_chunk(chunk, shared)

    def _prefill_family_chunk(self, chunk: list, shared: bool) -> None:
        import torch

        t0 = time.perf_counter()
        lm = self.cache
        p = lm.prefix_len if shared else 0
        slots = self._take_slots(sum(len(members) for _, members, _ in chunk))
        rows: list[tuple] = []  # (VariantKey, slot, item, limit, c, family index)
        homes: list[int] = []
        it = iter(slots)
        for f, (key, members, c) in enumerate(chunk):
            mine = [next(it) for _ in members]
            homes.append(mine[0])
            rows += [(VariantKey(key, j), s, m, limit, c, f) for (j, m, limit), s in zip(members, mine, strict=True)]
        try:
            deltas = self._prefill_shared_parts(chunk, homes, p)
            for f, (_, _m, c) in enumerate(chunk):  # the shared part into every other variant's slot
                others = [r[1] for r in rows if r[5] == f][1:]
                if others:
                    idx = torch.tensor(others, device=self.device)
                    lm.k[:, idx, :, : c - p] = lm.k[:, homes[f] : homes[f] + 1, :, : c - p]
                    lm.v[:, idx, :, : c - p] = lm.v[:, homes[f] : homes[f] + 1, :, : c - p]
            t1 = time.perf_counter()
            started = []
            for sub in _row_chunks(rows, p, self.prefill_tokens):
                started += self._prefill_suffixes(sub, deltas, p)
            self.stats.variants.suffix_s += time.perf_counter() - t1
        except BaseException:
            self._release(slots)
            raise
        for _key, members, c in chunk:
            self.stats.variants.clips += 1
            self.stats.variants.rows += len(members)
            self.stats.variants.shared_tokens += c
            self.stats.variants.saved_tokens += c * (len(members) - 1)
        self.stats.prefills += 1
        self.stats.prefill_rows += len(rows)
        self.stats.prefill_s += time.perf_counter() - t0
        for (key, slot, _, limit, _, _), tok in zip(rows, started, strict=True):
            self._arm(slot, key, limit, tok)

    def _prefill_shared_parts(self, chunk: list, homes: list[int], p: int) -> list[int]:
        """The model's own forward (vision tower and all) over each family's shared part, written into its
        first variant's slot; returns each family's multimodal rotary offset (0 without one)."""
        import torch

        lm = self.cache
        items = [cut(members[0][1], p, c) for _, members, c in chunk]
        inputs = {k: to_device(v, self.device, self.dtype) for k, v in self.collate(items).items()}
        home = torch.tensor(homes, device=self.device)
        if p:
            ones = torch.ones(len(chunk), p, dtype=inputs["attention_mask"].dtype, device=self.device)
            inputs["attention_mask"] = torch.cat((ones, inputs["attention_mask"]), dim=1)
        n_layers = len(self.parts.layers)
        sinks = [_writer(lm, i, home) for i in range(n_layers)]
        prefixes = [(lm.pk[i], lm.pv[i]) for i in range(n_layers)] if p else None
        inputs[self.kw] = slot_cache(n_layers, sinks, prefixes)
        self.vision.set(self.vision.enabled())
        self.fused.set(self.fused.enabled())
        try:
            self.base(**inputs, use_cache=True, return_dict=True)
        finally:
            self.vision.set(False)
            self.fused.set(False)
            self.stats.vision_attention = self.vision.summary()
        deltas = getattr(self.base, "rope_deltas", None) if self.parts.mrope else None
        return [0] * len(chunk) if deltas is None else [int(d) for d in deltas.view(-1).tolist()]

    def _prefill_suffixes(self, rows: list, deltas: list[int], p: int) -> list[int]:
        """Each variant's own text through the language model, attending the engine's shared prefix (p
        tokens) and its slot's copy of the clip's shared part; returns each variant's first new token."""
        import torch

        lm, dev = self.cache, self.device
        sfx = [r[2]["input_ids"][0, r[4] :] for r in rows]
        lens = [int(s.shape[0]) for s in sfx]
        width, own = max(lens), max(r[4] - p for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros(len(rows), p + own + width, dtype=torch.long)
        mask[:, :p] = 1
        for i, (s, r) in enumerate(zip(sfx, rows, strict=True)):
            ids[i, : lens[i]] = s
            mask[i, p : r[4]] = 1
            mask[i, p + own : p + own + lens[i]] = 1
        start = torch.tensor([r[4] + deltas[r[5]] for r in rows])
        pos = (start[:, None] + torch.arange(width)[None, :]).to(dev)
        slot_t = torch.tensor([r[1] for r in rows], device=dev)
        offs = torch.tensor([r[4] - p for r in rows], device=dev)
        n_layers = len(self.parts.layers)
        sinks = [_offset_writer(lm, i, slot_t, offs) for i in range(n_layers)]
        prefixes = [_own_prefix(lm, i, slot_t, own, p) for i in range(n_layers)]
        cache = row_prefix_cache(n_layers, sinks, prefixes, p + own)
        self.fused.set(self.fused.enabled())
        try:
            hidden = self.parts.lm(
                input_ids=ids.to(dev),
                attention_mask=mask.to(dev),
                position_ids=pos,
                use_cache=True,
                **{cache_kwarg(self.parts.lm): cache},
            ).last_hidden_state
        finally:
            self.fused.set(False)
        n = torch.tensor(lens, device=dev)
        logits = self.parts.head(hidden[torch.arange(len(rows), device=dev), n - 1])
        first = self._first_tokens(logits, [r[1] for r in rows])  # masked when decoding is constrained
        rope = start.to(dev) + n
        lm.start(slot_t, first, offs + n, rope, p > 0)
        self.stats.variants.suffix_tokens += sum(lens)
        return first.tolist()


def _row_chunks(rows: list, p: int, budget: int):
    """Rows of a suffix prefill in groups whose attended keys (rows x longest prompt) stay within `budget`."""
    chunk: list = []
    widest = 0
    for r in rows:
        size = p + int(r[2]["input_ids"].shape[1])  # the shared prefix, the clip's shared part and the suffix
        if chunk and (len(chunk) + 1) * max(widest, size) > budget:
            yield chunk
            chunk, widest = [], 0
        chunk.append(r)
        widest = max(widest, size)
    if chunk:
        yield chunk


def _writer(lm, layer: int, slots):
    return lambda k, v: lm.write(layer, slots, k, v)


def _offset_writer(lm, layer: int, slots, offsets):
    """Keys/values of right-padded suffixes into their slots from each row's own offset (pad positions past
    the cache's end land on its last index, which a slot's decode writes before it reads)."""

    def write(k, v) -> None:
        import torch

        width = k.shape[2]
        pos = torch.clamp(offsets[:, None] + torch.arange(width, device=k.device)[None, :], max=lm.length - 1)
        lm.k[layer][slots[:, None], :, pos] = k.transpose(1, 2)
        lm.v[layer][slots[:, None], :, pos] = v.transpose(1, 2)

    return write


def _own_prefix(lm, layer: int, slots, own: int, p: int):
    """What a suffix attends before itself: the engine's shared prefix (p tokens, if any) and the first
    `own` positions of its slot (its clip's shared part; positions past that are masked)."""

    def get():
        import torch

        k, v = lm.k[layer, slots, :, :own], lm.v[layer, slots, :, :own]
        if p:
            b = k.shape[0]
            k = torch.cat((lm.pk[layer][None].expand(b, -1, -1, -1), k), dim=2)
            v = torch.cat((lm.pv[layer][None].expand(b, -1, -1, -1), v), dim=2)
        return k, v

    return get
