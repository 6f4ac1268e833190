"""Analytic estimate of one configuration: memory, operating batch, TTFT, TPOT, goodput, cost.

Operating batch ``B`` (running sequences per replica) is the largest one that

- fits the KV cache: ``B <= B_kv = kv_tokens / (E[P] + E[O] / 2 + 8)`` (mean context of a
  running sequence plus half a 16-token block of fragmentation) and ``B <= max_num_seqs``;
- keeps prefill sustainable (:mod:`~control_plane.parallelism.latency`);
- meets the SLOs: ``TPOT(B) <= slo.tpot_s`` and ``TTFT(P_q, B) <= slo.ttft_s`` with ``P_q``
  the prompt length at the SLO percentile.

TPOT and TTFT grow with ``B``, so ``B`` is found by bisection on ``[1, min(B_kv,
max_num_seqs)]``. Then, with ``dp`` replicas in a budget of ``gpus`` GPUs (``gpus_used =
tp * pp * dp``)::

    tokens/s per replica   = B / TPOT(B)                        (output tokens)
    max rate               = dp * B / (TPOT(B) * E[O])          (requests/s)
    goodput per GPU        = dp * B / TPOT(B) / gpus            (output tokens/s at SLO)
    cost per Mtok (USD)    = price_per_gpu_hour * gpus_used / 3600 / (dp * B / TPOT) * 1e6

Goodput is per GPU *of the budget* (idle GPUs count against a config); cost counts the GPUs
the deployment runs. An infeasible config has ``feasible = False`` and a ``reason``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from control_plane.parallelism.latency import ReplicaLatency
from control_plane.parallelism.memory import MemoryEstimate, estimate_memory
from control_plane.parallelism.options import PlanOptions
from control_plane.parallelism.workload import SLOTarget, WorkloadStats, format_s
from control_plane.perf.base import IterationPredictor
from control_plane.perf.hardware import GPUSpec
from control_plane.perf.models import ModelSpec
from control_plane.perf.parallel import ParallelConfig

__all__ = ["Estimate", "PredictorFactory", "estimate"]

PredictorFactory = Callable[[ParallelConfig], IterationPredictor]
FRAGMENTATION_TOKENS = 8


@dataclass(frozen=True, slots=True)
class Estimate:
    """Analytic figures of one configuration. Times in seconds, rates per second; latency
    fields are at the operating ``batch`` (``*_min_s``: at batch 1), 0 / nan when the
    configuration does not fit in memory."""

    parallel: ParallelConfig
    gpus: int
    memory: MemoryEstimate
    batch: int
    batch_limit: str
    ttft_s: float
    tpot_s: float
    ttft_min_s: float
    tpot_min_s: float
    ttft_prompt_tokens: int
    tokens_per_s_replica: float
    rate_per_s: float
    goodput_per_gpu: float
    usd_per_m_tokens: float
    pp_bubble: float
    pp_imbalance: float
    feasible: bool
    reason: str | None

    @property
    def gpus_used(self) -> int:
        return self.parallel.total_gpus

    @property
    def tokens_per_s(self) -> float:
        """Output tokens/s of the whole deployment at the operating point."""
        return self.parallel.dp * self.tokens_per_s_replica


def _largest(ok: Callable[[int], bool], hi: int) -> int:
    """Largest B in [1, hi] with ok(B), assuming ok is monotone (True then False); 0 if none."""
    if hi < 1 or not ok(1):
        return 0
    lo = 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def estimate(model: ModelSpec, gpu: GPUSpec, parallel: ParallelConfig, gpus: int,
             workload: WorkloadStats, slo: SLOTarget, predictor: PredictorFactory,
             options: PlanOptions | None = None) -> Estimate:
    """The analytic :class:`Estimate` of ``parallel`` (see the module docstring)."""
    options = options or PlanOptions()
    nan = float("nan")
    mem = estimate_memory(model, gpu, parallel, workload.max_total_tokens,
                          options.gpu_memory_utilization, options.reserve_bytes)
    prompt_q = max(1, round(workload.prompt_at(slo.percentile / 100.0)))
    if not mem.fits:
        return Estimate(parallel, gpus, mem, 0, "memory", nan, nan, nan, nan, prompt_q,
                        0.0, 0.0, 0.0, float("inf"), nan, nan, False, mem.reason)
    lat = ReplicaLatency(predictor(parallel), parallel, workload.prompt_mean,
                         workload.prompt_sq_mean, workload.output_mean,
                         options.max_num_batched_tokens)
    b_kv = max(1, int(mem.kv_tokens // (workload.mean_context_tokens + FRAGMENTATION_TOKENS)))
    hi = min(b_kv, options.max_num_seqs)

    tpot_cache: dict[int, float] = {}
    ttft_cache: dict[int, float] = {}

    def tpot(b: int) -> float:
        if b not in tpot_cache:
            tpot_cache[b] = lat.tpot_s(b)
        return tpot_cache[b]

    def ttft(b: int) -> float:
        if b not in ttft_cache:
            ttft_cache[b] = lat.ttft_s(prompt_q, b)
        return ttft_cache[b]

    checks: list[tuple[str, Callable[[int], bool]]] = [("prefill", lat.sustainable)]
    if slo.tpot_s is not None:
        checks.append(("tpot_slo", lambda b: tpot(b) <= slo.tpot_s))
    if slo.ttft_s is not None:
        checks.append(("ttft_slo", lambda b: ttft(b) <= slo.ttft_s))
    batch = _largest(lambda b: all(ok(b) for _, ok in checks), hi)
    tpot1, ttft1 = tpot(1), ttft(1)
    if batch == 0:
        why = []
        p = f"p{slo.percentile:g}"
        if not lat.sustainable(1):
            why.append("prefill cannot keep up even at batch 1 (max_num_batched_tokens "
                       f"{options.max_num_batched_tokens})")
        if slo.tpot_s is not None and tpot1 > slo.tpot_s:
            why.append(f"TPOT {format_s(tpot1)} > SLO {format_s(slo.tpot_s)} at any batch")
        if slo.ttft_s is not None and ttft1 > slo.ttft_s:
            why.append(f"TTFT {format_s(ttft1)} > SLO {format_s(slo.ttft_s)} for the {p} "
                       f"prompt ({prompt_q} tokens) at any batch")
        return Estimate(parallel, gpus, mem, 0, "slo", ttft1, tpot1, ttft1, tpot1, prompt_q,
                        0.0, 0.0, 0.0, float("inf"), *lat.pipeline(1), False, "; ".join(why))
    if batch == hi:
        limit = "kv" if b_kv <= options.max_num_seqs else "max_num_seqs"
    else:
        limit = next(name for name, ok in checks if not ok(batch + 1))
    t = tpot(batch)
    per_replica = batch / t
    total = parallel.dp * per_replica
    price = (gpu.price_per_hour_usd if options.price_per_gpu_hour is None
             else options.price_per_gpu_hour)
    cost = price * parallel.total_gpus / 3600.0 / total * 1e6
    bubble, imbalance = lat.pipeline(batch)
    return Estimate(parallel, gpus, mem, batch, limit, ttft(batch), t, ttft1, tpot1, prompt_q,
                    per_replica, total / workload.output_mean, total / gpus, cost, bubble,
                    imbalance, True, None)
