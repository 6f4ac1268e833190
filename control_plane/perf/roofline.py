"""Roofline iteration-time predictor with fitted efficiencies, TP all-reduce and PP sends.

One iteration runs ``T = prefill_tokens + decode_seqs`` tokens through all layers::

    iteration_s = overhead + layers * (matmuls(T) + elementwise(T) + attention
                                       + 2 * all_reduce(T * hidden * b))      [TP > 1]
                  + embedding(T) + lm_head(T_lm) + (pp - 1) * send_recv(2 * T * hidden * b)

with the operator formulas of :mod:`control_plane.perf.ops` and the coefficients of
:mod:`control_plane.perf.coefficients`. Details:

- Matmul weights are read once per iteration (sharded ``tp`` ways), so small batches are
  memory bound (decode at batch 1 ~ weight bytes / bandwidth) and large ones compute bound.
- Attention: prefill does ``4 * hq * d * causal_factor * prefill_attention`` FLOPs
  (causal_factor 0.5: exact for a fresh prompt, low for late chunks of a long one);
  decode reads ``2 * kvg * d * b`` bytes and does ``4 * hq * d`` FLOPs per context token,
  a cost exactly linear in ``decode_context``; writing new K/V moves ``4 * kvg * d * b``
  bytes per token. A family with a measured attention profile (``h100``, ``h200``) prices these
  with its fitted flash-attention coefficients (prefill ``launch + flops / (P * eff) +
  per_token * tokens``, decode ``launch + kv_bytes / (W * eff)``, KV write as an
  element-wise op); the others with the matmul roofline and its efficiencies.
- MoE: tokens are routed uniformly to ``experts_per_token`` of ``n_experts``; the expected
  number of distinct local experts hit, ``n_local * (1 - (1 - k/n)**tokens)``, sets the
  expert weight bytes read. The two grouped expert matmuls are priced with the family's
  ``moe_gemm`` coefficients (fitted on MoE profiles; ``gemm`` where a family has none), plus
  the router matmul, the routing (two launches) and the weighted combine of vLLM's
  fused-MoE path (:meth:`RooflinePredictor.moe_parts`). With ``ep > 1`` each GPU holds
  ``n/ep`` experts, gets ``T*k/min(tp, ep)`` routed tokens, and the MLP all-reduce becomes
  an all-to-all dispatch plus combine priced like all-reduces over ``ep`` GPUs
  (unvalidated).
- TP all-reduce: ``alpha + 2 (n-1)/n * bytes / (eff * link)`` with the link NVLink or PCIe
  (per direction, ``GPUSpec``); TP beyond one node (``gpus_per_node``) is not modelled.
- PP: ``iteration_s`` is the latency of one batch through all stages (``layers`` layer
  times plus ``pp - 1`` sends of hidden state and residual; a send crosses nodes when the
  replica spans nodes). The pipeline bubble is ignored for a single batch; an engine that
  keeps ``pp`` batches in flight gets up to ``pp`` times this throughput (the engine model
  decides).
- LM head on ``decode_seqs + (1 if prefill_tokens else 0)`` tokens (one sampled token per
  prefill, assumed a single sequence); logits gather and the final norm are ignored.
"""

from __future__ import annotations

import math

from control_plane.perf.base import Batch
from control_plane.perf.coefficients import Coefficients, load_coefficients
from control_plane.perf.hardware import GPUSpec, get_gpu
from control_plane.perf.models import ModelSpec, get_model
from control_plane.perf.ops import (
    ELEMENTWISE_OPS,
    comm_terms,
    elementwise_bytes_per_token,
    elementwise_s,
    experts_hit,
    gemm_s,
    gemm_shapes,
    roof_s,
)
from control_plane.perf.parallel import ParallelConfig, check_parallel, kv_heads_per_gpu

__all__ = ["RooflinePredictor"]


