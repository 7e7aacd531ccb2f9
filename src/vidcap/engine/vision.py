"""Batched windowed attention for Qwen-VL vision towers during the engine's prefill.

transformers' Qwen2-VL / Qwen2.5-VL vision attention, under SDPA, splits the packed patches of every clip
into their windows and frames and runs one attention call per piece from Python: 16 clips of 8 frames at
448x252 make about 800 calls per layer, so the tower is bound by kernel launches (measured on the H200:
91 ms of prefill per clip, GPU idle more than half the time). The pieces have only a handful of distinct
lengths (full windows, edge windows, whole frames), so here each length is one batched SDPA call over all
its pieces. The arithmetic is the same per piece; `check` compares it with transformers' own forward on
the first real input and the engine keeps transformers' path if they differ.
"""

from __future__ import annotations

import sys
import types
from itertools import pairwise
from typing import Any

_PLANS: dict[tuple, list] = {}  # lengths of the pieces -> [(length, index of their patches)]
_MAX_PLANS = 64


def attention_modules(model) -> list[Any]:
    """The vision attention modules this applies to (Qwen2-VL / Qwen2.5-VL layout), else []."""
    visual = getattr(getattr(model, "model", None), "visual", None) or getattr(model, "visual", None)
    if visual is None:
        return []
    found = []
    for mod in visual.modules():
        name = type(mod).__name__
        rotary = getattr(sys.modules.get(type(mod).__module__), "apply_rotary_pos_emb_vision", None)
        if name.endswith("VisionAttention") and hasattr(mod, "qkv") and hasattr(mod, "proj") and rotary is not None:
            found.append(mod)
    return found


class GroupedVision:
    """Installs the batched forward on a model's vision attention modules; `active` switches it on for the
    engine's prefill only (a `generate()` run in the same process keeps transformers' path)."""

    def __init__(self, model):
        self.mods = attention_modules(model)
        self.state = "off" if not self.mods else "unchecked"  # -> "on" or "off: why"
        self.calls = 0  # batched SDPA calls made, the proof it engaged
        for mod in self.mods:
            if not hasattr(mod, "_vidcap_plain"):  # a second engine on the same model reuses the wrapper
                mod._vidcap_plain = mod.forward
                mod.forward = types.MethodType(_forward, mod)
            mod._vidcap_grouped = False
            mod._vidcap_owner = self

    def summary(self) -> str:
        if not self.mods:
            return "transformers' (no windowed vision tower)"
        if self.state == "on":
            return f"batched windows ({self.calls} SDPA calls)"
        return f"transformers' ({self.state})"

    def enabled(self) -> bool:
        return bool(self.mods) and self.state in ("on", "unchecked")

    def set(self, on: bool) -> None:
        for mod in self.mods:
            mod._vidcap_grouped = on


def _forward(self, hidden_states, cu_seqlens, rotary_pos_emb=None, position_embeddings=None, **kwargs):
    if rotary_pos_emb is not None:  # older transformers passed the raw rotary angles
        kwargs["rotary_pos_emb"] = rotary_pos_emb
    if not self._vidcap_grouped:
        return self._vidcap_plain(hidden_states, cu_seqlens, position_embeddings=position_embeddings, **kwargs)
    owner: GroupedVision = self._vidcap_owner
    out = _grouped(self, hidden_states, cu_seqlens, rotary_pos_emb, position_embeddings)
    if owner.state == "unchecked":  # the first real input: compare with transformers' own forward once
        ref = self._vidcap_plain(hidden_states, cu_seqlens, position_embeddings=position_embeddings, **kwargs)
        err = _mismatch(out, ref)
        if err:
            owner.state = f"off: batched windows differ from transformers' by {err}"
            owner.set(False)
            return ref
        owner.state = "on"
    return out


def _mismatch(out, ref) -> str:
    import torch

    if out.shape != ref.shape:
        return f"shape {tuple(out.shape)} vs {tuple(ref.shape)}"
    diff = (out.float() - ref.float()).abs().max().item()
    scale = ref.float().abs().max().item() + 1e-6
    tol = 1e-3 if ref.dtype == torch.float32 else 3e-2
    return "" if diff <= tol * scale else f"{diff:.3g} (max |x| {scale:.3g})"


def _grouped(mod, hidden_states, cu_seqlens, rotary_pos_emb, position_embeddings):
    import torch
    import torch.nn.functional as F

    n = hidden_states.shape[0]
    q, k, v = mod.qkv(hidden_states).reshape(n, 3, mod.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    if position_embeddings is None:  # older transformers passed the raw rotary angles
        emb = torch.cat((rotary_pos_emb, rotary_pos_emb), dim=-1)
        position_embeddings = (emb.cos(), emb.sin())
    cos, sin = position_embeddings
    rotary = sys.modules[type(mod).__module__].apply_rotary_pos_emb_vision
    q, k = rotary(q, k, cos, sin)
    out = torch.empty_like(q)  # [n, heads, head_dim]
    h, d = q.shape[1], q.shape[2]
    for length, idx in _plan(cu_seqlens, q.device):
        if idx is None:  # every piece has this length: a plain reshape, no gather
            qs, ks, vs = (t.view(-1, length, h, d).transpose(1, 2) for t in (q, k, v))
        else:
            qs, ks, vs = (t.index_select(0, idx).view(-1, length, h, d).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(qs, ks, vs, scale=mod.scaling).transpose(1, 2).reshape(-1, h, d)
        mod._vidcap_owner.calls += 1
        if idx is None:
            out = o
        else:
            out.index_copy_(0, idx, o)
    return mod.proj(out.reshape(n, -1))


def _plan(cu_seqlens, device) -> list:
    """[(length, patch index or None)] grouping the pieces by length (cached: every layer of a forward
    shares the same boundaries)."""
    import torch

    bounds = cu_seqlens.tolist()
    lengths = tuple(b - a for a, b in pairwise(bounds) if b > a)
    key = (lengths, str(device))
    plan = _PLANS.get(key)
    if plan is not None:
        return plan
    starts: dict[int, list[int]] = {}
    for a, b in pairwise(bounds):
        if b > a:
            starts.setdefault(b - a, []).append(a)
    if len(starts) == 1:
        plan = [(lengths[0], None)]
    else:
        plan = []
        for length, firsts in starts.items():
            base = torch.tensor(firsts, dtype=torch.long)[:, None] + torch.arange(length)[None]
            plan.append((length, base.reshape(-1).to(device)))
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan
