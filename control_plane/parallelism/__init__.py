"""Parallelism planner: tensor, pipeline, data and expert parallelism, chosen automatically.

- :mod:`configs`: enumerate (TP, PP, DP, EP) for a GPU budget; vLLM flags of one.
- :mod:`memory`: weights, expert and KV memory per GPU (from ``control_plane.perf``).
- :mod:`latency`: TPOT / TTFT of a replica with pipeline stages and chunked prefill.
- :mod:`estimate`: operating batch under KV and SLO limits, goodput/GPU, cost/Mtok.
- :mod:`analytic`: ranking by objective with the reason each config won or lost.
- :mod:`search`: highest rate meeting an SLO-attainment target (simulator confirmation).
- :mod:`planner`: :func:`plan` -> :class:`Plan`; :mod:`table`: CSV rows and text.
"""

from control_plane.parallelism.analytic import OBJECTIVES, rank, reasons
from control_plane.parallelism.configs import enumerate_configs, vllm_flags
from control_plane.parallelism.estimate import Estimate, PredictorFactory, estimate
from control_plane.parallelism.latency import ReplicaLatency
from control_plane.parallelism.memory import MemoryEstimate, estimate_memory
from control_plane.parallelism.options import PlanOptions
from control_plane.parallelism.planner import (
    Confirm,
    Plan,
    PlanError,
    PlanRow,
    estimate_config,
    min_gpus,
    plan,
)
from control_plane.parallelism.search import RateSearch, search_rate
from control_plane.parallelism.table import COLUMNS, format_plan, plan_table
from control_plane.parallelism.workload import SLOTarget, WorkloadStats, format_s

__all__ = [
    "COLUMNS",
    "OBJECTIVES",
    "Confirm",
    "Estimate",
    "MemoryEstimate",
    "Plan",
    "PlanError",
    "PlanOptions",
    "PlanRow",
    "PredictorFactory",
    "RateSearch",
    "ReplicaLatency",
    "SLOTarget",
    "WorkloadStats",
    "enumerate_configs",
    "estimate",
    "estimate_config",
    "estimate_memory",
    "format_plan",
    "format_s",
    "min_gpus",
    "plan",
    "plan_table",
    "rank",
    "reasons",
    "search_rate",
    "vllm_flags",
]
