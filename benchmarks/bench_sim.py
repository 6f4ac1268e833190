"""Simulator speed (issue 4 targets): simulated requests per wall second on one core.

Instances: Llama-3-8B on H100, TP1 (``RooflinePredictor``; KV capacity from the memory model
at ``gpu_memory_utilization`` 0.9), vLLM defaults (max_num_seqs 256, 8,192 batched tokens,
chunked prefill, prefix caching, 16-token blocks), fast-forward on.

- ``azure_conv``: ``azure_llm_2023_conv.csv`` (19,366 requests) rate-scaled to ``--load``
  of the 4-instance capacity (capacity measured here, once, by a saturated replay),
  with per-request records kept.
- ``synthetic_1m``: ``--requests`` (default 1,000,000) Poisson requests with Azure-conv-like
  lengths (lognormal: prompt median 1,020, output median 129) on 32 instances at ``--load``
  of capacity, generated lazily, with only summaries kept (``keep_records=False``); peak
  RSS of the process is reported (targets: >= 20,000 req/s, <= 300 MB).

    python benchmarks/bench_sim.py [--requests 1000000] [--skip-1m] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from control_plane import InstanceSpec, Request
from control_plane.perf import (
    ParallelConfig,
    RooflinePredictor,
    get_gpu,
    get_model,
    kv_capacity_tokens,
)
from sim import EngineConfig, InstanceSim, SimConfig, simulate
from workloads import read_trace, transform

TRACE = Path("/work/shared/traces/azure_llm_2023_conv.csv")


def instances(n: int) -> list[InstanceSim]:
    pred = RooflinePredictor("llama-3-8b", "h100")
    kv = kv_capacity_tokens(get_model("llama-3-8b"), get_gpu("h100"), ParallelConfig())
    cfg = EngineConfig(num_gpu_blocks=kv // 16)
    return [InstanceSim(InstanceSpec(f"i{k}", max_inflight=1024), cfg, pred)
            for k in range(n)]


def synthetic(n: int, rate: float, seed: int = 0, chunk: int = 10_000):
    rng = np.random.default_rng(seed)
    t0 = 0.0
    for c in range(0, n, chunk):
        m = min(chunk, n - c)
        t = (t0 + np.cumsum(rng.exponential(1.0 / rate, m))).tolist()
        t0 = t[-1]
        p = np.clip(np.round(rng.lognormal(np.log(1020), 0.5, m)), 1, 30_000).astype(int)
        o = np.clip(np.round(rng.lognormal(np.log(129), 0.99, m)), 1, 4_000).astype(int)
        for i, (a, b, d) in enumerate(zip(t, p.tolist(), o.tolist(), strict=True)):
            yield Request(f"s{c + i}", a, b, output_tokens=d)


def timed(requests, n_inst: int, keep: bool):
    t = time.perf_counter()
    res = simulate(requests, instances(n_inst), config=SimConfig(keep_records=keep))
    return time.perf_counter() - t, res.summary()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--load", type=float, default=0.8)
    ap.add_argument("--skip-1m", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    out = {}
    trace = read_trace(TRACE)
    # capacity of 4 instances: throughput of a saturated replay (20x the trace rate)
    _, sat = timed(transform.scale_rate(trace, 20.0).requests(), 4, False)
    cap4 = sat.throughput_rps
    base_rate = len(trace) / trace.duration_s
    scaled = transform.scale_rate(trace, args.load * cap4 / base_rate)
    wall, s = timed(scaled.requests(), 4, True)
    out["azure_conv"] = {"requests": len(trace), "instances": 4,
                         "capacity_rps": round(cap4, 1),
                         "offered_rps": round(len(trace) / scaled.duration_s, 1),
                         "wall_s": round(wall, 2), "sim_req_per_s": round(len(trace) / wall),
                         "ttft_p50_ms": round(s.ttft_s.p50 * 1e3, 1),
                         "tpot_p50_ms": round(s.tpot_s.p50 * 1e3, 2)}
    if not args.skip_1m:
        rate = args.load * cap4 / 4 * 32
        wall, s = timed(synthetic(args.requests, rate), 32, False)
        out["synthetic_1m"] = {
            "requests": args.requests, "instances": 32, "offered_rps": round(rate, 1),
            "wall_s": round(wall, 1), "sim_req_per_s": round(args.requests / wall),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "ttft_p50_ms": round(s.ttft_s.p50 * 1e3, 1),
            "tpot_p50_ms": round(s.tpot_s.p50 * 1e3, 2)}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for name, row in out.items():
        print(f"{name:14s} " + "  ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
