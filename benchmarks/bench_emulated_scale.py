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

``--split``: the shape a user deploys instead of one loop. ``sagellm emulate --instances N``
serves the engines from a process of its own and ``sagellm gateway`` (the same policy,
router, intervals and ``max_inflight``) runs in another, both on uvloop; the replay client
stays here. The engines' lateness is read from their ``/metrics``
(``sagellm_emulator_max_late_seconds``) after each run. The processes start afresh for each
run, as the in-process engines do.

    python benchmarks/bench_emulated_scale.py [--json] [--engines 4,16,32,64] [--repeats 3]
                                              [--split]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from live.launcher import reserve_port
from live.procs import stop_process_group
from live.replay import ReplayConfig, replay
from sagellm.emulated_fidelity import (
    LIVE,
    MODEL,
    SIM,
    EmulatedSetup,
    compare_emulated,
    emulated_workload,
)

MAX_LATE_S = 0.05
FIGURES = (("ttft", 0.5), ("ttft", 0.9), ("e2e", 0.5), ("e2e", 0.9))


_CLI = [sys.executable, "-c", "from sagellm.cli import main; main()"]
_LATE = re.compile(r"^sagellm_emulator_max_late_seconds\{[^}]*\} (\S+)$", re.M)


def _emulate_cmd(setup: EmulatedSetup) -> list[str]:
    e, p = setup.engine, setup.predictor
    return [*_CLI, "emulate", "--model", "llama-3-8b", "--served-model-name", MODEL,
            "--predictor", f"linear:overhead_s={p.overhead_s!r},per_token_s={p.per_token_s!r},"
            f"per_context_s={p.per_context_s!r},per_attention_s={p.per_attention_s!r}",
            "--instances", str(setup.engines), "--port", "0",
            "--max-num-seqs", str(e.max_num_seqs),
            "--max-num-batched-tokens", str(e.max_num_batched_tokens),
            "--block-size", str(e.block_size), "--num-gpu-blocks", str(e.num_gpu_blocks),
            "--scheduling-policy", e.scheduling_policy,
            "--enable-prefix-caching" if e.enable_prefix_caching else "--no-enable-prefix-caching",
            "--enable-chunked-prefill" if e.enable_chunked_prefill
            else "--no-enable-chunked-prefill"]


def _wait_for(what: str, ready, proc: subprocess.Popen, log: Path, timeout_s: float = 60):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        got = ready()
        if got:
            return got
        time.sleep(0.1)
    raise SystemExit(f"{what} not ready after {timeout_s:g} s:\n{log.read_text()[-2000:]}")


def _engine_urls(log: Path, engines: int) -> list[str] | None:
    """The URLs ``sagellm emulate`` printed, once all ``engines`` are up."""
    urls = re.findall(r"^engine (http://\S+) ", log.read_text(), re.M)
    return urls if len(urls) == engines else None


def _gateway_up(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def _split(setup: EmulatedSetup, policy: str, router: str) -> Iterator[tuple[str, list[str]]]:
    """``sagellm emulate`` and ``sagellm gateway`` in processes of their own: the gateway's
    URL and the engines'."""
    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        emu_log, gw_log = Path(tmp) / "emulate.log", Path(tmp) / "gateway.log"
        try:
            with emu_log.open("w") as f:
                procs.append(subprocess.Popen(_emulate_cmd(setup), stdout=f,
                                              stderr=subprocess.STDOUT, start_new_session=True))
            urls = _wait_for("sagellm emulate", lambda: _engine_urls(emu_log, setup.engines),
                             procs[0], emu_log)
            hold = reserve_port("127.0.0.1")
            port = hold.getsockname()[1]
            hold.close()
            cmd = [*_CLI, "gateway", "--policy", policy, "--router", router, "--port", str(port),
                   "--scrape-interval", str(setup.scrape_interval_s),
                   "--tick-interval", str(setup.tick_interval_s), "--health-interval", "0.5",
                   "--max-inflight", str(setup.max_inflight), "--log-level", "warning"]
            for name, url in zip(setup.names, urls, strict=True):
                cmd += ["--engine", f"{name}={url}"]
            with gw_log.open("w") as f:
                procs.append(subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                              start_new_session=True))
            gw = f"http://127.0.0.1:{port}"
            _wait_for("sagellm gateway", lambda: _gateway_up(gw), procs[1], gw_log)
            yield gw, urls
        finally:
            for proc in procs:
                stop_process_group(proc)


def _engine_late_s(url: str) -> float:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        m = _LATE.search(r.read().decode())
    if m is None:
        raise SystemExit(f"{url}/metrics: no sagellm_emulator_max_late_seconds")
    return float(m.group(1))


def run_split(requests, setup: EmulatedSetup, policy, router):
    """compare_emulated's live side with the engines and the gateway in processes of their
    own (``--split``)."""
    with _split(setup, str(policy), str(router)) as (gw, urls):
        res = asyncio.run(replay(requests, gw, ReplayConfig(model=MODEL)))
        return res.records, res.max_send_lag_s, max(_engine_late_s(u) for u in urls)


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


def one(engines: int, per_engine: int, load: float, seed: int, split: bool) -> dict:
    setup = EmulatedSetup(engines=engines)
    records, runs = compare_emulated(emulated_workload(per_engine * engines, seed=seed),
                                     loads=(load,), routers=("round_robin",), setup=setup,
                                     max_late_s=MAX_LATE_S, retries=0,
                                     live=run_split if split else None)
    (run,) = runs.to_dict("records")
    if run["live_ok"] != run["requests"] or run["sim_ok"] != run["requests"]:
        raise SystemExit(f"{engines} engines: {run['live_ok']} live / {run['sim_ok']} "
                         f"simulated of {run['requests']} requests completed")
    return {"offered_rps": run["offered_rps"], "max_send_lag_ms": run["max_send_lag_s"] * 1e3,
            "max_engine_late_ms": run["max_engine_late_s"] * 1e3,
            "real_time": bool(run["kept_real_time"]), "err": _errors(records)}


def measure(engines: int, per_engine: int, load: float, repeats: int, split: bool) -> dict:
    runs = [one(engines, per_engine, load, seed, split) for seed in range(repeats)]
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
    ap.add_argument("--split", action="store_true",
                    help="engines (sagellm emulate) and gateway (sagellm gateway) in processes "
                    "of their own, not on this process's one event loop")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    if args.per_engine < 1 or args.repeats < 1 or not args.load > 0:
        ap.error("--per-engine and --repeats must be >= 1 and --load > 0")
    rows = []
    for n in args.engines:
        rows.append(measure(n, args.per_engine, args.load, args.repeats, args.split))
        if not args.json:
            r = rows[-1]
            print(f"{n:4d} engines {r['offered_rps']:7.1f} req/s: send lag "
                  f"{r['max_send_lag_ms']:6.1f} ms, iteration ends {r['max_engine_late_ms']:5.1f}"
                  f" ms late; real time {r['real_time_runs']}/{r['repeats']}; live/sim - 1: "
                  + ", ".join(f"{k} {v:+.1%}" for k, v in r["err"].items()), flush=True)
    kept = [r["engines"] for r in rows if r["real_time_runs"] == r["repeats"]]
    result = {"load": args.load, "per_engine": args.per_engine, "split": args.split,
              "scales": rows,
              "largest_real_time": max(kept) if kept else None}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"largest engine count kept in real time in every run: "
              f"{result['largest_real_time']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