class RooflinePredictor:
    """IterationPredictor for ``model`` on ``gpu`` under ``parallel`` (per replica)."""

    def __init__(self, model: ModelSpec | str, gpu: GPUSpec | str,
                 parallel: ParallelConfig | None = None, coeffs: Coefficients | None = None,
                 interconnect: str | None = None, gpus_per_node: int = 8) -> None:
        self.model = m = get_model(model)
        self.gpu = g = get_gpu(gpu)
        self.parallel = par = parallel or ParallelConfig()
        check_parallel(m, par)
        self.coeffs = coeffs or load_coefficients()
        fc = self.fc = self.coeffs.for_gpu(g)
        kind = interconnect or ("nvlink" if g.has_nvlink else "pcie")
        if kind not in ("nvlink", "pcie"):
            raise ValueError(f"interconnect={interconnect!r}: must be 'nvlink' or 'pcie'")
        if kind == "nvlink" and not g.has_nvlink:
            raise ValueError(f"interconnect='nvlink' but {g.name} has no NVLink")
        if par.tp > gpus_per_node:
            raise ValueError(f"tp={par.tp} > gpus_per_node={gpus_per_node}: tensor "
                             "parallelism across nodes is not modelled")
        self.interconnect = kind
        link_bw = g.nvlink_bytes_per_s if kind == "nvlink" else g.pcie_bytes_per_s
        tp, b, h = par.tp, m.dtype_bytes, m.hidden
        self._shapes = list(gemm_shapes(m, tp).items())
        self._hq, self._kvg = m.heads // tp, kv_heads_per_gpu(m, tp)
        d = m.head_dim
        # MoE: expert matmuls replace the dense MLP ones.
        self._moe = m.is_moe
        mlp_width = None
        if m.is_moe:
            ep = par.ep
            self._shapes = [s for s in self._shapes if not s[0].startswith("mlp_")]
            self._expert_i = m.intermediate * ep / max(tp, ep)
            self._n_local = m.n_experts / ep
            self._routed = m.experts_per_token / min(tp, ep)  # routed tokens per GPU per token
            self._share = m.experts_per_token / m.n_experts
            self._spread = max(1.0, ep / tp)
            mlp_width = self._expert_i * self._routed
        # Element-wise ops per layer: launch sum + bytes-per-token slope (linear in T).
        per_tok = elementwise_bytes_per_token(m, tp, mlp_width)
        w = g.hbm_bytes_per_s
        self._ew_const = sum(fc.elementwise[op].launch_s for op in ELEMENTWISE_OPS)
        self._ew_slope = sum(per_tok[op] / (w * fc.elementwise[op].eff_mem)
                             for op in ELEMENTWISE_OPS)
        emb = fc.elementwise["emb"]
        self._emb_const, self._emb_slope = emb.launch_s, per_tok["emb"] / (w * emb.eff_mem)
        # Communication, all linear in T: (const, slope) per layer / per iteration.
        msg = h * b  # bytes per token of one hidden-state vector
        self._comm_const = self._comm_slope = 0.0
        self._emb_ar = (0.0, 0.0)
        if tp > 1:
            ar = comm_terms(fc.all_reduce_link(kind, tp), tp, link_bw)
            n_ar = 1 if (m.is_moe and par.ep > 1) else 2
            self._comm_const, self._comm_slope = n_ar * ar[0], n_ar * ar[1] * msg
            self._emb_ar = (ar[0], ar[1] * msg)
        if m.is_moe and par.ep > 1:
            a2a = comm_terms(fc.all_reduce_link(kind, par.ep), par.ep, link_bw)
            self._comm_const += 2 * a2a[0]
            self._comm_slope += 2 * a2a[1] * msg * self._routed
        self._pp_const = self._pp_slope = 0.0
        if par.pp > 1:
            nodes = math.ceil(par.gpus_per_replica / gpus_per_node)
            inter = min(nodes - 1, par.pp - 1)
            for count, lc in ((par.pp - 1 - inter, fc.send_recv[kind]),
                              (inter, fc.send_recv["inter_node"])):
                alpha, per_byte = comm_terms(lc, 2, link_bw, "send_recv")
                self._pp_const += count * alpha
                self._pp_slope += count * per_byte * 2 * msg
        # Attention: the family's fitted flash-attention kernels, else the matmul roofline.
        gc, at = fc.gemm, fc.attention
        self._pf_flops_per_pair = 4.0 * self._hq * d * self.coeffs.attention_causal_factor
        self._pf_bytes_per_tok = b * (2 * self._hq * d + 2 * self._kvg * d)
        kv_bytes = 2.0 * self._kvg * d * b  # K and V of one token, one layer
        self._pf_fitted: tuple[float, float] | None = None  # (s per FLOP, s per token)
        if at is not None:
            self._pf_launch, self._dec_launch = at.prefill_launch_s, at.decode_launch_s
            self._pf_fitted = (1.0 / (g.bf16_flops * at.prefill_eff_compute),
                               at.prefill_per_token_s)
            self._dec_per_ctx = kv_bytes / (w * at.decode_eff_mem)
        else:
            self._pf_launch = self._dec_launch = gc.launch_s
            self._dec_per_ctx = roof_s(4.0 * self._hq * d, kv_bytes, g, gc)
        save = fc.elementwise.get("attn_kv_cache_save")
        if save is not None:
            self._kv_launch, self._kv_write = save.launch_s, 2 * kv_bytes / (w * save.eff_mem)
        else:
            self._kv_launch, self._kv_write = 0.0, 2 * kv_bytes / (w * gc.eff_mem)
        self._overhead = self.coeffs.per_iteration_overhead_s
        self._ctx_s = self.model.layers * self._dec_per_ctx  # per token of decode context
        self._decode_memo: dict[int, float] = {}

    def __repr__(self) -> str:
        return (f"RooflinePredictor({self.model.name}, {self.gpu.name}, {self.parallel}, "
                f"{self.interconnect})")

    def layer_linear_s(self, tokens: int) -> float:
        """One layer's matmuls and element-wise ops (no attention, no communication)."""
        g, gc, b = self.gpu, self.fc.gemm, self.model.dtype_bytes
        t = self._ew_const + self._ew_slope * tokens  # a MoE block's activation included
        for _, (k, n) in self._shapes:
            t += gemm_s(tokens, k, n, g, gc, b)
        if self._moe:
            t += sum(v for k, v in self.moe_parts(tokens).items() if k != "act")
        return t

    def moe_parts(self, tokens) -> dict[str, float]:
        """Seconds of one layer's MoE block for ``tokens`` tokens, per kernel as vLLM's
        fused-MoE path runs them: ``router`` (the gate matmul), ``route`` (top-k softmax
        and the alignment of the routed rows to experts: two launches), ``up`` and ``down``
        (the grouped expert matmuls over the routed rows, reading the experts hit, priced
        with the family's ``moe_gemm`` coefficients), ``act`` and ``combine`` (each token's
        expert rows summed with its router weights: reads the routed rows, writes the
        tokens')."""
        if not self._moe:
            return {}
        m, g, b, add = self.model, self.gpu, self.model.dtype_bytes, self.fc.elementwise["add"]
        gc = self.fc.moe_gemm or self.fc.gemm
        routed = tokens * self._routed
        hit = experts_hit(self._n_local, self._share, tokens * self._spread)
        act = self.fc.elementwise["mlp_act"]
        return {
            "router": gemm_s(tokens, m.hidden, m.n_experts, g, self.fc.gemm, b),
            "route": 2 * add.launch_s,
            "up": gemm_s(routed, m.hidden, 2 * self._expert_i, g, gc, b, copies=hit),
            "act": elementwise_s(3 * b * self._expert_i * routed, g, act),
            "down": gemm_s(routed, self._expert_i, m.hidden, g, gc, b, copies=hit),
            "combine": elementwise_s(b * m.hidden * (routed + tokens), g, add),
        }

    def breakdown(self, batch: Batch) -> dict[str, float]:
        """Seconds per component of one iteration; they sum to ``iteration_s(batch)``."""
        p, s = batch.prefill_tokens, batch.decode_seqs
        tokens = p + s
        if tokens <= 0:
            return {}
        layers, g, gc = self.model.layers, self.gpu, self.fc.gemm
        attn = sum(self._attention_terms(batch))
        lm_tokens = s + (1 if p else 0)
        return {
            "overhead": self._overhead,
            "layers_linear": layers * self.layer_linear_s(tokens),
            "attention": layers * attn,
            "tp_comm": (layers * (self._comm_const + self._comm_slope * tokens)
                        + self._emb_ar[0] + self._emb_ar[1] * tokens),
            "embedding": self._emb_const + self._emb_slope * tokens,
            "lm_head": gemm_s(lm_tokens, self.model.hidden, self.model.vocab / self.parallel.tp,
                              g, gc, self.model.dtype_bytes),
            "pp_comm": self._pp_const + self._pp_slope * tokens,
        }

    def attention_parts(self, batch: Batch) -> dict[str, float]:
        """Seconds of one layer's attention kernels: ``prefill``, ``decode`` and
        ``kv_cache_save`` (writing the batch's new K and V), as the attention profiles
        time them."""
        return dict(zip(("prefill", "decode", "kv_cache_save"), self._attention_terms(batch),
                        strict=True))

    def _attention_terms(self, batch: Batch) -> tuple[float, float, float]:
        p, s = batch.prefill_tokens, batch.decode_seqs
        save = self._kv_launch + self._kv_write * (p + s) if p + s else 0.0
        prefill = decode = 0.0
        if p:
            flops = self._pf_flops_per_pair * batch.prefill_attention
            if self._pf_fitted is not None:
                per_flop, per_tok = self._pf_fitted
                t = flops * per_flop + per_tok * p
            else:
                t = roof_s(flops, self._pf_bytes_per_tok * p, self.gpu, self.fc.gemm)
            prefill = self._pf_launch + t
        if s:
            decode = self._dec_launch + self._dec_per_ctx * batch.decode_context
        return prefill, decode, save

    def layer_s(self, batch: Batch) -> float:
        """One decoder layer on one GPU: matmuls, element-wise ops and attention (no
        communication); what the profiled whole-layer times are compared with."""
        b = self.breakdown(batch)
        return (b["layers_linear"] + b["attention"]) / self.model.layers if b else 0.0

    def iteration_s(self, batch: Batch) -> float:
        if batch.prefill_tokens == 0 and batch.decode_seqs > 0:
            return self._decode_base(batch.decode_seqs) + self._ctx_s * batch.decode_context
        return sum(self.breakdown(batch).values())

    def _decode_base(self, seqs: int) -> float:
        """Context-free part of a pure-decode step of ``seqs`` sequences (memoised: the
        simulator asks for the same batch sizes over and over)."""
        base = self._decode_memo.get(seqs)
        if base is None:
            if len(self._decode_memo) > 65536:
                self._decode_memo.clear()
            base = sum(self.breakdown(Batch(decode_seqs=seqs)).values())
            self._decode_memo[seqs] = base
        return base

    def decode_run_s(self, decode_seqs: int, decode_context: int, steps: int) -> float:
        """Exact closed form: a pure-decode step costs ``a + c * context`` (only decode
        attention depends on the context, linearly), so ``steps`` steps cost
        ``steps * (a + c * ctx) + c * seqs * steps * (steps - 1) / 2``."""
        if steps <= 0 or decode_seqs <= 0:
            return 0.0
        first = self._decode_base(decode_seqs) + self._ctx_s * decode_context
        c = self._ctx_s
        return steps * first + c * decode_seqs * steps * (steps - 1) / 2

