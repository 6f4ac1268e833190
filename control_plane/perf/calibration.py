"""Fit quality of a measured profile: held-out errors, robust centres of repeated timings.

Pure numpy, used by ``sagellm calibrate`` (``live/calibrate.py``) after it has turned engine
measurements into profile rows (format in :mod:`control_plane.perf.profile`):

- :func:`center` reduces repeated timings of one design point to a row value and a spread
  ((max - min) / median). The value is a low quantile (the lower quartile by default), not
  the mean or median: on a shared machine other processes only ever slow an engine step
  down, so the faster repeats are the better estimate of the engine's own time, while one
  unusually fast repeat cannot set it alone (with 3 repeats: halfway between the two
  fastest);
- :func:`holdout_fit` fits :class:`~control_plane.perf.profile.FittedPredictor` on the
  training rows only and reports its relative errors on the held-out rows, the honest
  figure of how well the linear iteration model predicts compositions it was not fitted
  to; the predictor a simulator loads is refitted on all rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from control_plane.perf.profile import FittedPredictor, ProfileTable

__all__ = ["FitReport", "center", "holdout_fit", "rel_errors", "subset"]


def center(values: Sequence[float], q: float = 0.25) -> tuple[float, float]:
    """(the ``q`` quantile, (max - min) / median) of repeated measurements (spread 0 for
    one value)."""
    v = np.asarray(values, float)
    if v.size == 0:
        raise ValueError("center() of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"center(q={q!r}): must be in [0, 1]")
    med = float(np.median(v))
    return float(np.quantile(v, q)), (float(v.max() - v.min()) / med if med > 0 else 0.0)


def rel_errors(predictor: FittedPredictor, table: ProfileTable) -> np.ndarray:
    """|predicted / measured - 1| for each row of ``table``."""
    p = predictor
    coef = np.array([p.per_prefill_token_s, p.per_attention_pair_s, p.per_decode_seq_s,
                     p.per_context_token_s])
    pred = p.intercept_s + table.features @ coef   # iteration_s of each row's Batch
    return np.abs(pred / table.iteration_s - 1.0)


def subset(table: ProfileTable, mask: np.ndarray) -> ProfileTable:
    """The rows of ``table`` where ``mask`` is true (metadata and extra columns kept)."""
    mask = np.asarray(mask, bool)
    extra = {k: tuple(v for v, m in zip(vals, mask, strict=True) if m)
             for k, vals in table.extra.items()}
    return dataclasses.replace(table, features=table.features[mask],
                               iteration_s=table.iteration_s[mask], extra=extra)


@dataclass(frozen=True, slots=True)
class FitReport:
    """``train``: the predictor fitted on the training rows; ``full``: on all rows (what a
    simulator loads). Errors are relative, |predicted / measured - 1|."""

    train: FittedPredictor
    full: FittedPredictor
    train_rows: int
    holdout_rows: int
    holdout_err_median: float
    holdout_err_max: float
    holdout_errors: tuple[float, ...]   # per held-out row, in table order

    def lines(self) -> list[str]:
        """The printed summary: coefficients and errors."""
        f = self.full
        out = [
            f"fit on all {f.rows} rows: intercept (per-step overhead) {f.intercept_s * 1e3:.4g} ms"
            f", per prefill token {f.per_prefill_token_s * 1e6:.4g} us"
            f", per attention pair {f.per_attention_pair_s * 1e9:.4g} ns"
            f", per decode seq {f.per_decode_seq_s * 1e6:.4g} us"
            f", per context token {f.per_context_token_s * 1e9:.4g} ns",
            f"  in-sample relative error: median {f.fit_rel_err_median:.1%}, "
            f"max {f.fit_rel_err_max:.1%}",
        ]
        if self.holdout_rows:
            out.append(f"held-out: fit on {self.train_rows} training rows predicts the "
                       f"{self.holdout_rows} held-out rows with relative error median "
                       f"{self.holdout_err_median:.1%}, max {self.holdout_err_max:.1%}")
        else:
            out.append("held-out: no held-out rows in this design")
        return out


def holdout_fit(table: ProfileTable, holdout: np.ndarray) -> FitReport:
    """Fit on the rows not in ``holdout``, measure the error on those in it, refit on all."""
    holdout = np.asarray(holdout, bool)
    full = FittedPredictor.from_table(table)
    if not holdout.any():
        return FitReport(full, full, len(holdout), 0, 0.0, 0.0, ())
    train = FittedPredictor.from_table(subset(table, ~holdout))
    err = rel_errors(train, subset(table, holdout))
    return FitReport(train, full, int((~holdout).sum()), int(holdout.sum()),
                     float(np.median(err)), float(err.max()), tuple(float(e) for e in err))
