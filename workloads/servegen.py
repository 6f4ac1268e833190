"""ServeGen descriptors -> sampled request streams (Xiang et al., "ServeGen: Workload
Characterization and Generation of Large Language Model Serving in Production",
arXiv:2505.09999; data reshaped from github.com/alibaba/ServeGen, see
``/work/shared/traces/README.md`` section 3).

ServeGen releases, per top client of a model, one arrival descriptor per 10-minute window
(mean rate, inter-arrival distribution Gamma or Weibull with shape and scale) and per 6-hour
window length PMFs; requests are synthesised per client and merged.

:func:`servegen_trace`, per active client window of ``W = 600`` s starting at ``w``:

1. ``n = round(rate_rps * W * rate_scale)`` requests (round half to even, numpy ``rint``).
2. Draw ``n + 1`` gaps ``g_0..g_n`` from the window's distribution (Gamma(shape) or
   Weibull(shape); the scale cancels in step 3) and rescale them to fill the window:
   ``g_i' = g_i * W / sum(g)``, as ServeGen does so that the window holds exactly ``n``
   requests. Arrivals ``w + g_0' + ... + g_i'`` for ``i < n`` lie in ``(w, w + W)``; the
   ``n + 1``-th gap keeps a request off the window end (for exponential gaps this is exactly
   a Poisson process conditioned on ``n`` arrivals: uniform order statistics).
3. Merge all clients and sort; ``tenant = "client-<client_id>"``.
4. Lengths from the PMFs of the enclosing 6-hour window (:class:`LengthPmfs`), or any
   :class:`~workloads.lengths.LengthModel`.

The output covers ``[start_s, start_s + duration_s)`` of the released span, rebased so that
``start_s`` is time 0; windows cut by these bounds are generated whole and then cut.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workloads._params import Seed, as_rng, check_number
from workloads.errors import TraceFormatError
from workloads.lengths import LengthModel
from workloads.rate_curves import Step
from workloads.servegen_files import (
    PMF_WINDOW_S,
    WINDOW_S,
    LengthPmfs,
    plain,
    read_length_pmf,
    read_table,
)
from workloads.trace import Trace

__all__ = ["PMF_WINDOW_S", "WINDOW_S", "ClientWindows", "LengthPmfs", "aggregate_rate_curve",
           "read_client_windows", "read_length_pmf", "servegen_trace"]

_WINDOW_COLUMNS = ("category", "model", "client_id", "window_start_s", "rate_rps", "iat_cv",
                   "iat_dist", "iat_param1", "iat_param2")
_DISTS = {"gamma": "Gamma", "weibull": "Weibull"}


@dataclass(frozen=True, eq=False)
class ClientWindows:
    """Active 10-minute client windows of one model, sorted by (client_id, window_start_s).

    ``iat_dist`` holds ``"Gamma"`` / ``"Weibull"``; ``line`` the file line of each row."""

    path: str
    model: str
    client_id: np.ndarray
    window_start_s: np.ndarray
    rate_rps: np.ndarray
    iat_cv: np.ndarray
    iat_dist: np.ndarray
    iat_param1: np.ndarray
    iat_param2: np.ndarray
    line: np.ndarray

    def __len__(self) -> int:
        return len(self.client_id)


def read_client_windows(path: str | Path, model: str,
                        category: str | None = None) -> ClientWindows:
    """Rows of ``model`` from a ``servegen_client_windows.csv[.gz]``-style file.

    Errors (:class:`~workloads.errors.TraceFormatError` with file, line, field): a missing
    column, a non-numeric value, a negative or non-finite rate, an unknown ``iat_dist``,
    shape or scale <= 0, a window start < 0, a duplicate (client_id, window_start_s).
    """
    df, lines = read_table(path, _WINDOW_COLUMNS, model, category,
                           numeric=("client_id", "window_start_s", "rate_rps", "iat_cv",
                                    "iat_param1", "iat_param2"))
    path = str(path)

    def bad(mask: np.ndarray, field: str, why: str) -> None:
        if mask.any():
            i = int(np.argmax(mask))
            value = plain(df[field].iloc[i])
            raise TraceFormatError(path, int(lines[i]), field, f"{value!r}: {why}")

    cid = df["client_id"].to_numpy(np.float64)
    bad((cid < 0) | (cid != np.rint(cid)), "client_id", "must be an integer >= 0")
    ws = df["window_start_s"].to_numpy(np.float64)
    bad(ws < 0, "window_start_s", "must be >= 0")
    bad(df["rate_rps"].to_numpy() < 0, "rate_rps", "must be >= 0")
    bad(df["iat_cv"].to_numpy() < 0, "iat_cv", "must be >= 0")
    dist = df["iat_dist"].astype(str).str.strip().str.lower().map(_DISTS)
    bad(dist.isna().to_numpy(), "iat_dist", "must be Gamma or Weibull")
    for field in ("iat_param1", "iat_param2"):
        bad(df[field].to_numpy() <= 0, field, "must be > 0 (shape, scale)")
    order = np.lexsort((ws, cid))
    dup = np.zeros(len(order), dtype=bool)
    dup[order[1:]] = (np.diff(cid[order]) == 0) & (np.diff(ws[order]) == 0)
    bad(dup, "window_start_s", "duplicate window for this client_id")

    def col(values: Any, dtype: Any) -> np.ndarray:
        a = np.asarray(values, dtype=dtype)[order]
        a.flags.writeable = False
        return a

    return ClientWindows(
        path, model, col(cid, np.int64), col(ws, np.float64),
        col(df["rate_rps"], np.float64), col(df["iat_cv"], np.float64),
        col(dist, object), col(df["iat_param1"], np.float64),
        col(df["iat_param2"], np.float64), col(lines, np.int64))


def aggregate_rate_curve(path: str | Path, model: str, category: str | None = None) -> Step:
    """``servegen_aggregate_rate.csv`` as a step curve: ``total_rate_rps`` on each 600 s
    window, 0 after the last (for :func:`workloads.arrivals.from_rate_curve`)."""
    df, _ = read_table(path, ("category", "model", "window_start_s", "total_rate_rps"), model,
                       category, numeric=("window_start_s", "total_rate_rps"))
    df = df.sort_values("window_start_s", kind="stable")
    ws = df["window_start_s"].to_numpy(np.float64)
    rates = df["total_rate_rps"].to_numpy(np.float64)
    return Step(np.append(ws, ws[-1] + WINDOW_S), np.append(rates, 0.0))


def _window_gaps(shape: np.ndarray, gamma: np.ndarray, m: np.ndarray,
                 rng: np.random.Generator) -> np.ndarray:
    """``m[k]`` gaps per window, rescaled to sum to ``WINDOW_S`` within each window."""
    total = int(m.sum())
    starts = np.concatenate([[0], np.cumsum(m)[:-1]])
    seg = np.repeat(np.arange(len(m)), m)
    is_gamma = np.repeat(gamma, m)
    logg = np.empty(total)
    with np.errstate(divide="ignore"):  # log(0) = -inf for gaps that underflow
        logg[is_gamma] = np.log(rng.standard_gamma(np.repeat(shape[gamma], m[gamma])))
        # Weibull(c) = E ** (1 / c), E standard exponential; in logs so tiny c cannot overflow
        c = np.repeat(shape[~gamma], m[~gamma])
        logg[~is_gamma] = np.log(rng.standard_exponential(len(c))) / c
    top = np.maximum.reduceat(logg, starts)
    flat = ~np.isfinite(top)  # every gap underflowed: space the requests evenly
    g = np.exp(logg - np.where(flat, 0.0, top)[seg])
    g[flat[seg]] = 1.0
    return g * (WINDOW_S / np.add.reduceat(g, starts))[seg]


def servegen_trace(windows: ClientWindows, pmfs: LengthPmfs | LengthModel, *,
                   start_s: float = 0.0, duration_s: float | None = None,
                   rate_scale: float = 1.0, seed: Seed = 0,
                   clients: Iterable[int] | None = None, name: str | None = None) -> Trace:
    """Requests of the selected client windows (see the module docstring for the method).

    ``clients``: only these client ids. Draws, in order: Gamma gaps, Weibull gaps (each in
    (client, window) order), then lengths. ``meta`` records the parameters, the windows and
    clients used, and :class:`LengthPmfs` clamping counts.
    """
    start = check_number("start_s", start_s, strict=False)
    end = np.inf if duration_s is None else start + check_number("duration_s", duration_s)
    scale = check_number("rate_scale", rate_scale, strict=False)
    if isinstance(pmfs, LengthPmfs) and pmfs.model != windows.model:
        raise ValueError(f"pmfs: model {pmfs.model!r} differs from the windows' "
                         f"{windows.model!r}")
    ws = windows.window_start_s
    use = (ws + WINDOW_S > start) & (ws < end)
    if clients is not None:
        wanted = np.array(sorted({int(c) for c in clients}), dtype=np.int64)
        missing = np.setdiff1d(wanted, windows.client_id)
        if len(missing):
            raise ValueError(f"clients: {missing.tolist()} not in {windows.path} for model "
                             f"{windows.model!r}")
        use &= np.isin(windows.client_id, wanted)
    rng = as_rng(seed)
    n = np.rint(windows.rate_rps[use] * WINDOW_S * scale).astype(np.int64)
    active = n > 0
    rows = np.flatnonzero(use)[active]
    n = n[active]
    if not len(rows):
        return Trace(np.empty(0), np.empty(0, np.int64), np.empty(0, np.int64),
                     tenant=np.empty(0, object), name=name or f"servegen-{windows.model}",
                     meta={"generator": "servegen", "source": windows.path,
                           "model": windows.model, "windows": int(use.sum()), "clients": 0})
    gaps = _window_gaps(windows.iat_param1[rows], windows.iat_dist[rows] == "Gamma", n + 1, rng)
    seg = np.repeat(np.arange(len(rows)), n + 1)
    csum = np.cumsum(gaps)
    first = np.concatenate([[0], np.cumsum(n + 1)[:-1]]).astype(np.int64)
    local = csum - (csum[first] - gaps[first])[seg]
    keep = np.ones(len(gaps), dtype=bool)
    keep[first + n] = False  # the last gap of each window closes it: no request there
    seg = seg[keep]
    w0 = ws[rows][seg]
    t = np.clip(w0 + local[keep], w0, np.nextafter(w0 + WINDOW_S, -np.inf))
    inside = (t >= start) & (t < end)
    order = np.argsort(t[inside], kind="stable")
    t = t[inside][order]
    cid = windows.client_id[rows][seg][inside][order]
    ids, inverse = np.unique(cid, return_inverse=True)
    tenant = np.array([f"client-{c}" for c in ids.tolist()], dtype=object)[inverse]
    meta: dict[str, Any] = {
        "generator": "servegen", "source": windows.path, "model": windows.model,
        "start_s": start, "duration_s": None if duration_s is None else float(duration_s),
        "rate_scale": scale, "seed": seed if isinstance(seed, int) else None,
        "windows": int(use.sum()), "clients": len(ids)}
    if isinstance(pmfs, LengthPmfs):
        prompt, output, info = pmfs.sample(t, rng)
        meta.update(info)
    else:
        prompt, output = pmfs.sample(len(t), rng)
    return Trace(t - start, prompt, output, tenant=tenant, meta=meta,
                 name=name or f"servegen-{windows.model}")
