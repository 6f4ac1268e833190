"""Simulated instances from hardware: a model on a GPU type with a parallel config.

One instance is one vLLM server (a replica: ``tp x pp`` GPUs; data parallelism is more
instances). From the shared performance model (``control_plane.perf``):

- KV capacity: ``kv_capacity_tokens(model, gpu, parallel, gpu_memory_utilization)``, in
  engine blocks of ``block_size`` tokens;
- iteration time: ``predictor_for(model, gpu, parallel)`` (a fitted profile table where one
  exists, else the calibrated roofline), wrapped for ``pp > 1`` so that ``pp``
  micro-batches are in flight (:mod:`control_plane.perf.pipelined`);
- expert parallelism across data-parallel replicas (``dp > 1`` with ``ep > 1``): each
  instance is one replica of the group, with the group's per-GPU memory and costs;
- the control plane's view (:class:`~control_plane.types.InstanceSpec`): price = GPU price
  x GPUs, ``max_inflight`` (default 2 x ``max_num_seqs``, so the engine keeps a waiting
  queue of its own as a real vLLM server does), KV capacity for the headroom check, and
  nominal speeds for latency estimates taken from the predictor: prefill tokens/s of a
  2,048-token prefill, seconds per output token at a batch of 32 sequences with 1,024
  tokens of context each, its growth per further sequence (from a batch of 64), throughput
  at a batch of 32.
"""

from __future__ import annotations

from dataclasses import replace

from control_plane.engine import EngineConfig
from control_plane.gate import NOMINAL_BATCH
from control_plane.perf import Batch, IterationPredictor
from control_plane.perf.hardware import get_gpu
from control_plane.perf.memory import kv_capacity_tokens
from control_plane.perf.models import get_model
from control_plane.perf.parallel import ParallelConfig
from control_plane.perf.pipelined import PipelinedPredictor
from control_plane.perf.profile import predictor_for
from control_plane.types import InstanceSpec
from sim.config import InstanceSim

__all__ = ["instances_for"]

_ESTIMATE_BATCH = NOMINAL_BATCH  # the batch InstanceSpec.decode_s_per_token is quoted at
_ESTIMATE_CONTEXT = 1024
_ESTIMATE_PREFILL = 2048


def instances_for(model: str, gpu: str, count: int, parallel: ParallelConfig | None = None,
                  *, engine: EngineConfig | None = None, gpu_memory_utilization: float = 0.9,
                  price_per_hour_usd: float | None = None, max_inflight: int | None = None,
                  id_prefix: str | None = None,
                  predictor: IterationPredictor | None = None) -> list[InstanceSim]:
    """``count`` identical instances of ``model`` on ``gpu`` with ``parallel`` (tp x pp GPUs
    each). ``engine``: scheduling settings (its ``num_gpu_blocks`` is replaced by the
    capacity computed here). ``predictor``: one replica's iteration time (e.g. a measured
    profile's ``FittedPredictor``) instead of :func:`predictor_for`'s choice. Infeasible
    combinations raise ValueError with the figures."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count={count!r}: must be an integer >= 1")
    m = get_model(model)
    g = get_gpu(gpu)
    par = parallel or ParallelConfig()
    if par.dp != 1 and par.ep == 1:
        raise ValueError(f"parallel dp={par.dp}: one simulated instance is one replica; "
                         "use more instances for data parallelism")
    # with expert parallelism across the dp x tp GPUs, each instance is one replica of the
    # group: memory (experts sharded over ep GPUs) and iteration time (all-to-all) follow
    # the whole group's config
    cfg = engine or EngineConfig()
    kv_tokens = kv_capacity_tokens(m, g, par, gpu_memory_utilization)
    cfg = replace(cfg, num_gpu_blocks=max(1, kv_tokens // cfg.block_size))
    predictor = predictor_for(m, g, par) if predictor is None else predictor
    if par.pp > 1:  # vLLM keeps pp micro-batches in flight
        predictor = PipelinedPredictor(predictor, par.pp)
    prefill_s = predictor.iteration_s(Batch(prefill_tokens=_ESTIMATE_PREFILL,
                                            prefill_attention=_ESTIMATE_PREFILL ** 2))
    decode_s = predictor.iteration_s(Batch(decode_seqs=_ESTIMATE_BATCH,
                                           decode_context=_ESTIMATE_BATCH * _ESTIMATE_CONTEXT))
    decode2_s = predictor.iteration_s(Batch(decode_seqs=2 * _ESTIMATE_BATCH,
                                            decode_context=2 * _ESTIMATE_BATCH
                                            * _ESTIMATE_CONTEXT))
    gpus = par.tp * par.pp
    price = g.price_per_hour_usd * gpus if price_per_hour_usd is None else price_per_hour_usd
    prefix = id_prefix or f"{m.name}-{g.name}-tp{par.tp}" + (f"pp{par.pp}" if par.pp > 1 else "")
    out = []
    for k in range(count):
        spec = InstanceSpec(
            f"{prefix}-{k}", gpu_type=g.name, price_per_hour_usd=price,
            max_inflight=max_inflight or 2 * cfg.max_num_seqs,
            kv_capacity_tokens=cfg.kv_capacity_tokens,
            tokens_per_s=_ESTIMATE_BATCH / decode_s,
            prefill_tokens_per_s=_ESTIMATE_PREFILL / prefill_s,
            decode_s_per_token=decode_s,
            decode_s_per_seq=max(0.0, (decode2_s - decode_s) / _ESTIMATE_BATCH))
        out.append(InstanceSim(spec, cfg, predictor))
    return out
