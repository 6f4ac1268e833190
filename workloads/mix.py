"""Multi-tenant mixes: each request gets a class (priority, tenant, SLO, lengths) by share.

:func:`mix` turns an array of arrival times (from :mod:`workloads.arrivals`) into a Trace;
:func:`assign_classes` labels an existing Trace (real lengths kept). Class ``k`` is drawn
with probability ``share_k / sum(shares)`` independently per request
(``rng.choice(len(classes), n, p=...)``).

Random draws, in this order from one generator: the default lengths for all rows (only when
some class has no ``lengths`` of its own), the classes, then each class's own lengths for its
rows (classes in the given order). This order makes
:func:`workloads.synthetic.poisson_mix` a special case.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from control_plane.types import NUM_PRIORITIES, SLO
from workloads._params import Seed, as_rng
from workloads.lengths import DEFAULT_LENGTHS, LengthModel
from workloads.trace import Trace

__all__ = ["TenantClass", "assign_classes", "mix"]


@dataclass(frozen=True)
class TenantClass:
    """One class of a mix: share of the traffic, priority (0 = most important), tenant,
    SLO (None = unconstrained) and lengths (None = the mix's default)."""

    name: str
    share: float
    priority: int
    tenant: str
    slo: SLO | None = None
    lengths: LengthModel | None = None


def _check_classes(classes: Sequence[Any]) -> np.ndarray:
    """Validated shares normalised to probabilities (works for RequestClass too)."""
    if not classes:
        raise ValueError("classes: at least one request class is required")
    for i, c in enumerate(classes):
        p = getattr(c, "priority", None)
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not (
                0 <= p < NUM_PRIORITIES):
            raise ValueError(f"classes[{i}].priority={p!r}: must be an integer in "
                             f"0..{NUM_PRIORITIES - 1}")
        if not isinstance(c.tenant, str) or not c.tenant:
            raise ValueError(f"classes[{i}].tenant={c.tenant!r}: must be a non-empty string")
        if c.slo is not None and not isinstance(c.slo, SLO):
            raise ValueError(f"classes[{i}].slo={c.slo!r}: must be an SLO or None")
    shares = np.array([c.share for c in classes], dtype=float)
    if not np.isfinite(shares).all() or (shares < 0).any() or shares.sum() <= 0:
        raise ValueError(f"classes: shares {shares.tolist()} must be >= 0 with a positive sum")
    return shares / shares.sum()


def _label_columns(kinds: np.ndarray, classes: Sequence[Any]) -> dict[str, np.ndarray]:
    """priority / tenant / SLO columns for class indices ``kinds`` (vectorised lookups)."""
    def table(values: list, dtype: Any) -> np.ndarray:
        a = np.empty(len(values), dtype=dtype)
        a[:] = values
        return a[kinds]

    cols: dict[str, np.ndarray] = {
        "priority": table([int(c.priority) for c in classes], np.int8),
        "tenant": table([c.tenant for c in classes], object),
    }
    for field in ("ttft_s", "tpot_s", "e2e_s"):
        vals = [np.nan if c.slo is None or getattr(c.slo, field) is None
                else float(getattr(c.slo, field)) for c in classes]
        cols[f"slo_{field}"] = table(vals, np.float64)
    return cols


def _counts(kinds: np.ndarray, classes: Sequence[Any]) -> dict[str, int]:
    counts = np.bincount(kinds, minlength=len(classes))
    out: dict[str, int] = {}
    for c, k in zip(classes, counts.tolist(), strict=True):
        out[c.name] = out.get(c.name, 0) + k
    return out


def mix(arrivals: np.ndarray, classes: Sequence[TenantClass], seed: Seed = 0, *,
        lengths: LengthModel = DEFAULT_LENGTHS, name: str = "mix") -> Trace:
    """A Trace of the given arrival times, each labelled with a class drawn by share."""
    arrivals = np.asarray(arrivals, dtype=np.float64)
    if arrivals.ndim != 1:
        raise ValueError(f"arrivals: must be one-dimensional, got shape {arrivals.shape}")
    p = _check_classes(classes)
    rng = as_rng(seed)
    n = len(arrivals)
    own = [getattr(c, "lengths", None) for c in classes]
    if any(m is None for m in own):
        prompt, output = lengths.sample(n, rng)
    else:
        prompt = np.ones(n, dtype=np.int64)
        output = np.ones(n, dtype=np.int64)
    kinds = rng.choice(len(classes), size=n, p=p)
    for k, model in enumerate(own):
        if model is not None:
            rows = np.flatnonzero(kinds == k)
            prompt[rows], output[rows] = model.sample(len(rows), rng)
    return Trace(arrivals, prompt, output, name=name,
                 meta={"generator": "mix", "classes": _counts(kinds, classes)},
                 **_label_columns(kinds, classes))


def assign_classes(trace: Trace, classes: Sequence[TenantClass], seed: Seed = 0) -> Trace:
    """``trace`` with priority, tenant and SLO columns set from classes drawn by share."""
    p = _check_classes(classes)
    kinds = as_rng(seed).choice(len(classes), size=len(trace), p=p)
    counts = _counts(kinds, classes)
    transforms = [*trace.meta.get("transforms", ()), {"op": "assign_classes",
                                                        "classes": counts}]
    return trace.with_columns(meta={"transforms": transforms}, **_label_columns(kinds, classes))
