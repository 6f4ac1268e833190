"""How sure a fidelity error is: per-request (paired) errors and bootstrap intervals.

The fidelity report (:mod:`sagellm.fidelity`) compares quantiles of a few hundred requests.
A quantile of such a sample can sit where the latencies are sparse: in the Azure
conversation replays of the report (150 requests), the 45th to 55th percentile of the live
end-to-end latencies spanned 0.89-1.35 s around a median of 1.05 s. There a median moves by
10-15 % when a handful of requests end a little earlier or later: two live replays of the same
requests on the same engines differed by up to 15.7 % in their e2e median while, request by
request, the median ratio of their latencies was 0.99-1.02 (one replay, 0.90, ran on a faster
machine). Two figures separate that from what the simulator gets wrong:

- :func:`paired_errors`: the median over requests of ``sim / live - 1`` of each request's
  TTFT, TPOT and end-to-end latency, each live replay against its own simulation. Signed; a
  bias of the simulator shows here whatever the quantiles do.
- :func:`error_intervals`: for each latency figure, the interval that holds ``level`` of the
  errors ``sim / live - 1`` (signed) when the requests are drawn again with replacement
  (the same draw in every replay, live and simulated together, ``draws`` times, seeded). A
  target miss whose interval reaches into the target is within what another sample of the
  same trace could have given (:func:`sagellm.fidelity.target_report` lists those apart).

- :func:`window_errors`: the paired error of each consecutive fifth (by default) of the
  requests: where in a replay the simulator was off, and, between two live replays of the
  same requests, how much the machine itself moved from one minute to the next.

Throughput (requests over the whole run's span) is not a per-request figure and has no
interval.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from sagellm.fidelity import pooled_figures, signed_errors
from sagellm.latency_cdfs import latencies

__all__ = ["LATENCY_FIELDS", "aligned", "drift_summary", "error_intervals", "error_table",
           "paired_errors", "window_errors"]

# figure -> (latency column, quantile)
LATENCY_FIELDS = {"ttft_p50": ("ttft_s", 0.5), "ttft_p90": ("ttft_s", 0.9),
                  "tpot_p50": ("tpot_s", 0.5), "e2e_p50": ("e2e_s", 0.5),
                  "e2e_p90": ("e2e_s", 0.9)}
_COLUMNS = ("ttft_s", "tpot_s", "e2e_s")


def aligned(records: pd.DataFrame, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Each latency column of ``records`` (a records frame) in the order of ``ids``; NaN for
    a request that did not complete (or is missing). ValueError naming the duplicates if a
    request id occurs twice."""
    dup = records["request_id"][records["request_id"].duplicated()]
    if len(dup):
        raise ValueError(f"records: request id(s) {sorted(set(dup))[:5]} occur more than once")
    lat = latencies(records).set_index("request_id")
    index = pd.Index(list(ids))
    return {c: lat[c].reindex(index).to_numpy(dtype=float) for c in _COLUMNS}


