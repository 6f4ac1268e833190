"""Planner speed: a full plan for 8 GPUs of one type.

Target (issue 5): a full plan for 8 GPUs of one type, simulator confirmation included, in
under 60 s on one core. This measures the whole plan (enumerate, memory, operating batch
search, TTFT/TPOT, ranking, then the simulator confirmation of the top 3 candidates: a
rate search of up to 10 simulated runs of 1,500 requests each) for each case, median wall
time of ``--repeat`` runs, and the analytic-only plan as the baseline measured in the same
run (single thread). ``wall_s`` /
``configs_considered`` at the top level are those of the main case, Llama-3-70B on
8 x H100 with TTFT p99 <= 2 s and TPOT p99 <= 100 ms.

    python benchmarks/bench_plan.py [--json] [--repeat N] [--check]

``--check`` exits 1 if the main case's ``wall_s`` is 60 s or more.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from control_plane.parallelism import SLOTarget, WorkloadStats, plan  # noqa: E402
from control_plane.perf import load_coefficients  # noqa: E402
from sagellm.plan_confirm import simulator_confirm  # noqa: E402

LIMIT_S = 60.0
SLO = SLOTarget(ttft_s=2.0, tpot_s=0.1)
CASES = {
    "llama-3-70b/8xh100": ("llama-3-70b", "h100", 8),
    "mixtral-8x7b/8xh100": ("mixtral-8x7b", "h100", 8),
    "llama-3-8b/8xl40s": ("llama-3-8b", "l40s", 8),
}
MAIN = "llama-3-70b/8xh100"


PROMPT_PCT = {0: 16, 50: 900, 90: 3000, 99: 7000, 100: 12000}
OUTPUT_PCT = {0: 1, 50: 200, 90: 600, 99: 1200, 100: 2000}


def workload() -> WorkloadStats:
    """A conversation-like length mix (fixed percentiles, no file needed)."""
    return WorkloadStats.from_percentiles(PROMPT_PCT, OUTPUT_PCT,
                                          "conversation-like percentiles")


def samples(n: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Length samples drawn from the same percentile tables (for the simulator)."""
    rng = np.random.Generator(np.random.PCG64(seed))

    def draw(pct: dict) -> np.ndarray:
        q = rng.uniform(0, 100, n)
        return np.maximum(1, np.rint(np.interp(q, list(pct), list(pct.values())))).astype(int)

    return draw(PROMPT_PCT), draw(OUTPUT_PCT)


def bench(repeat: int) -> dict:
    coeffs = load_coefficients()
    w = workload()
    cases = {}
    prompt, output = samples()
    for name, (model, gpu, gpus) in CASES.items():
        times, analytic = [], []
        for _ in range(repeat):
            t0 = time.perf_counter()
            plan(model, gpu, gpus, workload_stats=w, slo=SLO, coeffs=coeffs)
            analytic.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            confirm = simulator_confirm(model, gpu, SLO, prompt, output)
            p = plan(model, gpu, gpus, workload_stats=w, slo=SLO, coeffs=coeffs,
                     confirm=confirm)
            times.append(time.perf_counter() - t0)
        cases[name] = {"wall_s": round(statistics.median(times), 3),
                       "analytic_wall_s": round(statistics.median(analytic), 5),
                       "configs_considered": p.configs_considered,
                       "feasible": sum(r.estimate.feasible for r in p.rows),
                       "winner": p.winner.config, "vllm_args": p.vllm_args,
                       "goodput_per_gpu": round(p.winner.estimate.goodput_per_gpu, 1)}
    main = cases[MAIN]
    return {"case": MAIN, "wall_s": main["wall_s"],
            "configs_considered": main["configs_considered"],
            "confirmation": "simulator, top 3, 1,500 requests per run",
            "limit_s": LIMIT_S, "repeat": repeat, "cases": cases}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON")
    ap.add_argument("--repeat", type=int, default=5, help="runs per case (median)")
    ap.add_argument("--check", action="store_true", help=f"fail if wall_s >= {LIMIT_S:g} s")
    args = ap.parse_args()
    out = bench(max(1, args.repeat))
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name, c in out["cases"].items():
            print(f"{name:22s} {c['wall_s'] * 1e3:8.1f} ms  {c['configs_considered']:3d} configs "
                  f"({c['feasible']} feasible)  winner {c['winner']:16s} "
                  f"{c['goodput_per_gpu']:7.0f} tok/s/GPU")
    if args.check and out["wall_s"] >= LIMIT_S:
        print(f"FAIL: {out['wall_s']:.1f} s >= {LIMIT_S:g} s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
