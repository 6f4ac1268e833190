"""Decision throughput and latency of the control plane (issue 2 targets).

For every registered router (FIFO policy) and every registered policy (round robin), on a
64-instance cluster, this times whole decision cycles with ``perf_counter_ns``:

- routers (every registered one, and ``locality_block16``): ``submit`` (dispatched at
  once: admission + routing + bookkeeping) + the ``complete`` of the request submitted 512
  cycles earlier, so 512 requests stay in flight and load-aware routers see uneven load.
  For the locality variants the cycle also hashes the 2,048-token prompt (a list of token
  ids) into prefix-chained blocks: prefix hashing included (see ``LOCALITY_VARIANTS`` for
  the block sizes). Prompts share one of 16 system prompts of 1,024 tokens. Building the
  Request object (the gateway's parsing) is outside the timed cycle for every router.
- policies: a saturated cluster (64 x 4 slots, 256 more requests queued): ``submit`` queues
  (admission + queue push) and ``complete`` dispatches the policy's next request (queue pop +
  routing), with mixed priorities, tenants and SLOs so each policy does its real work.

``decisions_per_s`` = cycles / summed cycle time; p50 / p99 over cycles. Each figure is the
median of ``--repeats`` runs. ``baseline`` is a bare dict insert + delete per cycle measured
in the same run, the ratio showing the cost of a decision against the cheapest bookkeeping.
``queued_100k_mb``: traced Python memory of 100,000 requests (built and) queued.
Rows named ``<name>+tpot_gate`` repeat a router / policy with the TPOT admission gate on
(``ControlPlaneConfig.tpot_gate=0.8``): its bookkeeping on every dispatch and release and
its per-request check while routing (the requests' 1 s TPOT SLO keeps every instance open).

    python benchmarks/bench_decisions.py --json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from collections import deque
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from control_plane import SLO, ControlPlane, Dispatch, InstanceSpec, Outcome, Request
from control_plane.policies import POLICIES
from control_plane.prefix import block_hashes
from control_plane.routing import ROUTERS

N_INSTANCES = 64
STANDING = 512
PROMPT_TOKENS = 2048
SHARED_TOKENS = 1024
BLOCK = 16
TARGETS = {  # name: (min decisions/s, max p99 us)
    "round_robin": (100_000, 50.0),
    "random": (100_000, 50.0),
    "power_of_two": (100_000, 50.0),
    "least_connections": (100_000, 50.0),
    "locality": (25_000, 200.0),
}
POLICY_TARGET = 50_000
GATE = "+tpot_gate"  # suffix: the same router / policy with ControlPlaneConfig.tpot_gate
GATED_ROUTERS = ("round_robin", "least_loaded")
GATED_POLICIES = ("fifo", "priority")


def _split(name: str) -> tuple[str, dict[str, float]]:
    """``round_robin+tpot_gate`` -> ("round_robin", {"tpot_gate": 0.8})."""
    if name.endswith(GATE):
        return name[: -len(GATE)], {"tpot_gate": 0.8}
    return name, {}


def _specs(max_inflight: int) -> list[InstanceSpec]:
    prices = (2.0, 3.5, 1.2, 4.0)
    return [InstanceSpec(f"i{k}", gpu_type="h100", price_per_hour_usd=prices[k % 4],
                         max_inflight=max_inflight, kv_capacity_tokens=0,
                         weight=1.0 + (k % 3), tokens_per_s=2000.0 * (1 + k % 2))
            for k in range(N_INSTANCES)]


_SLO = SLO(ttft_s=30.0, tpot_s=1.0)


def _request(k: int, prefix: tuple[int, ...] = (), prompt: int = 512) -> Request:
    return Request(f"r{k}", k * 1e-3, prompt, output_tokens=64 + k % 128,
                   priority=k % 5, tenant=("a", "b", "c")[k % 3],
                   session_id=f"s{k % 1000}", prefix_hashes=prefix, slo=_SLO)


def _outcome(k: int) -> Outcome:
    return Outcome(ttft_s=0.05 + (k % 7) * 0.01, e2e_s=1.0 + (k % 11) * 0.1, output_tokens=64)


def _summary(lat_ns: list[int]) -> dict[str, float]:
    lat_ns.sort()
    n = len(lat_ns)
    return {"decisions_per_s": n / (sum(lat_ns) / 1e9),
            "p50_us": lat_ns[n // 2] / 1e3,
            "p99_us": lat_ns[min(n - 1, int(n * 0.99))] / 1e3}


# The locality router matches prefixes in chunks of block_size x stride tokens. A gateway
# hashes prompts at that granularity (finer hashes would go unused): 128-token blocks, one
# index key each. The registered default (16-token blocks, every 8th chain hash indexed,
# the same 128-token match granularity) is measured too, as ``locality_block16``, with the
# prompt hashed in 16-token blocks.
LOCALITY_VARIANTS = {
    "locality": ({"type": "locality", "params": {"block_size": 128, "stride": 1}}, 128),
    "locality_block16": ("locality", BLOCK),
}


def run_router(name: str, cycles: int) -> dict[str, float]:
    name, gate = _split(name)
    spec, block = LOCALITY_VARIANTS.get(name, (name, BLOCK))
    m = ControlPlane(_specs(10_000), policy="fifo", router=spec, config={"seed": 1, **gate})
    outcomes = [_outcome(k) for k in range(64)]
    pc = time.perf_counter_ns
    lat: list[int] = []
    window: deque[str] = deque()
    locality = name in LOCALITY_VARIANTS
    systems = [list(range(s * 100_000, s * 100_000 + SHARED_TOKENS)) for s in range(16)]
    pre = None if locality else [_request(k) for k in range(cycles + STANDING)]
    for k in range(cycles + STANDING):
        hashing = 0
        if locality:
            tokens = systems[k % 16] + list(range(10**7 + k * PROMPT_TOKENS,
                                                  10**7 + k * PROMPT_TOKENS + SHARED_TOKENS))
            t0 = pc()
            hashes = block_hashes(tokens, block)
            hashing = pc() - t0
            r = _request(k, hashes, PROMPT_TOKENS)  # parsing a request is not a decision
        else:
            r = pre[k]
        t0 = pc() - hashing
        m.submit(r, k * 1e-3)
        if len(window) >= STANDING:
            m.complete(window.popleft(), k * 1e-3, outcomes[k & 63])
        t1 = pc()
        window.append(r.request_id)
        if k >= STANDING:
            lat.append(t1 - t0)
    return _summary(lat)


def run_policy(name: str, cycles: int) -> dict[str, float]:
    name, gate = _split(name)
    m = ControlPlane(_specs(4), policy=name, router="round_robin",
                     config={"seed": 1, "max_queue": 1_000_000, **gate})
    slots = N_INSTANCES * 4
    reqs = [_request(k) for k in range(cycles + 2 * slots)]
    outcomes = [_outcome(k) for k in range(64)]
    inflight: deque[str] = deque()
    for r in reqs[: 2 * slots]:
        inflight.extend(a.request.request_id for a in m.submit(r, 0.0)
                        if isinstance(a, Dispatch))
    pc = time.perf_counter_ns
    lat: list[int] = []
    for k in range(2 * slots, len(reqs)):
        now = k * 1e-3
        t0 = pc()
        m.submit(reqs[k], now)
        acts = m.complete(inflight.popleft(), now, outcomes[k & 63])
        t1 = pc()
        inflight.extend(a.request.request_id for a in acts if isinstance(a, Dispatch))
        lat.append(t1 - t0)
    return _summary(lat)


def run_baseline(cycles: int) -> dict[str, float]:
    d: dict[str, int] = {}
    pc = time.perf_counter_ns
    ids = [f"r{k}" for k in range(cycles)]
    lat = []
    for rid in ids:
        t0 = pc()
        d[rid] = 1
        del d[rid]
        lat.append(pc() - t0)
    return _summary(lat)


def queued_100k_mb() -> float:
    m = ControlPlane(_specs(1), policy="fifo", router="round_robin",
                     config={"max_queue": 200_000})
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for k in range(100_000 + N_INSTANCES):
        m.submit(Request(f"q{k}", k * 1e-3, 512, output_tokens=128, priority=k % 5,
                         tenant=("a", "b", "c")[k % 3]), k * 1e-3)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert m.cluster.queued == 100_000
    return used / 2**20


def _median_runs(fn, name, cycles, repeats) -> dict[str, float]:
    runs = [fn(name, cycles) for _ in range(repeats)]
    return {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--cycles", type=int, default=50_000, help="cycles per run")
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure (median)")
    ap.add_argument("--check", action="store_true", help="exit 2 when a target is missed")
    args = ap.parse_args()
    base = _median_runs(lambda _n, c: run_baseline(c), "baseline", args.cycles, args.repeats)
    routers = {}
    for name in [*ROUTERS.names(), "locality_block16", *(n + GATE for n in GATED_ROUTERS)]:
        cycles = args.cycles // 2 if name in LOCALITY_VARIANTS else args.cycles
        r = _median_runs(run_router, name, cycles, args.repeats)
        r["vs_baseline_p50"] = round(r["p50_us"] / max(base["p50_us"], 1e-3), 1)
        routers[name] = r
    policies = {}
    for name in [*POLICIES.names(), *(n + GATE for n in GATED_POLICIES)]:
        policies[name] = _median_runs(run_policy, name, args.cycles, args.repeats)
    mem = round(queued_100k_mb(), 1)
    failures = []
    for name, (rate, p99) in TARGETS.items():
        got = routers.get(name)
        if got is None:
            failures.append(f"router {name} missing")
        elif got["decisions_per_s"] < rate or got["p99_us"] > p99:
            failures.append(f"{name}: {got['decisions_per_s']:.0f}/s p99 {got['p99_us']}us "
                            f"(target >= {rate}/s, p99 <= {p99}us)")
    for name, got in policies.items():
        if got["decisions_per_s"] < POLICY_TARGET:
            failures.append(f"policy {name}: {got['decisions_per_s']:.0f}/s "
                            f"(target >= {POLICY_TARGET}/s)")
    if mem > 100:
        failures.append(f"queued_100k_mb {mem} > 100")
    out = {"instances": N_INSTANCES, "cycles": args.cycles, "repeats": args.repeats,
           "python": sys.version.split()[0], "baseline": base, "routers": routers,
           "policies": policies, "queued_100k_mb": mem, "targets_met": not failures,
           "failures": failures}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"{'router':<22}{'decisions/s':>13}{'p50 us':>9}{'p99 us':>9}")
        for name, r in routers.items():
            print(f"{name:<22}{r['decisions_per_s']:>13,.0f}{r['p50_us']:>9}{r['p99_us']:>9}")
        print(f"\n{'policy':<22}{'decisions/s':>13}{'p50 us':>9}{'p99 us':>9}")
        for name, r in policies.items():
            print(f"{name:<22}{r['decisions_per_s']:>13,.0f}{r['p50_us']:>9}{r['p99_us']:>9}")
        print(f"\nbaseline dict op p50 {base['p50_us']} us; 100,000 queued requests: {mem} MB")
        print("targets met" if not failures else "MISSED: " + "; ".join(failures))
    return 2 if failures and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
