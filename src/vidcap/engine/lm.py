"""The decode side of the engine: a static KV cache of `slots` sequences and one decode step over the
language model's own modules (norms, projections, MLP, head), captured in CUDA graphs per batch bucket.

Decode attention is written out (two batched matmuls and a softmax) rather than called through SDPA so
that it can attend a shared prefix stored once (cascade attention: prefix scores and per-slot scores
share one softmax) and so that the whole step is a fixed sequence of kernels a CUDA graph can replay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .grammar import apply_bitmask, shifts

# Decoder layers whose step is: RMSNorm -> q/k/v (bias optional) -> per-head RMSNorm of q and k (Qwen3) ->
# rotary -> attention -> o_proj -> residual -> RMSNorm -> gated MLP -> residual. Anything else runs through
# generate() (fast_path false). Qwen3-VL's DeepStack (visual features added to the first layers' hidden
# states) touches visual positions only, which prefill (the model's own forward) covers; its interleaved
# multimodal rotary gives a text token the same position on all three axes, so decoding uses the plain table.
SUPPORTED_LAYERS = {
    "LlamaDecoderLayer",
    "MistralDecoderLayer",
    "Qwen2DecoderLayer",
    "Qwen2_5_VLDecoderLayer",
    "Qwen2VLDecoderLayer",
    "Qwen3VLTextDecoderLayer",
}


class Unsupported(Exception):
    """The model cannot run on the engine; the message says why (reported as fast_path: false)."""


@dataclass
class LMParts:
    lm: Any  # the decoder stack (embed_tokens, layers, norm, rotary_emb)
    head: Any  # lm_head
    layers: list[Any]
    heads: int
    kv_heads: int
    head_dim: int
    scale: float
    inv_freq: Any
    rope_scale: float
    mrope: bool  # multimodal rotary positions (Qwen-VL): decode positions carry a per-clip delta
    qk_norm: bool = False  # RMSNorm over each head of q and k before the rotary (Qwen3)


def find_parts(model) -> LMParts:
    """The language model inside a transformers VLM, checked against what the decode step implements."""
    base = getattr(model, "model", None)
    lm = getattr(base, "language_model", None)
    head = getattr(model, "lm_head", None)
    if lm is None or head is None or not hasattr(lm, "layers"):
        raise Unsupported(f"{type(model).__name__} has no model.language_model.layers and lm_head")
    layers = list(lm.layers)
    kinds = {type(layer).__name__ for layer in layers}
    if not kinds <= SUPPORTED_LAYERS:
        raise Unsupported(f"decoder layer {min(kinds - SUPPORTED_LAYERS)} is not one the engine implements")
    cfg = lm.config
    if getattr(cfg, "use_sliding_window", False) and getattr(cfg, "sliding_window", None):
        raise Unsupported("sliding-window attention")
    if any(getattr(layer.self_attn, "sliding_window", None) for layer in layers):
        raise Unsupported("sliding-window attention")
    rotary = getattr(lm, "rotary_emb", None)
    if rotary is None or not hasattr(rotary, "inv_freq") or "dynamic" in str(getattr(rotary, "rope_type", "")):
        raise Unsupported("no fixed rotary table")
    attn = layers[0].self_attn
    heads = cfg.num_attention_heads
    head_dim = getattr(attn, "head_dim", None) or cfg.hidden_size // heads
    return LMParts(
        lm=lm,
        head=head,
        layers=layers,
        heads=heads,
        kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
        head_dim=head_dim,
        scale=float(getattr(attn, "scaling", head_dim**-0.5)),
        inv_freq=rotary.inv_freq,
        rope_scale=float(getattr(rotary, "attention_scaling", 1.0) or 1.0),
        mrope=hasattr(base, "get_rope_index"),
        qk_norm=hasattr(attn, "q_norm") and hasattr(attn, "k_norm"),
    )


def _rotate_half(x):
    import torch

    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _norm(mod, x):
    return mod(x)


def _mlp(mod, x):
    return mod(x)


def _rope(x, cos, sin):
    return x * cos + _rotate_half(x) * sin


def _fused_norm(mod, x):
    from .fused import rms_norm

    return rms_norm(x, mod.weight, mod.variance_epsilon)


def _fused_mlp(mod, x):
    from .fused import silu_mul

    return mod.down_proj(silu_mul(mod.gate_proj(x), mod.up_proj(x)))


def _fused_rope(x, cos, sin):
    """x [b, heads, D]; cos/sin [b, 1, D]: the prefill kernel with one position per slot."""
    from .fused import rotary_one

    return rotary_one(x[:, :, None], cos, sin)[:, :, 0]


class DecoderLM:
    """Static KV cache [layers, slots, kv_heads, length, head_dim] plus the per-slot decode state on the
    device: `tok` (the token to feed next), `pos` (cache index it is written to), `rpos` (its rotary
    position) and `use_prefix` (whether the slot attends the shared prefix)."""

    def __init__(self, parts: LMParts, slots: int, length: int, device, dtype):
        import torch

        self.p, self.slots, self.length, self.device, self.dtype = parts, slots, length, device, dtype
        shape = (len(parts.layers), slots, parts.kv_heads, length, parts.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)  # zeros: never NaN where a mask hides it
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.tok = torch.zeros(slots, dtype=torch.long, device=device)
        self.pos = torch.zeros(slots, dtype=torch.long, device=device)
        self.rpos = torch.zeros(slots, dtype=torch.long, device=device)
        self.use_prefix = torch.zeros(slots, dtype=torch.bool, device=device)
        self.ar = torch.arange(length, device=device)
        self.slot_ids = torch.arange(slots, device=device)
        self.pk: Any = None  # shared prefix keys [layers, kv_heads, P, head_dim]
        self.pv: Any = None
        self.triton = False  # slot attention through the Triton kernel (set by the engine after its check)
        self.fused = False  # norms, SiLU*up and rotary through the Triton kernels (set after their check)
        self.graphs: dict[int, Any] = {}  # the step per batch bucket (its first half when `split`)
        self.heads: dict[int, Any] = {}  # split step: the second half (mask, argmax, positions) per bucket
        self.split = False  # the step in two halves, so CPU work can run while the GPU does the first
        self.logits: Any = None  # split step: the first half's logits [slots, vocab], read by the second
        self.pool: Any = None
        self.replays = 0
        self.eager_steps = 0
        self.mask: Any = None  # grammar bitmask [slots, ceil(vocab/32)] int32 read inside the step (engine.grammar)
        self.bit_shifts: Any = None

    @property
    def prefix_len(self) -> int:
        return 0 if self.pk is None else int(self.pk.shape[2])

    # -- writing what prefill computed ------------------------------------------------------------
    def write(self, layer: int, slots, k, v) -> None:
        """Keys/values of a prefill group ([B, kv_heads, W, head_dim], right-padded) into their slots."""
        width = k.shape[2]
        self.k[layer, slots, :, :width] = k
        self.v[layer, slots, :, :width] = v

    def start(self, slots, first_tokens, lengths, rope_next, use_prefix: bool) -> None:
        """Arm slots after prefill: the first generated token goes in at cache index `lengths`."""
        self.tok[slots] = first_tokens
        self.pos[slots] = lengths
        self.rpos[slots] = rope_next
        self.use_prefix[slots] = use_prefix

    # -- the decode step ----------------------------------------------------------------------------
    def step(self, b: int, between=None):
        """One token for slots [0, b): returns the device tensor of next tokens (slots past an active
        one compute garbage that no one reads). A split step (`split`, grammar masks) launches the layers,
        calls `between()` while the GPU runs them (the CPU fills and uploads this step's mask rows), then
        masks the logits and picks the tokens: the mask's CPU time hides behind the layers."""
        graph = self.graphs.get(b)
        if graph is not None:
            graph.replay()
            self.replays += 1
        else:
            self._body(b) if self.split else self._step(b)
            self.eager_steps += 1
        if self.split:
            if between is not None:
                between()
            head = self.heads.get(b)
            head.replay() if head is not None else self._head(b)
        return self.tok[:b]

    def _step(self, b: int) -> None:
        self._body(b)
        self._head(b)

    def _body(self, b: int) -> None:
        """The layers: this step's logits, into `self.logits` when split, else picked at once."""
        import torch

        p = self.p
        tok, pos, rpos = self.tok[:b], self.pos[:b], self.rpos[:b]
        x = p.lm.embed_tokens(tok)
        freqs = rpos.float()[:, None] * p.inv_freq.float()[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * p.rope_scale).to(self.dtype)[:, None, :]
        sin = (emb.sin() * p.rope_scale).to(self.dtype)[:, None, :]
        neg = torch.finfo(torch.float32).min
        bias = torch.where(self.ar[None, :] <= pos[:, None], 0.0, neg)[:, None, None, :]
        pbias = None
        if self.pk is not None:
            pbias = torch.where(self.use_prefix[:b], 0.0, neg)[:, None, None, None]
        idx = self.slot_ids[:b]
        norm, mlp, rope = (_fused_norm, _fused_mlp, _fused_rope) if self.fused else (_norm, _mlp, _rope)
        for i, layer in enumerate(p.layers):
            a = layer.self_attn
            h = norm(layer.input_layernorm, x)
            q = a.q_proj(h).view(b, p.heads, p.head_dim)
            k = a.k_proj(h).view(b, p.kv_heads, p.head_dim)
            v = a.v_proj(h).view(b, p.kv_heads, p.head_dim)
            if p.qk_norm:
                q, k = norm(a.q_norm, q), norm(a.k_norm, k)
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            self.k[i, idx, :, pos] = k
            self.v[i, idx, :, pos] = v
            o = self._attend_triton(i, q, b, pbias) if self.triton else self._attend(i, q, b, bias, pbias)
            x = x + a.o_proj(o)
            x = x + mlp(layer.mlp, norm(layer.post_attention_layernorm, x))
        logits = p.head(norm(p.lm.norm, x))
        if self.split:
            self.logits[:b].copy_(logits)
        else:
            self.tok[:b] = self._pick(logits, b)

    def _head(self, b: int) -> None:
        """The tokens (picked here when split) and the next positions."""
        import torch

        if self.split:
            self.tok[:b] = self._pick(self.logits[:b], b)
        pos, rpos = self.pos[:b], self.rpos[:b]
        self.pos[:b] = torch.clamp(pos + 1, max=self.length - 1)  # idle slots stay inside the cache
        self.rpos[:b] = rpos + 1

    def use_mask(self, words: int) -> None:
        """Give the step a grammar bitmask (all ones: every token allowed) before its graphs are captured."""
        import torch

        self.mask = torch.full((self.slots, words), -1, dtype=torch.int32, device=self.device)
        self.bit_shifts = shifts(self.device)
        self.split = True
        vocab = getattr(self.p.head, "out_features", None) or self.p.head.weight.shape[0]
        self.logits = torch.empty((self.slots, vocab), dtype=self.dtype, device=self.device)
        self.graphs.clear()
        self.heads.clear()

    def _pick(self, logits, b: int):
        """Greedy next tokens, each slot's logits masked by its grammar row when decoding is constrained."""
        if self.mask is not None:
            logits = apply_bitmask(logits, self.mask[:b], self.bit_shifts)
        return logits.argmax(-1)

    def _attend(self, i: int, q, b: int, bias, pbias):
        import torch

        p = self.p
        g = p.heads // p.kv_heads
        qg = q.view(b, p.kv_heads, g, p.head_dim)
        kc, vc = self.k[i, :b], self.v[i, :b]
        s = torch.matmul(qg, kc.transpose(-1, -2)).float() * p.scale + bias  # [b, kvh, g, L]
        if self.pk is None:
            w = torch.softmax(s, dim=-1).to(self.dtype)
            return torch.matmul(w, vc).reshape(b, p.heads * p.head_dim)
        n = self.pk.shape[2]
        qh = qg.permute(1, 0, 2, 3).reshape(p.kv_heads, b * g, p.head_dim)  # the prefix is read once
        sp = torch.bmm(qh, self.pk[i].transpose(-1, -2)).view(p.kv_heads, b, g, n).permute(1, 0, 2, 3)
        s = torch.cat((sp.float() * p.scale + pbias, s), dim=-1)
        w = torch.softmax(s, dim=-1).to(self.dtype)
        wp = w[..., :n].permute(1, 0, 2, 3).reshape(p.kv_heads, b * g, n)
        out_p = torch.bmm(wp, self.pv[i]).view(p.kv_heads, b, g, p.head_dim).permute(1, 0, 2, 3)
        out = torch.matmul(w[..., n:], vc) + out_p
        return out.reshape(b, p.heads * p.head_dim)

    def _attend_triton(self, i: int, q, b: int, pbias):
        """The slots' own keys through the Triton kernel (each read up to its length); the shared prefix
        through one batched matmul; the two joined by their log-sum-exps."""
        import torch

        from .attention import slot_attention

        p = self.p
        out, lse = slot_attention(q, self.k[i, :b], self.v[i, :b], self.pos[:b], p.scale)
        if self.pk is None:
            return out.reshape(b, p.heads * p.head_dim)
        g = p.heads // p.kv_heads
        qh = q.view(b, p.kv_heads, g, p.head_dim).permute(1, 0, 2, 3).reshape(p.kv_heads, b * g, p.head_dim)
        sp = torch.bmm(qh, self.pk[i].transpose(-1, -2)).float() * p.scale  # [kvh, b*g, P]
        sp = sp + pbias.view(b)[None, :, None].repeat_interleave(g, dim=1)
        lse_p = torch.logsumexp(sp, dim=-1)  # finite even for slots without the prefix (bias is finite)
        out_p = torch.bmm(torch.softmax(sp, dim=-1).to(self.dtype), self.pv[i])  # [kvh, b*g, D]
        out_p = out_p.view(p.kv_heads, b, g, p.head_dim).permute(1, 0, 2, 3).reshape(b, p.heads, p.head_dim)
        lse_p = lse_p.view(p.kv_heads, b, g).permute(1, 0, 2).reshape(b, p.heads)
        top = torch.maximum(lse_p, lse)
        wp, ws = torch.exp(lse_p - top), torch.exp(lse - top)
        joined = (out_p.float() * wp[..., None] + out.float() * ws[..., None]) / (wp + ws)[..., None]
        return joined.to(self.dtype).reshape(b, p.heads * p.head_dim)

    # -- CUDA graphs ------------------------------------------------------------------------------
    def capture(self, buckets: list[int], keep_state: bool = False) -> None:
        """Record the step for each batch bucket (largest first; one shared memory pool). Warm-up and
        capture run the step three times: the state tensors are reset afterwards (prefill overwrites the
        garbage), or, mid-run (`keep_state`), put back as they were; the keys and values they wrote sit at
        and past each slot's next position, which the slot's own next steps overwrite before reading."""
        import torch

        saved = [t.clone() for t in (self.tok, self.pos, self.rpos, self.use_prefix)] if keep_state else None
        torch.cuda.synchronize(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for b in buckets:
                for _ in range(2):
                    self._step(b)
        torch.cuda.current_stream(self.device).wait_stream(side)
        for b in sorted(buckets, reverse=True):
            halves = (
                [(self.graphs, self._body), (self.heads, self._head)] if self.split else [(self.graphs, self._step)]
            )
            for graphs, fn in halves:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=self.pool):
                    fn(b)
                self.pool = graph.pool()
                graphs[b] = graph
        torch.cuda.synchronize(self.device)
        for i, t in enumerate((self.tok, self.pos, self.rpos, self.use_prefix)):
            if saved is None:
                t.zero_()
            else:
                t.copy_(saved[i])
