"""Constructor-parameter checks shared by the policies.

Each check raises ``ValueError`` naming the policy, the parameter and the bad value (the
registry turns it into a ``ConfigError`` that also names the plugin).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

__all__ = ["check_bool", "check_int", "check_mapping", "check_number"]


def _fail(owner: str, name: str, value: object, why: str) -> ValueError:
    return ValueError(f"{owner}: parameter {name}={value!r} {why}")


def check_bool(owner: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise _fail(owner, name, value, "must be true or false")
    return value


def check_number(owner: str, name: str, value: object, *, minimum: float | None = None,
                 maximum: float | None = None, strict: bool = False,
                 allow_none: bool = False, allow_inf: bool = False) -> float | None:
    """A real number (not bool, not NaN) within bounds; returns it as float (or None)."""
    if value is None:
        if allow_none:
            return None
        raise _fail(owner, name, value, "is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(owner, name, value, "must be a number")
    x = float(value)
    if math.isnan(x):
        raise _fail(owner, name, value, "must not be NaN")
    if math.isinf(x) and not allow_inf:
        raise _fail(owner, name, value, "must be finite")
    if minimum is not None:
        if strict and not x > minimum:
            raise _fail(owner, name, value, f"must be > {minimum}")
        if not strict and x < minimum:
            raise _fail(owner, name, value, f"must be >= {minimum}")
    if maximum is not None and x > maximum:
        raise _fail(owner, name, value, f"must be <= {maximum}")
    return x


def check_int(owner: str, name: str, value: object, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(owner, name, value, "must be an integer")
    if value < minimum:
        raise _fail(owner, name, value, f"must be >= {minimum}")
    return value


def check_mapping(owner: str, name: str, value: object, *, minimum: float = 0.0,
                  strict: bool = False) -> dict[str, float]:
    """A mapping of non-empty string keys to numbers within bounds (None -> {})."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _fail(owner, name, value, "must be a mapping of names to numbers")
    out: dict[str, float] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k:
            raise _fail(owner, name, value, f"has a bad key {k!r} (must be a non-empty string)")
        out[k] = check_number(owner, f"{name}[{k!r}]", v, minimum=minimum, strict=strict)
    return out
