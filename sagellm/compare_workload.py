"""The workload of a ``sagellm compare`` grid: one trace (or the synthetic mix), prepared once.

Preparation, in this order, all seeded by ``seed``:

1. read the trace (:func:`workloads.read_trace`); a length-only table gets Poisson arrivals
   at 1 request/s; no trace: the built-in synthetic mix
   (:func:`workloads.poisson_mix_trace`, 3,000 requests, at 1 request/s);
2. keep the first ``requests`` rows;
3. request classes (``classes``): ``auto`` keeps the trace's own priorities / tenants / SLOs
   and assigns the default mix (:data:`workloads.DEFAULT_CLASSES`: interactive / standard /
   batch) to a trace that has none; ``trace`` keeps the trace as it is; ``default`` always
   assigns the default mix; a list of classes assigns those (by share).

The load of a run then rescales arrival times (:func:`workloads.transform.scale_rate`).
The fingerprint in every run key covers the trace file's bytes and these settings.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from control_plane import SLO, ConfigError
from workloads import DEFAULT_CLASSES, TenantClass, arrivals, assign_classes, poisson_mix_trace
from workloads.errors import TraceFormatError
from workloads.readers import LengthTable, read_trace
from workloads.trace import Trace

__all__ = ["CLASS_MODES", "SYNTHETIC_REQUESTS", "PreparedWorkload", "WorkloadChoice",
           "parse_classes", "prepare_workload"]

SYNTHETIC_REQUESTS = 3000
CLASS_MODES = ("auto", "trace", "default")
_CLASS_KEYS = {"name", "share", "priority", "tenant", "slo"}
_SLO_KEYS = {"ttft_s", "tpot_s", "e2e_s"}


@dataclass(frozen=True, slots=True)
class WorkloadChoice:
    """A trace file (``None``: the synthetic mix), the first ``requests`` of it, the seed
    and the request classes (a mode of :data:`CLASS_MODES` or TenantClasses)."""

    trace: str | None = None
    format: str | None = None
    skip_bad: bool = False
    requests: int | None = None
    seed: int = 0
    classes: str | tuple[TenantClass, ...] = "auto"

    def __post_init__(self) -> None:
        r = self.requests
        if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
            raise ConfigError(f"workload.requests={r!r}: must be an integer >= 1")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"workload.seed={self.seed!r}: must be an integer")
        if isinstance(self.classes, str) and self.classes not in CLASS_MODES:
            raise ConfigError(f"workload.classes={self.classes!r}: must be one of "
                              f"{list(CLASS_MODES)} or a list of classes")


@dataclass(frozen=True, eq=False)
class PreparedWorkload:
    """The requests every run of the grid replays (before rate scaling)."""

    trace: Trace
    name: str
    fingerprint: str  # hex digest of the trace file's bytes and the choice
    rate_rps: float  # requests / (last arrival - first arrival)


def parse_classes(data: object, where: str) -> str | tuple[TenantClass, ...]:
    """A mode name or a list of ``{name, share, priority, tenant, slo: {ttft_s, tpot_s,
    e2e_s}}`` mappings; errors name ``where`` and the key path."""
    if isinstance(data, str):
        if data not in CLASS_MODES:
            raise ConfigError(f"{where}: unknown mode {data!r}; known: {list(CLASS_MODES)} or "
                              "a list of classes")
        return data
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{where}: must be one of {list(CLASS_MODES)} or a non-empty list "
                          "of classes")
    out = []
    for k, c in enumerate(data):
        path = f"{where}[{k}]"
        if not isinstance(c, dict):
            raise ConfigError(f"{path}: must be a mapping, got {c!r}")
        unknown = sorted(set(c) - _CLASS_KEYS)
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {unknown}; known: {sorted(_CLASS_KEYS)}")
        missing = sorted({"name", "share", "priority"} - set(c))
        if missing:
            raise ConfigError(f"{path}: missing key(s) {missing}")
        slo = c.get("slo")
        if slo is not None:
            if not isinstance(slo, dict) or set(slo) - _SLO_KEYS:
                raise ConfigError(f"{path}.slo: must be a mapping of {sorted(_SLO_KEYS)}, "
                                  f"got {slo!r}")
            try:
                slo = SLO(**slo)
            except ValueError as exc:
                raise ConfigError(f"{path}.slo: {exc}") from exc
        out.append(TenantClass(str(c["name"]), c["share"], c["priority"],
                               str(c.get("tenant", c["name"])), slo))
    try:  # shares and priorities, checked by the workload code on an empty trace
        assign_classes(Trace(np.zeros(0), np.zeros(0), np.zeros(0)), out)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    return tuple(out)


def _default_classes() -> tuple[TenantClass, ...]:
    return tuple(TenantClass(c.name, c.share, c.priority, c.tenant, c.slo)
                 for c in DEFAULT_CLASSES)


def _classes_json(classes: str | Sequence[TenantClass]) -> Any:
    if isinstance(classes, str):
        return classes
    return [{"name": c.name, "share": c.share, "priority": c.priority, "tenant": c.tenant,
             "slo": None if c.slo is None else [c.slo.ttft_s, c.slo.tpot_s, c.slo.e2e_s]}
            for c in classes]


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    return h.hexdigest()


def prepare_workload(w: WorkloadChoice) -> PreparedWorkload:
    """Read / generate, cap and label the workload (see the module docstring)."""
    if w.trace:
        digest = _file_digest(w.trace)
        try:
            data = read_trace(w.trace, w.format, skip_bad=w.skip_bad)
        except (TraceFormatError, ValueError, OSError) as exc:
            raise ConfigError(str(exc)) from exc
        if isinstance(data, LengthTable):
            data = data.with_arrivals(arrivals.poisson(1.0, n=w.requests or len(data),
                                                       seed=w.seed))
        if w.requests and w.requests < len(data):
            data = data.take(np.arange(w.requests), meta={"first_requests": w.requests})
        name = Path(w.trace).name
    else:
        digest = None
        data = poisson_mix_trace(w.requests or SYNTHETIC_REQUESTS, 1.0, seed=w.seed)
        name = "synthetic"
    if len(data) < 2:
        raise ConfigError(f"{w.trace or 'synthetic workload'}: {len(data)} request(s); a "
                          "comparison needs at least 2 (a rate)")
    labelled = data.priority is not None or any(
        getattr(data, c) is not None for c in ("slo_ttft_s", "slo_tpot_s", "slo_e2e_s"))
    classes = w.classes
    if classes == "auto":
        classes = "trace" if labelled else "default"
    if classes == "default":
        classes = _default_classes()
    if not isinstance(classes, str):
        data = assign_classes(data, classes, seed=w.seed)
    duration = data.duration_s
    if not duration > 0:
        raise ConfigError(f"{name}: all requests arrive at the same time; no rate to scale")
    fingerprint = hashlib.sha256(json.dumps({
        "trace_sha256": digest, "format": w.format, "skip_bad": w.skip_bad,
        "requests": w.requests, "seed": w.seed, "classes": _classes_json(w.classes)},
        sort_keys=True).encode()).hexdigest()
    return PreparedWorkload(data, name, fingerprint, len(data) / duration)
