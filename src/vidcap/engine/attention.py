"""Decode attention over the slots' own KV, reading each slot only up to its own length (a Triton kernel,
flash-decoding style: one program per slot and KV head, online softmax over blocks of keys).

Why our own kernel: at PLLaVA-13B's 40 full-size KV heads, batched matmuls over the whole static cache
spent half of each decode step (16 of 32 ms at 64 slots, measured on the H200) reading keys past every
slot's end; SDPA cannot return the log-sum-exp that joins the shared prefix's attention to the slot's own.
Returns the attention output and its log-sum-exp per (slot, query head).
"""

from __future__ import annotations

from functools import cache


@cache
def _kernel():
    import triton
    import triton.language as tl

    @triton.jit
    def decode_attention(
        q_ptr,
        k_ptr,
        v_ptr,
        pos_ptr,
        out_ptr,
        lse_ptr,
        scale,
        sq_b,
        sq_h,
        sk_b,
        sk_h,
        sk_l,
        so_b,
        so_h,
        sl_b,
        G: tl.constexpr,
        G_PAD: tl.constexpr,
        D: tl.constexpr,
        BLOCK_N: tl.constexpr,
    ):
        b = tl.program_id(0)
        h = tl.program_id(1)
        n_valid = tl.load(pos_ptr + b) + 1  # keys 0..pos, the one written this step included
        offs_g = tl.arange(0, G_PAD)
        offs_d = tl.arange(0, D)
        offs_n = tl.arange(0, BLOCK_N)
        gmask = offs_g < G
        q = tl.load(
            q_ptr + b * sq_b + (h * G + offs_g)[:, None] * sq_h + offs_d[None, :], mask=gmask[:, None], other=0.0
        )
        m_i = tl.full([G_PAD], float("-inf"), tl.float32)
        l_i = tl.zeros([G_PAD], tl.float32)
        acc = tl.zeros([G_PAD, D], tl.float32)
        base = b * sk_b + h * sk_h
        for start in range(0, n_valid, BLOCK_N):
            n = start + offs_n
            nmask = n < n_valid
            k = tl.load(k_ptr + base + n[:, None] * sk_l + offs_d[None, :], mask=nmask[:, None], other=0.0)
            s = tl.dot(q, tl.trans(k)) * scale
            s = tl.where(nmask[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_ptr + base + n[:, None] * sk_l + offs_d[None, :], mask=nmask[:, None], other=0.0)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        out = acc / l_i[:, None]
        heads = h * G + offs_g
        tl.store(
            out_ptr + b * so_b + heads[:, None] * so_h + offs_d[None, :],
            out.to(out_ptr.dtype.element_ty),
            mask=gmask[:, None],
        )
        tl.store(lse_ptr + b * sl_b + heads, m_i + tl.log(l_i), mask=gmask)

    return decode_attention


def available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def slot_attention(q, k, v, pos, scale: float, block_n: int = 64):
    """q [b, heads, D]; k, v [b, kv_heads, L, D] (a slice of the cache, last dim contiguous); pos [b]:
    the last valid key per slot. Returns (out [b, heads, D] in q's dtype, lse [b, heads] float32)."""
    import torch

    b, heads, d = q.shape
    kv_heads = k.shape[1]
    g = heads // kv_heads
    out = torch.empty_like(q)
    lse = torch.empty(b, heads, device=q.device, dtype=torch.float32)
    _kernel()[(b, kv_heads)](
        q,
        k,
        v,
        pos,
        out,
        lse,
        scale,
        q.stride(0),
        q.stride(1),
        k.stride(0),
        k.stride(1),
        k.stride(2),
        out.stride(0),
        out.stride(1),
        lse.stride(0),
        G=g,
        G_PAD=max(16, 1 << (g - 1).bit_length()),
        D=d,
        BLOCK_N=block_n,
        num_warps=4,
        num_stages=3,
    )
    return out, lse


def reference(q, k, v, pos, scale: float):
    """The same function in plain torch (float32): the check the kernel must pass before a run uses it."""
    import torch

    g = q.shape[1] // k.shape[1]
    kk = k.float().repeat_interleave(g, dim=1)
    vv = v.float().repeat_interleave(g, dim=1)
    s = torch.einsum("bhd,bhld->bhl", q.float(), kk) * scale
    mask = torch.arange(k.shape[2], device=q.device)[None, :] <= pos[:, None]
    s = s.masked_fill(~mask[:, None, :], float("-inf"))
    lse = torch.logsumexp(s, dim=-1)
    out = torch.einsum("bhl,bhld->bhd", torch.softmax(s, dim=-1), vv)
    return out, lse


def self_check(device, dtype, heads: int, kv_heads: int, d: int) -> str | None:
    """Run the kernel against `reference` on random data of the model's head layout; None if it agrees,
    else why not (then the engine keeps the plain matmul attention and says so)."""
    import torch

    try:
        gen = torch.Generator(device="cpu").manual_seed(0)
        b, length = 5, 300
        q = torch.randn(b, heads, d, generator=gen).to(device, dtype)
        k = torch.randn(b, kv_heads, length + 20, d, generator=gen).to(device, dtype)[:, :, :length]
        v = torch.randn(b, kv_heads, length + 20, d, generator=gen).to(device, dtype)[:, :, :length]
        pos = torch.tensor([0, 1, 63, 64, length - 1], device=device)
        out, lse = slot_attention(q, k, v, pos, d**-0.5)
        ref_out, ref_lse = reference(q, k, v, pos, d**-0.5)
        err = ((out.float() - ref_out).norm() / ref_out.norm()).item()
        lse_err = (lse - ref_lse).abs().max().item()
    except Exception as exc:  # noqa: BLE001  (no compiler, unsupported GPU, ...: the plain path serves)
        return f"Triton decode attention unavailable ({type(exc).__name__}: {str(exc)[:120]})"
    if not (err < 2e-2 and lse_err < 5e-2):
        return f"Triton decode attention failed its check (relative error {err:.2e}, lse error {lse_err:.2e})"
    return None
