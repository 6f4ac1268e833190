"""Trace transformations: each returns a new Trace (vectorised) and appends a record of what it
did to ``meta["transforms"]`` (a list of dicts with ``"op"`` and the parameters / counts).

- :func:`scale_rate`: replay ``k`` times faster: ``t' = t0 + (t - t0) / k`` (``t0`` the first
  arrival, which stays put).
- :func:`window`: rows with ``start_s <= arrival_s < end_s``; ``rebase=True`` (default) shifts
  times by ``-start_s`` so the window starts at 0 (gaps and offsets within the window kept).
- :func:`sample`: a seeded uniform subset without replacement of exactly ``n`` (or
  ``round(fraction * len)``) rows, in arrival order.
- :func:`clip_lengths`: fit requests into a model's context (see its docstring); counts are
  reported in ``meta`` (``clipped_rows``, ``clipped_prompt_rows``, ``clipped_prompt_tokens``,
  ``clipped_output_rows``, ``clipped_output_tokens``, ``dropped_rows``), never silent.
- :func:`assign`: rule-based priorities, tenants and SLOs (see its docstring).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from control_plane.types import NUM_PRIORITIES
from workloads._params import Seed, as_rng, check_count, check_number
from workloads.trace import Trace

__all__ = ["assign", "clip_lengths", "sample", "scale_rate", "window"]


def _log(trace: Trace, record: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"transforms": [*trace.meta.get("transforms", ()), record], **extra}


def scale_rate(trace: Trace, k: float) -> Trace:
    """Arrivals ``t0 + (t - t0) / k``: ``k`` times the request rate, same first arrival."""
    k = check_number("k", k)
    a = trace.arrival_s
    t0 = a[0] if len(a) else 0.0
    return trace.with_columns(arrival_s=t0 + (a - t0) / k,
                              meta=_log(trace, {"op": "scale_rate", "k": k}))


def window(trace: Trace, start_s: float, end_s: float, *, rebase: bool = True) -> Trace:
    """Rows arriving in ``[start_s, end_s)``; times minus ``start_s`` when ``rebase``."""
    start = check_number("start_s", start_s, strict=False)
    end = check_number("end_s", end_s, minimum=start)
    lo, hi = np.searchsorted(trace.arrival_s, [start, end], side="left")
    rec = {"op": "window", "start_s": start, "end_s": end, "rebase": bool(rebase),
           "rows": int(hi - lo), "dropped_rows": int(len(trace) - (hi - lo))}
    out = trace.take(np.arange(lo, hi), meta=_log(trace, rec))
    return out.with_columns(arrival_s=out.arrival_s - start) if rebase else out


def sample(trace: Trace, fraction: float | None = None, *, n: int | None = None,
           seed: Seed = 0) -> Trace:
    """Exactly ``n`` (or ``round(fraction * len(trace))``) rows, uniformly, in arrival order."""
    if (fraction is None) == (n is None):
        raise ValueError(f"fraction={fraction!r}, n={n!r}: give exactly one of them")
    if fraction is not None:
        n = round(check_number("fraction", fraction, strict=False, maximum=1.0) * len(trace))
    n = check_count("n", n)
    if n > len(trace):
        raise ValueError(f"n={n}: more than the trace's {len(trace)} rows")
    rows = np.sort(as_rng(seed).choice(len(trace), size=n, replace=False))
    rec = {"op": "sample", "n": n, "of": len(trace)}
    return trace.take(rows, meta=_log(trace, rec))


def clip_lengths(trace: Trace, max_context: int, max_output: int | None = None, *,
                 drop: bool = False) -> Trace:
    """Fit each request into ``max_context`` tokens (prompt + output).

    ``output' = min(output, max_output)``; then ``prompt' = min(prompt, max_context - 1)``
    (the prompt's leading tokens are kept, leaving room for one output token, like a
    server that truncates over-long prompts) and ``output' = min(output', max_context -
    prompt')``. ``prefix_hashes`` are cut to the ``prompt' // block_size`` leading blocks.
    With ``drop=True`` rows that do not fit are removed instead of clipped (``max_output``
    still clips). Counts of clipped / dropped rows and removed tokens go to ``meta``.
    """
    ctx = check_count("max_context", max_context, minimum=2)
    p, o = trace.prompt_tokens, trace.output_tokens
    if max_output is not None:
        max_output = check_count("max_output", max_output, minimum=1)
    o1 = o if max_output is None else np.minimum(o, max_output)
    if drop:
        keep = p + o1 <= ctx
        cut = (o1 < o) & keep
        info: dict[str, Any] = {
            "clipped_rows": int(cut.sum()), "clipped_prompt_rows": 0,
            "clipped_prompt_tokens": 0, "clipped_output_rows": int(cut.sum()),
            "clipped_output_tokens": int((o - o1)[keep].sum()),
            "dropped_rows": int((~keep).sum())}
        rec = {"op": "clip_lengths", "max_context": ctx, "max_output": max_output,
               "drop": True, **info}
        return trace.with_columns(output_tokens=o1).take(np.flatnonzero(keep),
                                                         meta=_log(trace, rec, **info))
    p2 = np.minimum(p, ctx - 1)
    o2 = np.minimum(o1, ctx - p2)
    info = {"clipped_rows": int(((p2 < p) | (o2 < o)).sum()),
            "clipped_prompt_rows": int((p2 < p).sum()),
            "clipped_prompt_tokens": int((p - p2).sum()),
            "clipped_output_rows": int((o2 < o).sum()),
            "clipped_output_tokens": int((o - o2).sum()), "dropped_rows": 0}
    changes: dict[str, Any] = {"prompt_tokens": p2, "output_tokens": o2}
    if trace.prefix_hashes is not None and info["clipped_prompt_rows"]:
        keep_blocks = (p2 // trace.block_size).tolist()
        hashes = np.empty(len(trace), dtype=object)
        hashes[:] = [h[:k] if len(h) > k else h
                     for h, k in zip(trace.prefix_hashes, keep_blocks, strict=True)]
        changes["prefix_hashes"] = hashes
    rec = {"op": "clip_lengths", "max_context": ctx, "max_output": max_output, "drop": False,
           **info}
    return trace.with_columns(meta=_log(trace, rec, **info), **changes)


# -- rule-based assignment -------------------------------------------------------------------

_RULE_KEYS = frozenset({"when", "share", "set", "name"})
_SET_KEYS = frozenset({"priority", "tenant", "slo_ttft_s", "slo_tpot_s", "slo_e2e_s"})
_NUMERIC = ("prompt_tokens", "output_tokens", "arrival_s", "priority")
_OPS = {"gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal,
        "eq": np.equal}


def _condition(trace: Trace, i: int, key: str, value: Any) -> np.ndarray:
    where = f"rules[{i}].when.{key}"
    if key == "tenant":
        names = [value] if isinstance(value, str) else list(value)
        col = trace.tenant if trace.tenant is not None else np.full(len(trace), "default",
                                                                     dtype=object)
        return np.isin(col, np.array(names, dtype=object))
    column, _, op = key.rpartition("_")
    if column not in _NUMERIC or op not in _OPS:
        raise ValueError(f"{where}: unknown condition {key!r}; use tenant or "
                         f"<{'|'.join(_NUMERIC)}>_<{'|'.join(_OPS)}>")
    check_number(where, value, minimum=-np.inf)
    col = getattr(trace, column)
    if col is None:  # only priority is optional; absent means NORMAL (2)
        col = np.full(len(trace), 2, dtype=np.int8)
    return _OPS[op](col, value)


def _check_set(i: int, values: Any) -> dict[str, Any]:
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"rules[{i}].set={values!r}: must be a non-empty mapping")
    for key, v in values.items():
        where = f"rules[{i}].set.{key}"
        if key not in _SET_KEYS:
            raise ValueError(f"rules[{i}]: unknown key set.{key!r}; known: {sorted(_SET_KEYS)}")
        if key == "priority":
            check_count(where, v)
            if v >= NUM_PRIORITIES:
                raise ValueError(f"{where}={v!r}: must be in 0..{NUM_PRIORITIES - 1}")
        elif key == "tenant":
            if not isinstance(v, str) or not v:
                raise ValueError(f"{where}={v!r}: must be a non-empty string")
        elif v is not None:
            check_number(where, v)
    return dict(values)


def assign(trace: Trace, rules: Sequence[Mapping[str, Any]], seed: Seed = 0) -> Trace:
    """Set priority / tenant / SLO columns by rules; the first matching rule wins per row.

    A rule is a mapping with ``set`` (required: ``priority``, ``tenant``, ``slo_ttft_s``,
    ``slo_tpot_s``, ``slo_e2e_s``; an SLO of None means unconstrained) and optionally:
    ``when`` (all conditions must hold: ``tenant`` (a name or list of names) or
    ``<prompt_tokens|output_tokens|arrival_s|priority>_<gt|ge|lt|le|eq>``), ``share``
    (in [0, 1]: of the rows that match ``when`` and no earlier rule, a seeded uniform
    random subset of exactly ``round(share * count)`` rows) and ``name`` (for ``meta``).
    Rows no rule matches keep their values (missing columns default to priority 2, tenant
    ``"default"``, no SLO). ``meta`` gets the rows matched per rule.
    """
    if isinstance(rules, Mapping) or not isinstance(rules, Sequence):
        raise ValueError(f"rules={rules!r}: must be a list of rule mappings")
    rng = as_rng(seed)
    n = len(trace)
    free = np.ones(n, dtype=bool)
    cols: dict[str, np.ndarray] = {
        "priority": (trace.priority.copy() if trace.priority is not None
                     else np.full(n, 2, dtype=np.int8)),
        "tenant": (trace.tenant.copy() if trace.tenant is not None
                   else np.full(n, "default", dtype=object)),
    }
    for name in ("slo_ttft_s", "slo_tpot_s", "slo_e2e_s"):
        col = getattr(trace, name)
        cols[name] = col.copy() if col is not None else np.full(n, np.nan)
    matched: list[dict[str, Any]] = []
    for i, rule in enumerate(rules):
        if not isinstance(rule, Mapping):
            raise ValueError(f"rules[{i}]={rule!r}: must be a mapping")
        for key in rule:
            if key not in _RULE_KEYS:
                raise ValueError(f"rules[{i}]: unknown key {key!r}; known: {sorted(_RULE_KEYS)}")
        if "set" not in rule:
            raise ValueError(f"rules[{i}]: missing key 'set'")
        values = _check_set(i, rule["set"])
        hit = free.copy()
        when = rule.get("when", {})
        if not isinstance(when, Mapping):
            raise ValueError(f"rules[{i}].when={when!r}: must be a mapping")
        for key, value in when.items():
            hit &= _condition(trace, i, key, value)
        if "share" in rule:
            share = check_number(f"rules[{i}].share", rule["share"], strict=False, maximum=1.0)
            rows = np.flatnonzero(hit)
            chosen = rng.choice(rows, size=round(share * len(rows)), replace=False)
            hit = np.zeros(n, dtype=bool)
            hit[chosen] = True
        for key, v in values.items():
            cols[key][hit] = np.nan if v is None else v
        free &= ~hit
        matched.append({"rule": rule.get("name", i), "rows": int(hit.sum())})
    rec = {"op": "assign", "rules": matched, "unmatched_rows": int(free.sum())}
    return trace.with_columns(meta=_log(trace, rec), **cols)
