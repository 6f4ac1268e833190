"""Builders for the ``sagellm compare`` tests: a tiny Azure-format trace, small grids."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from sagellm.compare import Grid, WorkloadChoice, grid_from_dict

SMALL_CLUSTER = {"cluster": {"instances": [
    {"id": "fast", "count": 2, "gpu_type": "h100", "price_per_hour_usd": 4.0,
     "max_inflight": 16, "kv_capacity_tokens": 60000, "decode_s_per_token": 0.01,
     "prefill_tokens_per_s": 20000.0},
    {"id": "slow", "gpu_type": "a100", "price_per_hour_usd": 2.0, "max_inflight": 8,
     "kv_capacity_tokens": 30000, "decode_s_per_token": 0.02}]},
    "control": {"max_queue": 60}}


def write_azure_trace(path: Path, n: int = 160, seed: int = 1) -> Path:
    """An Azure-LLM-2023-format CSV (TIMESTAMP, ContextTokens, GeneratedTokens)."""
    rng = np.random.default_rng(seed)
    t0 = datetime(2023, 11, 16, 18, 15, 46)
    gaps = np.cumsum(rng.exponential(0.2, n))
    prompt = rng.integers(50, 1500, n)
    output = rng.integers(5, 200, n)
    lines = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for g, p, o in zip(gaps.tolist(), prompt.tolist(), output.tolist(), strict=True):
        ts = (t0 + timedelta(seconds=g)).strftime("%Y-%m-%d %H:%M:%S.%f") + "0"
        lines.append(f"{ts},{p},{o}")
    path.write_text("\n".join(lines) + "\n")
    return path


def small_grid(trace: Path, *, requests: int = 120, loads=(0.5, 1.5),
               policies=("fifo", "priority"), routers=("round_robin", "least_loaded"),
               seed: int = 0) -> Grid:
    grid = grid_from_dict({"clusters": [{"name": "small", **SMALL_CLUSTER}],
                           "policies": list(policies), "routers": list(routers),
                           "loads": list(loads)})
    return Grid(WorkloadChoice(trace=str(trace), requests=requests, seed=seed),
                grid.policies, grid.routers, grid.loads, grid.clusters).validate()
