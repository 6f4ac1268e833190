"""Simulated cluster: SimPy drivers that run the control plane in simulated time.

- :mod:`sim.driver`: :func:`simulate` and :class:`SimResult`; settings in :mod:`sim.config`.
- :mod:`sim.engine`: the default service model, one vLLM-like engine (v1 scheduler
  semantics, fast-forward of identical decode iterations), with its paged KV cache and
  prefix cache in :mod:`sim.kv_cache`; configured by :class:`EngineConfig`.
- :mod:`sim.cluster`: instances running engines in SimPy: network delay, scrapes, failures.
- :mod:`sim.columns`: compact per-request columns for very large runs.
- :mod:`sim.request_level`: the coarse request-level alternative.
"""

from sim.cluster import InstanceSeries
from sim.columns import RecordColumns
from sim.config import EngineModel, InstanceSim, SimConfig
from sim.driver import SimResult, simulate
from sim.engine import Engine
from sim.engine_config import EngineConfig, StepOutcome
from sim.kv_cache import BlockPool, KVOverAllocation
from sim.request_level import RequestLevelModel

__all__ = [
    "BlockPool",
    "Engine",
    "EngineConfig",
    "EngineModel",
    "InstanceSeries",
    "InstanceSim",
    "KVOverAllocation",
    "RecordColumns",
    "RequestLevelModel",
    "SimConfig",
    "SimResult",
    "StepOutcome",
    "simulate",
]
