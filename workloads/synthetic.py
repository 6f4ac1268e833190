"""Seeded synthetic request streams (the built-in default workload of the CLI).

``poisson_mix`` draws Poisson arrivals at ``rate_per_s``, lognormal prompt and output
lengths (median and sigma in log space, clipped to [1, max]), and assigns each request a
class of a multi-tenant mix: a priority, a tenant and an SLO. Everything comes from one
``numpy.random.Generator(PCG64(seed))``: the same seed yields the same requests.

It is composed of the parts: :func:`workloads.arrivals.poisson`, a
:class:`workloads.lengths.LengthModel` of two :class:`~workloads.lengths.LogNormal`, and
:func:`workloads.mix.mix`, sharing one generator in that order (so its output is unchanged
from the original stand-alone implementation). ``session_id`` is ``<tenant>-<row % 50>``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from control_plane.types import SLO, Request
from workloads import arrivals as _arrivals
from workloads._params import as_rng
from workloads.lengths import LengthModel, LogNormal
from workloads.mix import mix
from workloads.trace import Trace

__all__ = ["DEFAULT_CLASSES", "RequestClass", "poisson_mix", "poisson_mix_trace"]


@dataclass(frozen=True, slots=True)
class RequestClass:
    """One class of a multi-tenant mix: share of the traffic, priority, tenant and SLO."""

    name: str
    share: float
    priority: int
    tenant: str
    slo: SLO | None = None


DEFAULT_CLASSES: tuple[RequestClass, ...] = (
    RequestClass("interactive", 0.3, 0, "chat", SLO(ttft_s=1.0, tpot_s=0.10)),
    RequestClass("standard", 0.5, 2, "api", SLO(ttft_s=3.0, tpot_s=0.20)),
    RequestClass("batch", 0.2, 4, "batch", SLO(e2e_s=120.0)),
)


def poisson_mix_trace(n: int, rate_per_s: float, *, seed: int = 0,
                      prompt_median: float = 512, prompt_sigma: float = 0.8,
                      prompt_max: int = 4096, output_median: float = 128,
                      output_sigma: float = 0.7, output_max: int = 1024,
                      classes: Sequence[RequestClass] = DEFAULT_CLASSES,
                      start_s: float = 0.0) -> Trace:
    """The ``n`` requests of :func:`poisson_mix` as a Trace (ids ``req-<row>``)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n={n!r}: must be >= 0")
    if not rate_per_s > 0:
        raise ValueError(f"rate_per_s={rate_per_s!r}: must be > 0")
    if not classes:
        raise ValueError("classes: at least one request class is required")
    rng = as_rng(seed)
    times = _arrivals.poisson(rate_per_s, int(n), seed=rng, start_s=start_s)
    lengths = LengthModel(LogNormal(prompt_median, prompt_sigma, prompt_max),
                          LogNormal(output_median, output_sigma, output_max))
    trace = mix(times, classes, rng, lengths=lengths, name="req")
    sessions = np.array([f"{t}-{k % 50}" for k, t in enumerate(trace.tenant.tolist())],
                        dtype=object)
    return trace.with_columns(session_id=sessions, meta={
        "generator": "poisson_mix", "seed": seed if isinstance(seed, int) else None,
        "rate_per_s": float(rate_per_s)})


def poisson_mix(n: int, rate_per_s: float, *, seed: int = 0,
                prompt_median: float = 512, prompt_sigma: float = 0.8, prompt_max: int = 4096,
                output_median: float = 128, output_sigma: float = 0.7, output_max: int = 1024,
                classes: Sequence[RequestClass] = DEFAULT_CLASSES,
                start_s: float = 0.0) -> Iterator[Request]:
    """Yield ``n`` requests in arrival order."""
    yield from poisson_mix_trace(
        n, rate_per_s, seed=seed, prompt_median=prompt_median, prompt_sigma=prompt_sigma,
        prompt_max=prompt_max, output_median=output_median, output_sigma=output_sigma,
        output_max=output_max, classes=classes, start_s=start_s).requests()
