"""Figures of :mod:`sagellm.headline` runs beyond the standard summary: backlog at the end,
per-class latency and miss reasons (:func:`run_extras`, from a run's records), and what no
schedule can save (:func:`isolated_ttft_s`, :func:`isolated_ttft_miss`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from sagellm.compare_grid import ClusterChoice

__all__ = ["isolated_ttft_miss", "isolated_ttft_s", "run_extras"]


def run_extras(df: pd.DataFrame) -> dict[str, float]:
    """Backlog and per-class figures of one run, from its records.

    ``waiting_at_end``: requests (not rejected) still without a first token when the last
    one arrived; ``drain_s``: last finish - last arrival. A stable run ends with a small
    backlog; a large one means the load is beyond what the cluster sustains and the
    attainment owes something to the trace ending. Per priority level ``p``:
    ``ttft_p99_s_p{p}``, ``e2e_p99_s_p{p}`` (completed requests) and the shares of the
    class's requests that missed their TTFT / TPOT / end-to-end bound
    (``miss_ttft_p{p}``, ...; one request can miss several) or were not completed
    (``miss_lost_p{p}``: rejected or failed)."""
    last = float(df["arrival_s"].max())
    first = df["first_token_s"].to_numpy(dtype=float, na_value=np.nan)
    arrival = df["arrival_s"].to_numpy(dtype=float)
    finish = df["finish_s"].to_numpy(dtype=float, na_value=np.nan)
    ok = (df["status"] == "ok").to_numpy()
    live = (df["status"] != "rejected").to_numpy()
    with np.errstate(invalid="ignore"):
        waiting = live & (np.isnan(first) | (first > last))
    out: dict[str, float] = {
        "waiting_at_end": int(np.count_nonzero(waiting)),
        "drain_s": float(np.nanmax(finish) - last) if np.isfinite(finish).any() else math.nan}
    out_tokens = df["output_tokens"].to_numpy(dtype=float)
    ttft = first - arrival
    e2e = finish - arrival
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(out_tokens > 1, (finish - first) / np.maximum(out_tokens - 1, 1), 0.0)
    prio = df["priority"].to_numpy()
    for p in sorted(set(prio.tolist())):
        mine = prio == p
        done = mine & ok
        out[f"ttft_p99_s_p{p}"] = (float(np.percentile(ttft[done], 99)) if done.any()
                                   else math.nan)
        out[f"e2e_p99_s_p{p}"] = (float(np.percentile(e2e[done], 99)) if done.any()
                                  else math.nan)
        n = int(np.count_nonzero(mine))
        for name, got in (("ttft", ttft), ("tpot", tpot), ("e2e", e2e)):
            bound = df[f"slo_{name}_s"].to_numpy(dtype=float, na_value=np.nan)
            with np.errstate(invalid="ignore"):
                miss = done & (got > bound)
            out[f"miss_{name}_p{p}"] = float(np.count_nonzero(miss)) / n
        out[f"miss_lost_p{p}"] = float(np.count_nonzero(mine & ~ok)) / n
    return out


def isolated_ttft_s(prompt_tokens: Sequence[int], instances: Sequence[Any]) -> np.ndarray:
    """Per prompt, its time to first token alone on the fastest kind of instance: prefill in
    chunks of the engine's ``max_num_batched_tokens`` at the simulator's own iteration-time
    predictor, no prefix-cache hit, nothing else running."""
    from control_plane.perf import Batch
    from sim.config import EngineModel, InstanceSim

    prompts = np.asarray(prompt_tokens, dtype=np.int64)
    lengths = np.unique(prompts)
    best = np.full(len(lengths), np.inf)
    seen: set = set()
    for x in instances:
        sim = x if isinstance(x, InstanceSim) else EngineModel().instance_for(x)
        kind = (sim.spec.gpu_type, sim.engine.max_num_batched_tokens, id(sim.predictor))
        if kind in seen:
            continue
        seen.add(kind)
        predictor = sim.predictor or EngineModel.predictor_for(sim.spec)
        chunk = sim.engine.max_num_batched_tokens
        for i, n in enumerate(lengths.tolist()):
            t = 0.0
            done = 0
            while done < n:
                c = min(chunk, n - done)
                t += predictor.iteration_s(Batch(prefill_tokens=c,
                                                 prefill_attention=c * (done + c)))
                done += c
            best[i] = min(best[i], t)
    return best[np.searchsorted(lengths, prompts)]


def isolated_ttft_miss(trace: Any, cluster: ClusterChoice) -> dict[int, float]:
    """Per priority level, the share of requests whose TTFT SLO is shorter than their
    :func:`isolated_ttft_s` (what no scheduling can save, prefix-cache hits aside)."""
    if trace.priority is None or trace.slo_ttft_s is None:
        return {}
    need = isolated_ttft_s(trace.prompt_tokens, cluster.instances)
    slo = np.asarray(trace.slo_ttft_s, dtype=float)
    prio = np.asarray(trace.priority)
    out = {}
    for p in sorted(set(prio.tolist())):
        mine = prio == p
        with np.errstate(invalid="ignore"):
            out[int(p)] = float(np.mean(need[mine] > slo[mine]))
    return out
