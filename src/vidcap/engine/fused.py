"""Fused elementwise kernels for the engine's prefill (Triton): RMSNorm, SiLU(gate) * up, and rotary
positions on queries and keys.

Why our own kernels: on LLaVA-1.6's 4.9k-token prompts the language model's matrix products already run at
the H200's bf16 peak, and about a fifth of the prefill's GPU time went to the elementwise chains of
transformers' eager modules (measured with benchmarks/prefill_profile.py: `mul`, `copy_`, `add`, `cat`
kernels). transformers' RMSNorm is eight kernels and about 36 bytes of memory traffic per element; fused it
is one kernel and 4 bytes. Each kernel rounds where the eager code rounds (bf16 after each operation), so
results match transformers' to the last bit or so; `check` compares every kernel with the module it
replaces on random data of the model's own sizes before a run uses it, and the engine keeps transformers'
modules if they differ. The kernels run during the engine's prefill only: a `generate()` run in the same
process (`--baseline`) keeps transformers' path.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from functools import cache
from typing import Any

from ..knobs import knob


@cache
def _kernels():
    import triton
    import triton.language as tl

    @triton.jit
    def rms_norm(x_ptr, w_ptr, y_ptr, n, stride_x, stride_y, eps, BLOCK: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)
        offs = tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0).to(tl.float32)
        var = tl.sum(x * x, axis=0) / n
        h = (x * (1.0 / tl.sqrt(var + eps))).to(x_ptr.dtype.element_ty)  # transformers rounds here
        w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(y_ptr + row * stride_y + offs, (w * h.to(tl.float32)).to(y_ptr.dtype.element_ty), mask=mask)

    @triton.jit(do_not_specialize=["n"])
    def silu_mul(g_ptr, u_ptr, y_ptr, n, BLOCK: tl.constexpr):
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        s = (g / (1.0 + tl.exp(-g))).to(y_ptr.dtype.element_ty).to(tl.float32)  # silu's bf16 result
        tl.store(y_ptr + offs, (s * u).to(y_ptr.dtype.element_ty), mask=mask)

    # positions, heads and batch strides change from call to call (prefill lengths, the decode step's one
    # position): not specialized on, so one compiled kernel serves them all (compiled once, before the run)
    @triton.jit(do_not_specialize=["T", "H", "sx_b", "sy_b", "sc_b", "sc_t"])
    def rotary(
        x_ptr,
        cos_ptr,
        sin_ptr,
        y_ptr,
        T,
        H,
        sx_b,
        sx_h,
        sx_t,
        sy_b,
        sy_h,
        sy_t,
        sc_b,
        sc_t,
        D: tl.constexpr,
        H_PAD: tl.constexpr,
    ):
        # one program per (batch row, position): every head of that token, one cos/sin row
        pid = tl.program_id(0).to(tl.int64)
        b = pid // T
        t = pid % T
        offs_h = tl.arange(0, H_PAD)
        offs_d = tl.arange(0, D)
        half = D // 2
        rot_d = (offs_d + half) % D
        sign = tl.where(offs_d < half, -1.0, 1.0)
        hmask = (offs_h < H)[:, None]
        c = tl.load(cos_ptr + b * sc_b + t * sc_t + offs_d).to(tl.float32)[None, :]
        s = tl.load(sin_ptr + b * sc_b + t * sc_t + offs_d).to(tl.float32)[None, :]
        base = x_ptr + b * sx_b + t * sx_t + offs_h[:, None] * sx_h
        x = tl.load(base + offs_d[None, :], mask=hmask, other=0.0).to(tl.float32)
        xr = tl.load(base + rot_d[None, :], mask=hmask, other=0.0).to(tl.float32) * sign[None, :]
        dt = y_ptr.dtype.element_ty
        a = (x * c).to(dt).to(tl.float32)  # q * cos, rounded
        r = (xr * s).to(dt).to(tl.float32)  # rotate_half(q) * sin, rounded
        out = y_ptr + b * sy_b + t * sy_t + offs_h[:, None] * sy_h + offs_d[None, :]
        tl.store(out, (a + r).to(dt), mask=hmask)

    return rms_norm, silu_mul, rotary


def _next_pow2(n: int) -> int:
    return 1 << (max(1, n) - 1).bit_length()


def rms_norm(x, weight, eps: float):
    import torch

    shape = x.shape
    x2 = x.reshape(-1, shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    y = torch.empty(x2.shape, device=x.device, dtype=torch.promote_types(weight.dtype, x.dtype))
    n = shape[-1]
    block = _next_pow2(n)
    _kernels()[0][(x2.shape[0],)](
        x2, weight, y, n, x2.stride(0), y.stride(0), eps, BLOCK=block, num_warps=min(16, max(4, block // 512))
    )
    return y.view(shape)


def silu_mul(gate, up):
    import torch

    gate, up = gate.contiguous(), up.contiguous()
    y = torch.empty_like(gate)
    n = gate.numel()
    block = 4096
    _kernels()[1][(-(-n // block),)](gate, up, y, n, BLOCK=block, num_warps=8)
    return y


def rotary_one(x, cos, sin):
    """x [B, H, T, D] (any strides, last dim contiguous); cos/sin [B, T, D]: x * cos + rotate_half(x) * sin."""
    import torch

    b, h, t, d = x.shape
    if x.stride(-1) != 1:
        x = x.contiguous()
    cos, sin = cos.expand(b, t, d), sin.expand(b, t, d)
    if cos.stride(-1) != 1 or cos.stride() != sin.stride():
        cos, sin = cos.contiguous(), sin.contiguous()
    y = torch.empty_like(x)
    _kernels()[2][(b * t,)](
        x,
        cos,
        sin,
        y,
        t,
        h,
        x.stride(0),
        x.stride(1),
        x.stride(2),
        y.stride(0),
        y.stride(1),
        y.stride(2),
        cos.stride(0),
        cos.stride(1),
        D=d,
        H_PAD=_next_pow2(h),
        num_warps=4,
    )
    return y


SWITCH_INTERVAL_S = 0.0005


def precompile(text_config, device, dtype) -> Callable[[], None]:
    """Compile the engine's Triton kernels (norm, SiLU*up, rotary, decode attention) for a language model of
    these sizes (its transformers config) in a background thread, so that they compile while the weights
    load: with an empty Triton cache (a machine's first run) compiling them took ~4 s on the H200, all of it
    before the first caption. The calls match the engine's in shape and layout, so the later checks find the
    kernels compiled. Returns a function that waits for the thread (the backend calls it after the load)."""
    import threading

    try:
        hidden = int(text_config.hidden_size)
        heads = int(text_config.num_attention_heads)
        kv_heads = int(getattr(text_config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(text_config, "head_dim", None) or hidden // heads)
        inter = int(getattr(text_config, "intermediate_size", None) or 4 * hidden)
    except (AttributeError, TypeError, ValueError):
        return lambda: None
    if not str(device).startswith("cuda") or knob("VIDCAP_PREFILL_KERNELS") == "off":
        return lambda: None

    def run() -> None:
        import torch

        from .attention import self_check as attention_check

        # while this thread compiles, the loading thread gets the GIL back sooner after each torch call
        # releases it (with the default 5 ms, each of the load's thousands of calls can wait that long)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(min(interval, SWITCH_INTERVAL_S))
        try:
            with torch.inference_mode(), torch.cuda.device(device):
                w = torch.ones(hidden, device=device, dtype=dtype)
                rms_norm(torch.zeros(3, 37, hidden, device=device, dtype=dtype), w, 1e-5)
                g = torch.zeros(2, 29, 200, device=device, dtype=dtype)
                silu_mul(g, g)
                cos = torch.zeros(2, 11, head_dim, device=device, dtype=dtype)
                for h in {heads, kv_heads}:
                    rotary_one(torch.zeros(2, 11, h, head_dim, device=device, dtype=dtype).transpose(1, 2), cos, cos)
                attention_check(device, dtype, heads, kv_heads, head_dim)  # the decode attention kernel
                # cuBLAS's and SDPA's kernels load on first use (CUDA's lazy loading): on a machine's first
                # run that reads their libraries from disk, so it is done here too, at the model's sizes
                for m in (64, 1024):
                    x = torch.zeros(m, hidden, device=device, dtype=dtype)
                    for n in {hidden, inter, kv_heads * head_dim}:
                        x @ torch.zeros(hidden, n, device=device, dtype=dtype)
                qkv = torch.zeros(1, heads, 600, head_dim, device=device, dtype=dtype)
                torch.nn.functional.scaled_dot_product_attention(qkv, qkv, qkv, is_causal=True)
                torch.cuda.synchronize(device)
        except Exception:  # noqa: BLE001, S110  (the engine's own checks say what is wrong, after the load)
            pass
        finally:
            sys.setswitchinterval(interval)

    thread = threading.Thread(target=run, name="vidcap-kernel-compile", daemon=True)
    thread.start()
    return thread.join


# -- what gets replaced, and the switch ------------------------------------------------------------------


def _is_norm(mod) -> bool:
    return type(mod).__name__.endswith("RMSNorm") and hasattr(mod, "variance_epsilon") and hasattr(mod, "weight")


def _is_mlp(mod) -> bool:
    return all(hasattr(mod, a) for a in ("gate_proj", "up_proj", "down_proj", "act_fn")) and type(
        mod.act_fn
    ).__name__ in ("SiLU", "SiLUActivation")


class FusedPrefill:
    """Installs the fused forwards on a language model's norms and MLPs (and its rotary function);
    `set(True)` switches them on for the engine's prefill. `mode`: "auto" (on CUDA once `check` passes),
    "triton" (forced: the tests run it in Triton's CPU interpreter), "off"."""

    def __init__(self, lm, device, mode: str = "auto"):
        self.layers = list(getattr(lm, "layers", []))
        self.norms = [m for m in lm.modules() if _is_norm(m)] if self.layers else []
        self.mlps = [m for layer in self.layers for m in layer.modules() if _is_mlp(m)]
        self.rotary_module = _rotary_module(self.layers)
        self.calls = 0
        self.on = False
        if mode == "off":
            self.state = "off: switched off"
        elif not (self.norms or self.mlps):
            self.state = "off: no RMSNorm or gated MLP in the language model"
        elif mode == "auto" and not str(device).startswith("cuda"):
            self.state = "off: no CUDA"
        else:
            self.state = "unchecked"
        for mod in self.norms:
            _wrap(mod, _norm_forward, self)
        for mod in self.mlps:
            _wrap(mod, _mlp_forward, self)

    def summary(self) -> str:
        if self.state != "on":
            return f"transformers' ({self.state})"
        what = ["RMSNorm"] * bool(self.norms) + ["SiLU*up"] * bool(self.mlps) + ["rotary"] * bool(self.rotary_module)
        return f"fused {', '.join(what)} (Triton; {self.calls} kernel calls)"

    def enabled(self) -> bool:
        return self.state in ("on", "unchecked")

    def set(self, on: bool) -> None:
        on = on and self.ready()
        self.on = on
        if self.rotary_module is not None:
            mod = self.rotary_module
            mod.apply_rotary_pos_emb = _make_rotary(self, mod._vidcap_plain_rotary) if on else mod._vidcap_plain_rotary

    def check(self) -> str | None:
        """Each kernel against the code it replaces, on random data of this model's sizes."""
        import torch

        try:
            with torch.inference_mode():
                if self.norms:
                    norm = self.norms[0]
                    x = _randn((3, 37, norm.weight.shape[-1]), norm.weight)
                    err = _mismatch(rms_norm(x, norm.weight, norm.variance_epsilon), norm._vidcap_plain(x))
                    if err:
                        return f"fused RMSNorm differs from transformers' by {err}"
                if self.mlps:
                    mlp = self.mlps[0]
                    g = _randn((2, 29, 200), mlp.gate_proj.weight) * 4
                    u = _randn((2, 29, 200), mlp.gate_proj.weight)
                    err = _mismatch(silu_mul(g, u), mlp.act_fn(g) * u)
                    if err:
                        return f"fused SiLU*up differs from transformers' by {err}"
                why = self._check_rotary()
                if why:
                    return why
        except Exception as exc:  # noqa: BLE001  (no compiler, unsupported GPU, ...: transformers' path serves)
            return f"Triton kernels unavailable ({type(exc).__name__}: {str(exc)[:120]})"
        return None

    def ready(self) -> bool:
        """Checked and on (the check runs here the first time)."""
        if self.state == "unchecked":
            why = self.check()
            self.state = "on" if why is None else f"off: {why}"
        return self.state == "on"

    def covers_decode(self, lm) -> bool:
        """Every norm and MLP the engine's decode step calls is one these kernels replace."""
        layers_ok = all(
            _is_norm(layer.input_layernorm) and _is_norm(layer.post_attention_layernorm) and _is_mlp(layer.mlp)
            for layer in self.layers
        )
        return bool(self.layers) and layers_ok and _is_norm(lm.norm)

    def _check_rotary(self) -> str | None:
        attn = self.layers[0].self_attn
        cfg = attn.config
        heads = cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
        d = getattr(attn, "head_dim", None) or cfg.hidden_size // heads
        w = attn.q_proj.weight
        # the model's own head counts: the kernel is compiled per padded head count, so this compiles the ones
        # the run uses (before the first clip arrives)
        q = _randn((2, 11, heads, d), w).transpose(1, 2)  # [B, H, T, D] as a transposed view, as in the model
        k = _randn((2, 11, kv_heads, d), w).transpose(1, 2)
        cos, sin = _randn((2, 11, d), w), _randn((2, 11, d), w)
        plain = self.rotary_module._vidcap_plain_rotary if self.rotary_module is not None else _rotary_reference
        want = plain(q, k, cos, sin)
        for got, ref in zip((rotary_one(q, cos, sin), rotary_one(k, cos, sin)), want, strict=False):
            err = _mismatch(got, ref)
            if err:
                return f"fused rotary differs from transformers' by {err}"
        return None


def _rotary_reference(q, k, cos, sin):
    """transformers' rotary (q * cos + rotate_half(q) * sin), for models whose own function is not a plain one."""
    import torch

    def rot(x):
        half = x.shape[-1] // 2
        return torch.cat((-x[..., half:], x[..., :half]), dim=-1)

    c, s = cos.unsqueeze(1), sin.unsqueeze(1)
    return q * c + rot(q) * s, k * c + rot(k) * s


def _randn(shape, like):
    import torch

    gen = torch.Generator(device="cpu").manual_seed(0)
    return torch.randn(shape, generator=gen).to(device=like.device, dtype=like.dtype)


def _mismatch(out, ref) -> str:
    if out.shape != ref.shape or out.dtype != ref.dtype:
        return f"shape/dtype {tuple(out.shape)} {out.dtype} vs {tuple(ref.shape)} {ref.dtype}"
    diff = (out.float() - ref.float()).abs().max().item()
    scale = ref.float().abs().max().item() + 1e-6
    return "" if diff <= 1e-2 * scale else f"{diff:.3g} (max |x| {scale:.3g})"


# attention classes that call their module's `apply_rotary_pos_emb(q, k, cos, sin)` with cos/sin [B, T, D]
ROTARY_ATTENTION = {"LlamaAttention", "MistralAttention", "Qwen2Attention", "Qwen3VLTextAttention"}


def _rotary_module(layers) -> Any:
    """The modeling module whose `apply_rotary_pos_emb(q, k, cos, sin)` the attention layers call (Llama,
    Mistral, Qwen2 text models, and Qwen3-VL, whose interleaved multimodal table arrives already as
    [B, T, D]; Qwen2-VL/2.5-VL's sectioned multimodal rotary is left to transformers)."""
    if not layers or not hasattr(layers[0], "self_attn"):
        return None
    if type(layers[0].self_attn).__name__ not in ROTARY_ATTENTION:
        return None
    mod: Any = sys.modules.get(type(layers[0].self_attn).__module__)
    if getattr(mod, "apply_rotary_pos_emb", None) is None:
        return None
    if not hasattr(mod, "_vidcap_plain_rotary"):
        mod._vidcap_plain_rotary = mod.apply_rotary_pos_emb
    return mod


def _wrap(mod, forward, owner: FusedPrefill) -> None:
    if not hasattr(mod, "_vidcap_plain"):  # a second engine on the same model reuses the wrapper
        mod._vidcap_plain = mod.forward
        mod.forward = types.MethodType(forward, mod)
    mod._vidcap_fused = owner


def _norm_forward(self, hidden_states):
    owner: FusedPrefill = self._vidcap_fused
    if not owner.on:
        return self._vidcap_plain(hidden_states)
    owner.calls += 1
    return rms_norm(hidden_states, self.weight, self.variance_epsilon)


def _mlp_forward(self, x):
    owner: FusedPrefill = self._vidcap_fused
    if not owner.on:
        return self._vidcap_plain(x)
    owner.calls += 1
    return self.down_proj(silu_mul(self.gate_proj(x), self.up_proj(x)))


def _make_rotary(owner: FusedPrefill, plain):
    def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1, **kwargs):
        if unsqueeze_dim != 1 or kwargs or q.dim() != 4 or cos.dim() != 3:
            return plain(q, k, cos, sin, unsqueeze_dim=unsqueeze_dim, **kwargs)
        owner.calls += 2
        return rotary_one(q, cos, sin), rotary_one(k, cos, sin)

    return apply_rotary_pos_emb
