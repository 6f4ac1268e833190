"""The kernels :mod:`live.op_profile` times: one GPU's shard of a decoder layer under tensor
parallelism, its operators as PyTorch calls (one closure per weight copy, see
:func:`live.op_timer.copies_for`), flash attention for prefill and decode, the KV-cache
write, and a whole layer chained from them. Needs ``torch``.

RoPE and the gated activation are eager element-wise chains unless
:func:`fuse_elementwise` compiles each into one kernel (``torch.compile``), as vLLM's own
kernels are; every call site goes through :data:`KERNELS`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from control_plane.perf.models import ModelSpec
from live.op_timer import copies_for

__all__ = ["KERNELS", "Shard", "Weights", "decode_attention", "fuse_elementwise", "gated_silu",
           "kv_copies", "kv_save", "layer_forward", "mlp_closures", "n_copies",
           "prefill_attention", "rand", "rms_norm", "rope"]


class Shard:
    """One GPU's slice of ``model``'s layer under ``tp``-way tensor parallelism."""

    def __init__(self, model: ModelSpec, tp: int) -> None:
        if model.heads % tp:
            raise ValueError(f"tp={tp} does not divide {model.name}'s {model.heads} heads")
        self.model, self.tp = model, tp
        self.h, self.d = model.hidden, model.head_dim
        self.hq = model.heads // tp
        self.kvg = max(1, model.kv_heads // tp)  # KV heads are replicated when tp > kv_heads
        self.i = model.intermediate // tp
        self.vocab = model.vocab // tp

    def kv_bytes(self, tokens: int, dtype) -> int:
        """Bytes of K and V for ``tokens`` context tokens of this shard (one layer)."""
        return 2 * tokens * self.kvg * self.d * dtype.itemsize


def n_copies(nbytes: float, inner: int, device: torch.device) -> int:
    """Copies to rotate over: enough to exceed the L2 cache on a GPU, one on a CPU."""
    return copies_for(nbytes, inner) if device.type == "cuda" else 1


class Weights:
    """Random bf16 weights of one shard's layer, each matrix in enough copies to rotate
    over (:func:`live.op_timer.copies_for`), made once per shard."""

    def __init__(self, s: Shard, device: torch.device, dtype, inner: int, seed: int) -> None:
        self.s, self.dev, self.dt = s, device, dtype
        self.gen = torch.Generator(device=device).manual_seed(seed)
        h, d = s.h, s.d
        self.qkv = self.copies(inner, (s.hq + 2 * s.kvg) * d, h)
        self.o = self.copies(inner, h, s.hq * d)
        self.up = self.copies(inner, 2 * s.i, h)
        self.down = self.copies(inner, h, s.i)
        self.table = self.copies(inner, s.vocab, h)
        self.norm = self.rand(h)

    def rand(self, *shape: int) -> torch.Tensor:
        return rand(self.gen, self.dt, *shape, std=0.02)

    def copies(self, inner: int, *shape: int) -> list[torch.Tensor]:
        n = self.dt.itemsize
        for v in shape:
            n *= v
        return [self.rand(*shape) for _ in range(n_copies(n, inner, self.dev))]


def mlp_closures(w: Weights, tokens: int) -> dict[str, list[Callable[[], object]]]:
    """One closure per op (a list: one per weight copy) for ``tokens`` tokens."""
    s, h, d, t = w.s, w.s.h, w.s.d, tokens
    x, res = w.rand(t, h), w.rand(t, h)
    qk = w.rand(t, (s.hq + s.kvg) * d)
    cos, sin = w.rand(t, 1, d // 2), w.rand(t, 1, d // 2)
    gate_up, attn_out, act_out = w.rand(t, 2 * s.i), w.rand(t, s.hq * d), w.rand(t, s.i)
    ids = torch.randint(0, s.vocab, (t,), device=w.dev, generator=w.gen)

    def gemm(a: torch.Tensor, mats: list[torch.Tensor]) -> list[Callable[[], object]]:
        return [lambda m=m: F.linear(a, m) for m in mats]

    return {
        "emb": [lambda tb=tb: F.embedding(ids, tb) for tb in w.table],
        "input_layernorm": [lambda: rms_norm(x, w.norm)],
        "attn_pre_proj": gemm(x, w.qkv),
        "attn_rope": [lambda: KERNELS["rope"](qk, cos, sin, s.hq + s.kvg, d)],
        "attn_post_proj": gemm(attn_out, w.o),
        "post_attention_layernorm": [lambda: rms_norm(x, w.norm)],
        "mlp_up_proj": gemm(x, w.up),
        "mlp_act": [lambda: KERNELS["gated_silu"](gate_up)],
        "mlp_down_proj": gemm(act_out, w.down),
        "add": [lambda: x + res],
    }


def rms_norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x, (x.shape[-1],), w, 1e-5)


def rope(qk: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, heads: int,
         d: int) -> torch.Tensor:
    """Neox-style rotary embedding of the query and key rows of ``qk`` (tokens, heads*d)."""
    t = qk.shape[0]
    v = qk.reshape(t, heads, d)
    a, b = v[..., : d // 2], v[..., d // 2:]
    return torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1).view(t, heads * d)


def gated_silu(gate_up: torch.Tensor) -> torch.Tensor:
    g, u = gate_up.chunk(2, dim=-1)
    return F.silu(g) * u


KERNELS: dict[str, Callable] = {"rope": rope, "gated_silu": gated_silu}


def fuse_elementwise() -> None:
    """Compile RoPE and the gated activation with ``torch.compile`` (one fused kernel each,
    as vLLM's own kernels are) instead of PyTorch's eager chain of element-wise kernels."""
    for name, fn in (("rope", rope), ("gated_silu", gated_silu)):
        KERNELS[name] = torch.compile(fn, dynamic=True, fullgraph=True)


def rand(gen: torch.Generator, dtype, *shape: int, std: float = 1.0) -> torch.Tensor:
    return torch.empty(*shape, device=gen.device, dtype=dtype).normal_(0, std, generator=gen)


def kv_copies(s: Shard, batch: int, context: int, dtype, inner: int, gen):
    """Rotating (k, v) copies of ``batch`` sequences x ``context`` tokens (B, kvg, L, d)."""
    k = n_copies(s.kv_bytes(batch * context, dtype), inner, gen.device)
    return [(rand(gen, dtype, batch, s.kvg, context, s.d),
             rand(gen, dtype, batch, s.kvg, context, s.d)) for _ in range(k)]


def decode_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One new token per sequence: q (B, hq, 1, d) over k, v (B, kvg, L, d). With one query
    row, flash attention splits the context over thread blocks and, for GQA, folds each KV
    head's query group into rows (flash-decoding, as vLLM's decode kernels do)."""
    return F.scaled_dot_product_attention(q, k, v, enable_gqa=k.shape[1] != q.shape[1])


def prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of a fresh prompt: q (1, hq, c, d) over k, v (1, kvg, c, d)."""
    return F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                          enable_gqa=k.shape[1] != q.shape[1])


def kv_save(s: Shard, tokens: int, dtype, gen):
    """Closure writing ``tokens`` new K and V rows into a 64k-slot cache at scattered slots."""
    slots = max(65536, tokens)
    cache = torch.zeros(2, slots, s.kvg * s.d, device=gen.device, dtype=dtype)
    new = rand(gen, dtype, 2, tokens, s.kvg * s.d)
    idx = torch.randperm(slots, device=gen.device, generator=gen)[:tokens]
    return lambda: cache.index_copy_(1, idx, new)


def layer_forward(s: Shard, prefill: int, seqs: int, context: int, dtype, gen,
                  mlp: Callable[[torch.Tensor], torch.Tensor] | None = None):
    """Closure running one decoder layer over a batch: ``prefill`` tokens of one prompt and
    ``seqs`` decoding sequences at ``context`` tokens each. ``mlp`` replaces the dense gated
    MLP (a MoE block: :func:`live.op_moe.moe_block`)."""
    t, h, d, hq, kvg = prefill + seqs, s.h, s.d, s.hq, s.kvg

    def r(*shape):
        return rand(gen, dtype, *shape, std=0.02)

    w_qkv, w_o = r((hq + 2 * kvg) * d, h), r(h, hq * d)
    if mlp is None:
        w_up, w_down = r(2 * s.i, h), r(h, s.i)

        def mlp(y: torch.Tensor) -> torch.Tensor:
            return F.linear(KERNELS["gated_silu"](F.linear(y, w_up)), w_down)
    n1, n2 = r(h), r(h)
    x = r(t, h)
    cos, sin = r(t, 1, d // 2), r(t, 1, d // 2)
    kv_dec = (r(seqs, kvg, context, d), r(seqs, kvg, context, d)) if seqs else None
    save = kv_save(s, t, dtype, gen)

    def run() -> torch.Tensor:
        qkv = F.linear(rms_norm(x, n1), w_qkv)
        qk = KERNELS["rope"](qkv[:, : (hq + kvg) * d], cos, sin, hq + kvg, d)
        save()
        outs = []
        if prefill:
            def heads(m: torch.Tensor, n: int) -> torch.Tensor:
                return m[:prefill].reshape(prefill, n, d).transpose(0, 1).unsqueeze(0)
            o = prefill_attention(heads(qk[:, : hq * d], hq), heads(qk[:, hq * d:], kvg),
                                  heads(qkv[:, (hq + kvg) * d:], kvg))
            outs.append(o.squeeze(0).transpose(0, 1).reshape(prefill, hq * d))
        if seqs:
            qd = qk[prefill:, : hq * d].reshape(seqs, hq, 1, d)
            outs.append(decode_attention(qd, *kv_dec).reshape(seqs, hq * d))
        a = outs[0] if len(outs) == 1 else torch.cat(outs)
        x2 = F.linear(a, w_o) + x
        return mlp(rms_norm(x2, n2)) + x2
    return run
