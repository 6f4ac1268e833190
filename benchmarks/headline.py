"""Headline results (issue 8): does the best policy / router pair reach 99 % SLO attainment
where fifo / round_robin falls below 90 %, and does it sustain >= 1.5x fifo / round_robin's
load at 99 % attainment? On the Azure LLM 2023 conversation trace and the Mooncake FAST'25
conversation trace, in simulation, with the project-default request classes and SLOs.

Method: :mod:`sagellm.headline` (knee search, every pair at the knee, goal search per
finalist, sensitivity to the target, further workload seeds, deployment variants); report:
:mod:`sagellm.headline_report`. Writes ``reports/headline.md``,
``reports/headline_summaries.csv`` and ``reports/headline_*.png``; run files (Parquet, one
per simulation, reused by a rerun) go to ``--work``.

    .venv/bin/python benchmarks/headline.py --workers 2   # 234 s from scratch here (2 cores)

Cluster: Llama-3-8B on 2 H100 + 2 A100 (``sagellm compare``'s built-in ``default``: one TP-1
vLLM-like engine per GPU, at most 128 requests in flight per engine, global queue of 5,000).
For Mooncake the engines read the trace's prefix hashes as the 512-token blocks they are
(``hash_block_size``; left at the default, a shared 512-token block would count as 16
cached tokens) and the prefix-aware routers index 512-token blocks. The Mooncake engines
use 128-token KV blocks instead of vLLM's 16 because the simulator's per-block bookkeeping
makes 16-token blocks on 13k-token prompts about 30x slower; the baseline and the best pair
are rerun with 16-token blocks at the key loads and both are reported.

Every policy x router pair runs twice: as configured (the TPOT admission gate off, the
project default) and with ``ControlPlaneConfig.tpot_gate`` = ``--gate`` (0.8; pairs named
``<policy>+gate``), which holds requests in the control plane's queue, in the policy's order,
while an engine's predicted time per output token would exceed 0.8 x the tightest TPOT SLO
it serves (:mod:`control_plane.gate`). The baseline stays fifo / round_robin without the gate;
fifo+gate / round_robin is a finalist, so the gate's own gain is reported separately.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from control_plane import ControlPlaneConfig
from control_plane.engine import EngineConfig
from sagellm.compare_grid import ClusterChoice, builtin_cluster
from sagellm.compare_workload import WorkloadChoice
from sagellm.headline import Study, run_study
from sagellm.headline_report import write_headline
from sagellm.trace_files import default_traces_dir
from sim.config import SimConfig
from sim.hardware import instances_for

QUEUE_NOTE = ("the queue policies order the control plane's global queue. Without the TPOT "
              "gate it holds a request only while every engine already has 128 in flight; "
              "below that every policy dispatches at once and the engines' own FCFS order "
              "applies, so policies can only differ at high load (or by admission: slo sheds "
              "requests it deems SLO-infeasible, adaptive rejects under overload). With the "
              "gate (`+gate` pairs) it also holds requests that would push an engine's "
              "predicted time per output token past the gate, so it forms at lower load and "
              "the policy's order decides who waits")
GATE = 0.8  # ControlPlaneConfig.tpot_gate of the gated pairs
AZURE_DIAGNOSIS = (
    "why the gate (diagnosis at the knee without it, workload seed 0, made when the h100 "
    "family's matmuls were still fitted on Vidur's H100 profiles and the knee was at 0.8 x "
    "cap; the A100s' coefficients are unchanged since): with fifo / "
    "round_robin 1,109 interactive requests miss, 1,034 of them their TTFT, after 3.4 s "
    "(mean) in the control plane's queue (0.06 s in the engines' queues); with priority / "
    "round_robin 243 miss, 239 of them their 100 ms TPOT, every one on an A100: round robin "
    "keeps the A100s at ~119 requests in flight, where their decode steps, slowed by the "
    "prefills they interleave, take 67-70 ms per token at the median and 101-104 ms at the "
    "p90 (the H100s: 17 ms). The gate keeps interactive work off an engine predicted past "
    "0.8 x 100 ms and holds what fits nowhere in the queue, where priority orders it")
MOONCAKE_DIAGNOSIS = (
    "diagnosis at the knee (priority / round_robin, no gate; made when the h100 family's "
    "matmuls were still fitted on Vidur's H100 profiles and the knee was at 0.644 x cap): "
    "215 of the 227 missed "
    "interactive requests miss their 1 s TTFT, 159 of them on the A100s (79 % of the "
    "interactive requests served there miss, 21-27 % on the H100s): a mean prompt takes "
    "about 1 s to prefill on an A100; they waited 2.6 s (mean) in the engines' queues and "
    "0 s in the control plane's. The TPOT gate does not address that (it protects decode "
    "speed). A second gate, holding requests while an engine reports a waiting queue, was "
    "tried and left out: +6 points for round_robin (it steers it away from queued engines, "
    "as least_loaded already does), nothing for least_loaded, and priority still took the "
    "same decisions as fifo (the H100s had room). What would help is TTFT-aware placement "
    "(requests whose TTFT only the H100s can meet go there), not built here")
POLICIES = ("fifo", "priority", "slo", "cost", "adaptive", "fair")
MODEL = "llama-3-8b"
HARDWARE = (("h100", 2), ("a100", 2))  # as sagellm compare's built-in "default" cluster
MAX_INFLIGHT = 128
MAX_QUEUE = 5000


def routers(block_size: int, stride: int) -> tuple:
    """Every built-in router (``weighted_round_robin`` is left out: with the default unit
    weights it is round_robin) and an llm-d-like pipeline (BLIS / llm-d default scorer
    weights ``prefix-cache:2, queue-depth:1, kv-utilization:1``). ``block_size`` /
    ``stride``: the prefix-aware parts' view of the trace's prefix hashes."""
    prefix = {"block_size": block_size, "stride": stride}
    return ("round_robin", "random", "power_of_two", "least_connections", "least_loaded",
            "least_response_time", "session_affinity", {"type": "locality", "params": prefix},
            {"type": "pipeline", "params": {
                "name": "llm-d", "scorers": [[{"type": "prefix_cache", "params": prefix}, 2],
                                             ["queue_depth", 1], ["kv_utilization", 1]]}})


def hetero_cluster(name: str, *, block_size: int = 16, hash_block_size: int | None = None,
                   scheduling_policy: str = "fcfs", max_inflight: int = MAX_INFLIGHT
                   ) -> ClusterChoice:
    """The built-in ``default`` hardware with the given KV block / prefix-hash block sizes,
    engine scheduling policy and in-flight limit per engine."""
    engine = EngineConfig(block_size=block_size, hash_block_size=hash_block_size,
                          scheduling_policy=scheduling_policy)
    instances = []
    for gpu, n in HARDWARE:
        instances += instances_for(MODEL, gpu, n, engine=engine, id_prefix=gpu,
                                   max_inflight=max_inflight)
    definition = json.dumps({"headline_cluster": [MODEL, HARDWARE, max_inflight, MAX_QUEUE,
                                                  block_size, hash_block_size,
                                                  scheduling_policy]})
    return ClusterChoice(name, tuple(instances), ControlPlaneConfig(max_queue=MAX_QUEUE),
                         SimConfig(), definition=definition)


def variants(**kv: object) -> tuple[tuple[str, ClusterChoice], ...]:
    """Deployment variants run at the knee: engines that schedule by request priority (vLLM
    ``--scheduling-policy priority``), and 32 instead of 128 requests in flight per engine
    (so that the control plane's queue, where the policies act, forms earlier)."""
    return (("engines schedule by priority",
             hetero_cluster("default-engine-priority", scheduling_policy="priority", **kv)),
            ("32 in flight per engine", hetero_cluster("default-inflight32", max_inflight=32,
                                                       **kv)))


def studies(traces: Path, azure_requests: int | None, mooncake_requests: int,
            seed: int, seeds: tuple[int, ...], gate: float | None = GATE) -> list[Study]:
    """The two studies; every pair with the TPOT gate off and at ``gate`` (None: off only)."""
    gates = (None,) if gate is None else (None, gate)
    finalists = 5 if gate is None else 6  # the gate alone takes a finalist's place
    azure = Study(
        "azure_conv", "Azure LLM 2023 conversation",
        WorkloadChoice(trace=str(traces / "azure_llm_2023_conv.csv"), requests=azure_requests,
                       seed=seed, classes="default"),
        builtin_cluster("default"), POLICIES, routers(16, 8),
        grid=(0.05, 0.3, 0.6, 0.9, 1.2), seeds=seeds, variants=variants(), gates=gates,
        finalists=finalists,
        notes=(QUEUE_NOTE, AZURE_DIAGNOSIS, "the trace has no prefix hashes: locality "
               "reduces to the least "
               "utilised instance (= least_connections) and llm-d to its load scorers",
               "weighted_round_robin is left out: with the default unit weights it is "
               "round_robin"))
    mooncake = Study(
        "mooncake_conv", "Mooncake FAST'25 conversation",
        WorkloadChoice(trace=str(traces / "mooncake_fast25_conversation_trace.jsonl.gz"),
                       requests=mooncake_requests, seed=seed, classes="default"),
        hetero_cluster("default-kv128-hash512", block_size=128, hash_block_size=512),
        POLICIES, routers(512, 1), grid=(0.05, 0.3, 0.6, 0.9, 1.2),
        check_cluster=hetero_cluster("default-kv16-hash512", block_size=16,
                                     hash_block_size=512),
        seeds=seeds, variants=variants(block_size=128, hash_block_size=512), gates=gates,
        finalists=finalists,
        notes=(QUEUE_NOTE, MOONCAKE_DIAGNOSIS, "a mean Mooncake prompt (~13.7k tokens here) "
               "fills 1/30 of an "
               "engine's 411,520-token KV cache, so requests wait inside the engines (in "
               "their FCFS order) long before 128 are in flight: the control plane's queue "
               "rarely forms and only slo (shedding SLO-infeasible requests at admission) and "
               "adaptive differ from fifo",
               "engines use 128-token KV blocks (vLLM: 16) for simulation speed; the rerun "
               "with 16-token blocks below shows the effect; prefix hashes are read as the "
               "trace's 512-token blocks, and locality / llm-d index 512-token blocks "
               "(stride 1)",
               "Llama-3-8B's native context is 8k tokens; the simulator does not clamp "
               "prompts (Mooncake's reach 126k tokens), so read this as an 8B-class model "
               "with a long context"))
    return [azure, mooncake]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="worker processes [2]")
    ap.add_argument("--work", default="out/headline", help="run files [out/headline]")
    ap.add_argument("--out", default="reports", help="report folder [reports]")
    ap.add_argument("--traces", default=None, help="trace folder [shared/traces]")
    ap.add_argument("--azure-requests", type=int, default=None,
                    help="first N Azure requests [all 19,366]")
    ap.add_argument("--mooncake-requests", type=int, default=1500,
                    help="first N Mooncake requests [1500]")
    ap.add_argument("--seed", type=int, default=0, help="workload seed [0]")
    ap.add_argument("--check-seeds", default="1,2",
                    help="further workload seeds for the goal search of the key pairs [1,2]")
    ap.add_argument("--only", choices=("azure_conv", "mooncake_conv"), default=None)
    ap.add_argument("--gate", type=float, default=GATE,
                    help=f"TPOT gate of the gated pairs (ControlPlaneConfig.tpot_gate); 0: no "
                         f"gated pairs [{GATE:g}]")
    args = ap.parse_args(argv)
    traces = Path(args.traces) if args.traces else default_traces_dir()
    command = ".venv/bin/python benchmarks/headline.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    t0 = time.time()
    results = []
    seeds = tuple(int(x) for x in args.check_seeds.split(",") if x.strip())
    for study in studies(traces, args.azure_requests, args.mooncake_requests, args.seed,
                         seeds, args.gate or None):
        if args.only and study.name != args.only:
            continue
        r = run_study(study, Path(args.work) / study.name, workers=args.workers,
                      log=lambda m: print(f"[{time.time() - t0:6.0f} s] {m}", flush=True))
        results.append(r)
        base = r.study.baseline.label
        print(f"{study.name}: knee {r.knee_load:g} x cap; best at knee {r.best} "
              f"{r.at_knee.iloc[0]['slo_attainment']:.4f}; ratio at "
              f"{study.goal_target:.0%}: {r.ratio(r.best)}; {base} goal "
              f"{r.goal[base].passed}; {r.runs} runs", flush=True)
    path = write_headline(results, args.out, command=command.strip())
    print(f"report written to {path} ({time.time() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
