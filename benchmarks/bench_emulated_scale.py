"""How many emulated engines this machine drives in real time behind the gateway (issue 7:
``sagellm emulate`` as a GPU-free stand-in for testing the gateway with 16+ engines), and
how close the gateway over them stays to the simulator at each scale.

For each engine count N (``--engines``): :func:`sagellm.emulated_fidelity.compare_emulated`
runs ``--per-engine`` x N requests of :func:`~sagellm.emulated_fidelity.emulated_workload`
(short requests, shared system prompts) at ``--load`` of the N engines' estimated capacity,
round robin, through the simulator and through the live gateway in front of N emulated
engines (:class:`live.emulate.EmulatedEngine`; gateway, engines and replay client on one
event loop in this process, as in tests/live/test_emulate_vs_sim.py). The offered rate
grows with N, so the machine falls behind at some N.

Per N, medians of ``--repeats`` runs:

- ``max_send_lag_ms``: the latest a request left the client after its arrival time;
  ``max_engine_late_ms``: the latest an emulated iteration's tokens went out after its
  planned end; ``real_time_runs``: runs within 50 ms on both (the threshold
  :func:`compare_emulated` repeats a run at);
- ``err``: ``live / sim - 1`` of TTFT and end-to-end p50 and p90 (the baseline is the
  simulation of the same requests, computed in the same run).

``largest_real_time``: the largest N whose every run kept real time.

    python benchmarks/bench_emulated_scale.py [--json] [--engines 4,16,32,64] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import numpy as np

from sagellm.emulated_fidelity import (
    LIVE,
    SIM,
    EmulatedSetup,
    compare_emulated,
    emulated_workload,
)

MAX_LATE_S = 0.05
FIGURES = (("ttft", 0.5), ("ttft", 0.9), ("e2e", 0.5), ("e2e", 0.9))


def _errors(records) -> dict[str, float]:
    """``live / sim - 1`` of each latency quantile over the requests both served."""
    out, q = {}, {}
    for source in (SIM, LIVE):
        part = records[(records["source"] == source) & (records["status"] == "ok")]
        lat = {"ttft": part["first_token_s"] - part["arrival_s"],
               "e2e": part["finish_s"] - part["arrival_s"]}
        q[source] = {f"{m}_p{int(p * 100)}": float(np.quantile(lat[m], p)) for m, p in FIGURES}
    for k in q[SIM]:
        out[k] = round(q[LIVE][k] / q[SIM][k] - 1, 4)
    return out


def one(engines: int, per_engine: int, load: float, seed: int) -> dict:
    setup = EmulatedSetup(engines=engines)
    records, runs = compare_emulated(emulated_workload(per_engine * engines, seed=seed),
                                     loads=(load,), routers=("round_robin",), setup=setup,
                                     max_late_s=MAX_LATE_S, retries=0)
    (run,) = runs.to_dict("records")
    if run["live_ok"] != run["requests"] or run["sim_ok"] != run["requests"]:
        raise SystemExit(f"{engines} engines: {run['live_ok']} live / {run['sim_ok']} "
                         f"simulated of {run['requests']} requests completed")
    return {"offered_rps": run["offered_rps"], "max_send_lag_ms": run["max_send_lag_s"] * 1e3,
            "max_engine_late_ms": run["max_engine_late_s"] * 1e3,
            "real_time": bool(run["kept_real_time"]), "err": _errors(records)}


def measure(engines: int, per_engine: int, load: float, repeats: int) -> dict:
    runs = [one(engines, per_engine, load, seed) for seed in range(repeats)]
    med = statistics.median
    return {"engines": engines, "requests": per_engine * engines,
            "offered_rps": round(med(r["offered_rps"] for r in runs), 1),
            "max_send_lag_ms": round(med(r["max_send_lag_ms"] for r in runs), 1),
            "max_engine_late_ms": round(med(r["max_engine_late_ms"] for r in runs), 1),
            "real_time_runs": sum(r["real_time"] for r in runs), "repeats": repeats,
            "err": {k: round(med(r["err"][k] for r in runs), 4) for k in runs[0]["err"]}}


def _counts(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: want engine counts like 4,16,32") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: engine counts must be >= 1")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engines", type=_counts, default=[4, 16, 32, 64],
                    help="engine counts, comma-separated (default 4,16,32,64)")
    ap.add_argument("--per-engine", type=int, default=25, help="requests per engine")
    ap.add_argument("--load", type=float, default=0.6,
                    help="fraction of the engines' estimated capacity offered")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.per_engine < 1 or args.repeats < 1 or not args.load > 0:
        ap.error("--per-engine and --repeats must be >= 1 and --load > 0")
    rows = []
    for n in args.engines:
        rows.append(measure(n, args.per_engine, args.load, args.repeats))
        if not args.json:
            r = rows[-1]
            print(f"{n:4d} engines {r['offered_rps']:7.1f} req/s: send lag "
                  f"{r['max_send_lag_ms']:6.1f} ms, iteration ends {r['max_engine_late_ms']:5.1f}"
                  f" ms late; real time {r['real_time_runs']}/{r['repeats']}; live/sim - 1: "
                  + ", ".join(f"{k} {v:+.1%}" for k, v in r["err"].items()), flush=True)
    kept = [r["engines"] for r in rows if r["real_time_runs"] == r["repeats"]]
    result = {"load": args.load, "per_engine": args.per_engine, "scales": rows,
              "largest_real_time": max(kept) if kept else None}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"largest engine count kept in real time in every run: "
              f"{result['largest_real_time']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
