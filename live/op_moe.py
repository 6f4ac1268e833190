"""The MoE kernels :mod:`live.op_profile` times (``--parts moe``): one GPU's shard of a
mixture-of-experts MLP block under tensor parallelism (every expert's width split ``tp``
ways, all experts on every GPU: vLLM's default without expert parallelism). Needs
``torch``.

The block, in the order a forward pass runs it, with the op names of the profile:

- ``moe_gate``: the router matmul, hidden -> ``n_experts`` logits;
- ``moe_route``: softmax, top-``k`` experts per token, the routed rows sorted by expert
  (a stable sort), the per-expert row offsets, and the gather of the input rows into that
  order;
- ``moe_up``: one grouped matmul over the experts (``torch._grouped_mm``: each expert's
  rows times its own gate/up weights), ``T*k`` rows in all;
- ``moe_act``: the gated activation on the routed rows;
- ``moe_down``: the second grouped matmul, back to the hidden size;
- ``moe_combine``: the rows put back in token order (a scatter) and summed with the router
  weights in float32;
- ``moe``: the whole block chained, which is what an iteration pays.

vLLM runs the two grouped matmuls as one Triton ``fused_moe`` kernel each; the grouped
matmul here is PyTorch's (CUTLASS on Hopper), the same kind of kernel. vLLM's kernels read
the routed rows in place and write them back in token order, so the gather in
``moe_route`` and the scatter in ``moe_combine`` are copies it does not make: those two
ops are an upper bound for its routing and combine. Routing uses random
weights and inputs, so tokens spread about uniformly over the experts, which is what the
roofline predictor assumes (:mod:`control_plane.perf.roofline`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from control_plane.perf.models import ModelSpec
from live.op_kernels import KERNELS, n_copies, rand

__all__ = ["MOE_OPS", "MoeShard", "MoeWeights", "moe_block", "moe_closures", "route"]

MOE_OPS = ("moe_gate", "moe_route", "moe_up", "moe_act", "moe_down", "moe_combine", "moe")


class MoeShard:
    """One GPU's slice of ``model``'s MoE block under ``tp``-way tensor parallelism."""

    def __init__(self, model: ModelSpec, tp: int) -> None:
        if not model.is_moe:
            raise ValueError(f"{model.name} is not a mixture-of-experts model")
        if model.intermediate % tp:
            raise ValueError(f"tp={tp} does not divide {model.name}'s expert width "
                             f"{model.intermediate}")
        self.model, self.tp = model, tp
        self.h, self.i = model.hidden, model.intermediate // tp
        self.n, self.k = model.n_experts, model.experts_per_token

    def expert_bytes(self, dtype) -> int:
        """Bytes of all experts' weights on this shard (gate/up and down)."""
        return 3 * self.n * self.h * self.i * dtype.itemsize


class MoeWeights:
    """Random weights of one shard's MoE block, the experts' in enough copies to rotate over
    (:func:`live.op_kernels.n_copies`): ``w13`` (n, 2i, h), ``w2`` (n, h, i), ``gate``."""

    def __init__(self, s: MoeShard, device: torch.device, dtype, inner: int, seed: int) -> None:
        self.s, self.dev, self.dt = s, device, dtype
        self.gen = torch.Generator(device=device).manual_seed(seed)
        copies = n_copies(s.expert_bytes(dtype), inner, device)
        self.experts = [(self.rand(s.n, 2 * s.i, s.h), self.rand(s.n, s.h, s.i))
                        for _ in range(copies)]
        self.gate = self.rand(s.n, s.h)

    def rand(self, *shape: int) -> torch.Tensor:
        return rand(self.gen, self.dt, *shape, std=0.02)


def grouped_mm(x: torch.Tensor, w: torch.Tensor, offs: torch.Tensor) -> torch.Tensor:
    """Rows ``offs[e-1]:offs[e]`` of ``x`` (R, K) times expert ``e``'s ``w[e]`` (N, K)^T."""
    return torch._grouped_mm(x, w.transpose(-2, -1), offs=offs)


def route(x: torch.Tensor, gate: torch.Tensor, k: int
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-``k`` routing of ``x`` (T, h): the routed rows sorted by expert (T*k, h), the
    sort order (slot ``j`` of the sorted rows is routed slot ``order[j]``, token
    ``order[j] // k``), the per-expert end offsets (int32, as ``torch._grouped_mm`` takes
    them) and the router weights (T, k). No host synchronisation (CUDA-graph safe)."""
    return _route(F.linear(x, gate), x, k)


def _route(logits: torch.Tensor, x: torch.Tensor, k: int):
    probs = torch.softmax(logits.float(), dim=-1)
    top_w, ids = torch.topk(probs, k, dim=-1)
    flat = ids.flatten()
    order = torch.argsort(flat, stable=True)
    counts = torch.zeros(logits.shape[-1], dtype=torch.int64, device=x.device)
    counts.scatter_add_(0, flat, torch.ones_like(flat))
    offs = torch.cumsum(counts, 0).to(torch.int32)
    return x.index_select(0, order // k), order, offs, top_w


def combine(y: torch.Tensor, order: torch.Tensor, top_w: torch.Tensor) -> torch.Tensor:
    """The expert outputs ``y`` (T*k, h, sorted by expert) back in token order, summed over
    each token's ``k`` experts with its router weights: (T, h)."""
    t, k = top_w.shape
    out = torch.empty_like(y).index_copy_(0, order, y)
    return (out.view(t, k, -1).float() * top_w.unsqueeze(-1)).sum(1).to(y.dtype)


def moe_block(x: torch.Tensor, gate: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
              k: int) -> torch.Tensor:
    """The whole MoE block on ``x`` (T, h)."""
    xs, order, offs, top_w = route(x, gate, k)
    z = KERNELS["gated_silu"](grouped_mm(xs, w13, offs))
    return combine(grouped_mm(z, w2, offs), order, top_w)


def moe_closures(w: MoeWeights, tokens: int) -> dict[str, list[Callable[[], object]]]:
    """One closure per op of :data:`MOE_OPS` (a list: one per expert-weight copy) for
    ``tokens`` tokens; the grouped matmuls alone run on rows routed once, here."""
    s, t = w.s, tokens
    x = w.rand(t, s.h)
    logits = F.linear(x, w.gate)
    xs, order, offs, top_w = _route(logits, x, s.k)
    w13, w2 = w.experts[0]
    z = w.rand(t * s.k, s.i)
    gate_up = grouped_mm(xs, w13, offs)
    y = grouped_mm(z, w2, offs)
    return {
        "moe_gate": [lambda: F.linear(x, w.gate)],
        "moe_route": [lambda: _route(logits, x, s.k)],
        "moe_up": [lambda a=a: grouped_mm(xs, a, offs) for a, _ in w.experts],
        "moe_act": [lambda: KERNELS["gated_silu"](gate_up)],
        "moe_down": [lambda b=b: grouped_mm(z, b, offs) for _, b in w.experts],
        "moe_combine": [lambda: combine(y, order, top_w)],
        "moe": [lambda a=a, b=b: moe_block(x, w.gate, a, b, s.k) for a, b in w.experts],
    }
