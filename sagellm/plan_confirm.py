"""Simulator confirmation for the parallelism planner.

``simulator_confirm(...)`` returns the ``confirm(estimate, rate_per_s) -> attainment``
callable that :func:`control_plane.parallelism.plan` expects: it deploys the candidate's
``dp`` replicas of ``tp x pp`` GPUs as simulated vLLM engines (same model, GPU, memory
fraction and scheduler limits as the analytic model), replays ``requests`` Poisson arrivals
at ``rate_per_s`` with (prompt, output) pairs drawn jointly from the workload's samples,
each carrying the SLO, routes them with ``least_loaded`` and returns the fraction that met
the SLO. Seeded: the same candidate and rate give the same answer.

With expert parallelism across replicas (``ep > 1``), each simulated replica has the
group's per-GPU memory (experts sharded) and iteration costs (all-to-all); requests still
go to replicas independently, as with vLLM's data-parallel attention.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from control_plane.engine import EngineConfig
from control_plane.parallelism import Estimate, PlanOptions, SLOTarget
from control_plane.perf.parallel import ParallelConfig
from sim import SimConfig, simulate
from sim.config import InstanceSim
from sim.hardware import instances_for
from workloads import arrivals
from workloads.trace import Trace

__all__ = ["simulator_confirm"]

_UNLIMITED = 1_000_000  # the control plane does not hold requests: vLLM queues them


def simulator_confirm(model: str, gpu: str, slo: SLOTarget, prompt_tokens: np.ndarray,
                      output_tokens: np.ndarray, options: PlanOptions | None = None, *,
                      requests: int = 1500, seed: int = 0
                      ) -> Callable[[Estimate, float], float]:
    """See the module docstring. ``prompt_tokens`` / ``output_tokens``: length samples."""
    if requests < 10:
        raise ValueError(f"requests={requests!r}: need at least 10 simulated requests")
    opts = options or PlanOptions()
    prompt = np.asarray(prompt_tokens, dtype=np.int64)
    output = np.asarray(output_tokens, dtype=np.int64)
    if prompt.shape != output.shape or not len(prompt):
        raise ValueError("prompt_tokens and output_tokens must be equal-length, non-empty")
    rng = np.random.Generator(np.random.PCG64(seed))
    pick = rng.integers(0, len(prompt), size=requests)
    prompt, output = prompt[pick], output[pick]
    engine = EngineConfig(max_num_seqs=opts.max_num_seqs,
                          max_num_batched_tokens=opts.max_num_batched_tokens)
    clusters: dict[ParallelConfig, list[InstanceSim]] = {}

    def cluster(p: ParallelConfig) -> list[InstanceSim]:
        if p not in clusters:
            layout = p if p.ep > 1 else ParallelConfig(tp=p.tp, pp=p.pp)
            clusters[p] = instances_for(
                model, gpu, p.dp, layout, engine=engine,
                gpu_memory_utilization=opts.gpu_memory_utilization,
                max_inflight=_UNLIMITED, id_prefix=f"tp{p.tp}pp{p.pp}")
        return clusters[p]

    def confirm(estimate: Estimate, rate_per_s: float) -> float:
        t = arrivals.poisson(rate_per_s, n=requests, seed=seed)
        n = len(t)
        trace = Trace(t, prompt[:n], output[:n], name="plan",
                      slo_ttft_s=np.full(n, np.nan if slo.ttft_s is None else slo.ttft_s),
                      slo_tpot_s=np.full(n, np.nan if slo.tpot_s is None else slo.tpot_s))
        result = simulate(trace.requests(), cluster(estimate.parallel), router="least_loaded",
                          config=SimConfig(keep_records=False, keep_series=False))
        return result.summary().slo_attainment

    return confirm
