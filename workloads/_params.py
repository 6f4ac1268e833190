"""Parameter checks and seeding shared by the generators (private).

Every generator takes an int seed or a ``numpy.random.Generator`` (never global state);
every bad parameter is a ValueError naming the parameter and its value.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["Seed", "as_rng", "check_count", "check_number"]

Seed = int | np.random.Generator


def as_rng(seed: Seed) -> np.random.Generator:
    """``Generator(PCG64(seed))`` for an int seed >= 0; a Generator is used as is (shared)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r}: must be an integer >= 0 or a numpy Generator")
    return np.random.Generator(np.random.PCG64(int(seed)))


def check_number(name: str, value: object, *, minimum: float = 0.0, strict: bool = True,
                 maximum: float | None = None) -> float:
    """A finite real number > ``minimum`` (>= when not ``strict``), <= ``maximum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}={value!r}: must be a number")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name}={value!r}: must be finite")
    if (v <= minimum) if strict else (v < minimum):
        raise ValueError(f"{name}={value!r}: must be {'>' if strict else '>='} {minimum:g}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name}={value!r}: must be <= {maximum:g}")
    return v


def check_count(name: str, value: object, *, minimum: int = 0) -> int:
    """An integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}")
    return int(value)
