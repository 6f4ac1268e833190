"""Simulated cluster: SimPy drivers that run the control plane in simulated time.

- :mod:`sim.driver`: :func:`simulate` and :class:`SimResult`; settings in :mod:`sim.config`.
- the default service model is :class:`~control_plane.engine.Engine`, one vLLM-like
  engine (v1 scheduler semantics, fast-forward of identical decode iterations, paged KV
  cache and prefix cache), configured by :class:`EngineConfig`. It lives in
  :mod:`control_plane.engine` (pure, no SimPy) because the emulated engine of
  :mod:`live.emulate` runs the same model in real time; it is re-exported here.
- :mod:`sim.cluster`: instances running engines in SimPy: network delay, scrapes, failures.
- :mod:`sim.columns`: compact per-request columns for very large runs.
- :mod:`sim.request_level`: the coarse request-level alternative.
"""

from control_plane.engine import BlockPool, Engine, EngineConfig, KVOverAllocation, StepOutcome
from sim.cluster import InstanceSeries
from sim.columns import RecordColumns
from sim.config import EngineModel, InstanceSim, SimConfig
from sim.driver import SimResult, simulate
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
