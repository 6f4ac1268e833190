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
  RSS of that run's own process is reported (targets: >= 20,000 req/s, <= 300 MB).

The Azure replay is timed ``--repeats`` times (median) and once more step by step
(``fast_forward=False``) as the baseline measured in the same run: the speed-up, and
whether both give the same summary, are printed with the figures.

    python benchmarks/bench_sim.py [--requests 1000000] [--skip-1m] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
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


def timed(requests, n_inst: int, keep: bool, fast_forward: bool = True):
    t = time.perf_counter()
    res = simulate(requests, instances(n_inst),
                   config=SimConfig(keep_records=keep, fast_forward=fast_forward))
    return time.perf_counter() - t, res.summary()


def run_1m(n: int, rate: float) -> dict:
    """The 1M-request run (in its own process, so its peak RSS is its own)."""
    wall, s = timed(synthetic(n, rate), 32, False)
    return {"requests": n, "instances": 32, "offered_rps": round(rate, 1),
            "wall_s": round(wall, 1), "sim_requests_per_s": round(n / wall),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "ttft_p50_ms": round(s.ttft_s.p50 * 1e3, 1),
            "tpot_p50_ms": round(s.tpot_s.p50 * 1e3, 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=1_000_000)
    ap.add_argument("--load", type=float, default=0.8)
    ap.add_argument("--repeats", type=int, default=3, help="runs of the Azure replay (median)")
    ap.add_argument("--skip-1m", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--check", action="store_true", help="exit 2 when a target is missed")
    ap.add_argument("--child-1m", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_1m is not None:
        print(json.dumps(run_1m(args.requests, args.child_1m)))
        return 0
    out: dict = {}
    trace = read_trace(TRACE)
    # capacity of 4 instances: throughput of a saturated replay (20x the trace rate)
    _, sat = timed(transform.scale_rate(trace, 20.0).requests(), 4, False)
    cap4 = sat.throughput_rps
    base_rate = len(trace) / trace.duration_s
    scaled = transform.scale_rate(trace, args.load * cap4 / base_rate)
    walls = []
    for _ in range(args.repeats):
        wall, s = timed(scaled.requests(), 4, True)
        walls.append(wall)
    wall = statistics.median(walls)
    # baseline in the same run: the same replay step by step (no fast-forward)
    base_wall, base = timed(scaled.requests(), 4, True, fast_forward=False)
    out["azure_conv"] = {"requests": len(trace), "instances": 4,
                         "capacity_rps": round(cap4, 1),
                         "offered_rps": round(len(trace) / scaled.duration_s, 1),
                         "wall_s": round(wall, 3), "wall_s_runs": [round(w, 3) for w in walls],
                         "sim_requests_per_s": round(len(trace) / wall),
                         "step_by_step_wall_s": round(base_wall, 2),
                         "speedup_vs_step_by_step": round(base_wall / wall, 1),
                         "same_results_as_step_by_step": base.to_dict() == s.to_dict(),
                         "ttft_p50_ms": round(s.ttft_s.p50 * 1e3, 1),
                         "tpot_p50_ms": round(s.tpot_s.p50 * 1e3, 2)}
    if not args.skip_1m:
        rate = args.load * cap4 / 4 * 32
        child = subprocess.run([sys.executable, __file__, "--requests", str(args.requests),
                                "--child-1m", repr(rate)], capture_output=True, text=True,
                               check=True)
        out["synthetic_1m"] = json.loads(child.stdout)
    missed = []
    if out["azure_conv"]["sim_requests_per_s"] < 20_000:
        missed.append("azure_conv sim_requests_per_s < 20000")
    one = out.get("synthetic_1m")
    if one and one["sim_requests_per_s"] < 20_000:
        missed.append("synthetic_1m sim_requests_per_s < 20000")
    if one and one["peak_rss_mb"] > 300:
        missed.append("synthetic_1m peak_rss_mb > 300")
    out["missed"] = missed
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name, row in out.items():
            if isinstance(row, dict):
                print(f"{name:14s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
        print("targets met" if not missed else "MISSED: " + "; ".join(missed))
    return 2 if missed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