def _stack(replays: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if not replays:
        raise ValueError("no replays")
    n = {len(r["e2e_s"]) for r in replays}
    if len(n) != 1:
        raise ValueError(f"replays of different lengths {sorted(n)}: align them to the same "
                         f"requests (aligned())")
    return {c: np.stack([r[c] for r in replays]) for c in _COLUMNS}


def paired_errors(live: Sequence[dict[str, np.ndarray]],
                  sim: Sequence[dict[str, np.ndarray]]) -> dict[str, float]:
    """``{ttft, tpot, e2e}``: the median over (replay, request) of ``sim / live - 1``, live
    replay k against simulation k (both :func:`aligned` to the same requests); requests
    missing on either side are left out (NaN if none is left)."""
    a, b = _stack(live), _stack(sim)
    if a["e2e_s"].shape != b["e2e_s"].shape:
        raise ValueError(f"live {a['e2e_s'].shape} and simulated {b['e2e_s'].shape} replays "
                         f"differ in shape")
    return {c.removesuffix("_s"): _median_error(a[c], b[c]) for c in _COLUMNS}


def _median_error(live: np.ndarray, sim: np.ndarray) -> float:
    """The median of ``sim / live - 1`` over the requests with both (NaN if none)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        r = sim / live
    r = r[np.isfinite(r)]
    return float(np.median(r) - 1.0) if r.size else float("nan")


def window_errors(reference: dict[str, np.ndarray], other: dict[str, np.ndarray], *,
                  windows: int = 5, column: str = "tpot_s") -> list[float]:
    """The median of ``other / reference - 1`` of ``column`` over each of ``windows``
    consecutive, equal slices of the requests (both :func:`aligned` to the same requests in
    arrival order; NaN for a slice without a request completed on both sides). A simulation
    against its live replay, the simulator's bias through the replay; a live replay against
    another of the same requests, how the machine's speed moved between them: the fidelity
    report's ``drift``."""
    if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
        raise ValueError(f"windows={windows!r}: must be an int >= 1")
    if column not in _COLUMNS:
        raise ValueError(f"column={column!r}: one of {_COLUMNS}")
    a, b = reference[column], other[column]
    if a.shape != b.shape:
        raise ValueError(f"reference {a.shape} and other {b.shape} differ in shape")
    return [_median_error(a[sl], b[sl])
            for sl in np.array_split(np.arange(a.size), min(windows, max(a.size, 1)))]


def drift_summary(runs: Sequence[dict]) -> dict[str, float] | None:
    """Over the fidelity report's ``runs[].drift``: the median and 90th percentile of the
    absolute per-window TPOT errors of the simulator against its live replays
    (``sim_vs_live_*``) and of later live replays against the first (``live_vs_first_*``,
    the machine against itself); None when no run has two live replays."""
    def pool(key: str) -> np.ndarray:
        v = np.abs(np.asarray([x for r in runs for w in r["drift"][key] for x in w], float))
        return v[np.isfinite(v)]
    live, sim = pool("live_vs_first_tpot"), pool("sim_vs_live_tpot")
    if not live.size or not sim.size:
        return None
    return {"sim_vs_live_median": float(np.median(sim)),
            "sim_vs_live_p90": float(np.quantile(sim, 0.9)),
            "live_vs_first_median": float(np.median(live)),
            "live_vs_first_p90": float(np.quantile(live, 0.9))}


def error_intervals(live: Sequence[dict[str, np.ndarray]],
                    sim: Sequence[dict[str, np.ndarray]], *, level: float = 0.9,
                    draws: int = 1000, seed: int = 0) -> dict[str, list[float]]:
    """Per latency figure (:data:`LATENCY_FIELDS`), ``[low, high]`` of the signed error
    ``sim / live - 1`` of the figures pooled over the replays, over ``draws`` bootstrap
    draws of the requests (see the module doc)."""
    if not 0 < level < 1:
        raise ValueError(f"level={level!r}: must be in (0, 1)")
    if draws < 1:
        raise ValueError(f"draws={draws!r}: must be >= 1")
    a, b = _stack(live), _stack(sim)
    n = a["e2e_s"].shape[1]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(draws, n))
    out = {}
    for field, (col, q) in LATENCY_FIELDS.items():
        # (draws, replays x n) samples, quantiles over the pooled replays of each draw
        la = a[col][:, idx].transpose(1, 0, 2).reshape(draws, -1)
        sb = b[col][:, idx].transpose(1, 0, 2).reshape(draws, -1)
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # a draw without values: NaN
            err = np.nanquantile(sb, q, axis=1) / np.nanquantile(la, q, axis=1) - 1.0
        err = err[np.isfinite(err)]
        tail = (1 - level) / 2
        out[field] = ([float(np.quantile(err, tail)), float(np.quantile(err, 1 - tail))]
                      if err.size else [float("nan"), float("nan")])
    return out


def _sim_of(live_source: str) -> str:
    """``live`` -> ``sim``, ``live-2`` -> ``sim-2``; any other live label (``live
    (emulated engines)``) -> ``sim``."""
    suffix = live_source.removeprefix("live")
    return "sim" + suffix if re.fullmatch(r"-\d+", suffix) else "sim"


def error_table(records: pd.DataFrame, *, level: float = 0.9, draws: int = 1000,
                seed: int = 0) -> pd.DataFrame:
    """Per (load, router) of fidelity records (``source``, ``load`` and ``router`` columns,
    as :func:`sagellm.sim_vs_live.read_fidelity_folder` reads them): for each latency
    figure its signed error ``sim / live - 1`` over the pooled replays (``<figure>``) and its
    bootstrap interval (``<figure>_lo``, ``<figure>_hi``), and the paired errors
    (``paired_ttft``, ``paired_tpot``, ``paired_e2e``). Live source ``live`` is paired with
    ``sim``, ``live-2`` with ``sim-2``, and so on (each replay with its own simulation, the
    same request ids); a group without such pairs is left out."""
    missing = [c for c in ("source", "load", "router", "request_id") if c not in records]
    if missing:
        raise ValueError(f"records: missing column(s) {missing}")
    rows = []
    for (load, router), g in records.groupby(["load", "router"], sort=True):
        by = {str(s): f for s, f in g.groupby("source")}
        pairs = [(s, _sim_of(s)) for s in sorted(by) if s.startswith("live")]
        pairs = [(a, b) for a, b in pairs if b in by]
        if not pairs:
            continue
        la, sa = [], []
        for lsrc, ssrc in pairs:
            ids = by[lsrc]["request_id"].astype(str).tolist()
            la.append(aligned(by[lsrc], ids))
            sa.append(aligned(by[ssrc], ids))
        ci = error_intervals(la, sa, level=level, draws=draws, seed=seed)
        # the point errors as the fidelity report computes them
        point = signed_errors(pooled_figures([by[b] for _, b in pairs]),
                              pooled_figures([by[a] for a, _ in pairs]))
        row = {"load": load, "router": router, "replays": len(pairs)}
        for field in LATENCY_FIELDS:
            row[field] = point[field]
            row[f"{field}_lo"], row[f"{field}_hi"] = ci[field]
        row.update({f"paired_{k}": v for k, v in paired_errors(la, sa).items()})
        rows.append(row)
    return pd.DataFrame(rows)
