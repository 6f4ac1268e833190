"""Seeded synthetic request streams (the built-in default workload of the CLI).

``poisson_mix`` draws Poisson arrivals at ``rate_per_s``, lognormal prompt and output
lengths (median and sigma in log space, clipped to [1, max]), and assigns each request a
class of a multi-tenant mix: a priority, a tenant and an SLO. Everything comes from one
``numpy.random.Generator(PCG64(seed))``: the same seed yields the same requests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from control_plane.types import SLO, Request

__all__ = ["DEFAULT_CLASSES", "RequestClass", "poisson_mix"]


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


def poisson_mix(n: int, rate_per_s: float, *, seed: int = 0,
                prompt_median: float = 512, prompt_sigma: float = 0.8, prompt_max: int = 4096,
                output_median: float = 128, output_sigma: float = 0.7, output_max: int = 1024,
                classes: Sequence[RequestClass] = DEFAULT_CLASSES,
                start_s: float = 0.0) -> Iterator[Request]:
    """Yield ``n`` requests in arrival order."""
    if n < 0:
        raise ValueError(f"n={n!r}: must be >= 0")
    if not rate_per_s > 0:
        raise ValueError(f"rate_per_s={rate_per_s!r}: must be > 0")
    if not classes:
        raise ValueError("classes: at least one request class is required")
    shares = np.array([c.share for c in classes], dtype=float)
    if (shares < 0).any() or shares.sum() <= 0:
        raise ValueError(f"classes: shares {shares.tolist()} must be >= 0 with a positive sum")
    rng = np.random.Generator(np.random.PCG64(seed))
    arrivals = start_s + np.cumsum(rng.exponential(1.0 / rate_per_s, n))
    prompts = np.clip(np.rint(rng.lognormal(np.log(prompt_median), prompt_sigma, n)),
                      1, prompt_max).astype(np.int64)
    outputs = np.clip(np.rint(rng.lognormal(np.log(output_median), output_sigma, n)),
                      1, output_max).astype(np.int64)
    kinds = rng.choice(len(classes), size=n, p=shares / shares.sum())
    for k in range(n):
        c = classes[int(kinds[k])]
        yield Request(f"req-{k}", float(arrivals[k]), int(prompts[k]),
                      output_tokens=int(outputs[k]), priority=c.priority, tenant=c.tenant,
                      session_id=f"{c.tenant}-{k % 50}", slo=c.slo)
