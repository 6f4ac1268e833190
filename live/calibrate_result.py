"""Calibration measurements -> a profile table, its fit report and per-request overheads.

One :class:`Measurement` per successful probe; :func:`build_result` groups them by design
point (the row: mean features, the lower quartile of the repeats' times, see
:func:`control_plane.perf.calibration.center`, and their spread in the ``rel_spread``
column), takes the medians of the per-request overheads, fits the profile
with a held-out check (:func:`control_plane.perf.calibration.holdout_fit`) and writes the
metadata described in :mod:`control_plane.perf.profile`.
"""

from __future__ import annotations

import dataclasses
import datetime
import statistics
from dataclasses import dataclass

import numpy as np

from control_plane.perf.calibration import FitReport, center, holdout_fit
from control_plane.perf.profile import ProfileTable
from live.calibrate_design import Design, Probe

__all__ = ["CalibrationResult", "EngineInfo", "Measurement", "build_result"]


@dataclass(frozen=True, slots=True)
class EngineInfo:
    url: str
    model_id: str
    max_model_len: int
    version: str


@dataclass(frozen=True, slots=True)
class Measurement:
    """One probe: the row it gives and, where the probe measures them, overheads (s)."""

    probe: Probe
    features: tuple[float, ...]
    iteration_s: float
    ttft_overhead_s: float | None = None    # client TTFT - (engine queue + prefill)
    api_server_s: float | None = None       # client TTFT - engine TTFT
    frontend_s: float | None = None         # engine TTFT - (queue + prefill)


@dataclass(frozen=True, slots=True)
class CalibrationResult:
    info: EngineInfo
    table: ProfileTable
    report: FitReport
    measurements: tuple[Measurement, ...]
    dropped: tuple[str, ...]            # why probes were dropped
    retried: int
    prefix_hits: float
    wall_s: float
    overheads: dict[str, float]
    neighbour: object = None    # live.calibrate_neighbour.NeighbourResult, if measured

    def lines(self) -> list[str]:
        """The printed summary."""
        o = self.overheads
        out = [f"{len(self.table.iteration_s)} rows from {len(self.measurements)} probes in "
               f"{self.wall_s:.0f} s ({self.retried} retried, {len(self.dropped)} dropped)"]
        out += self.report.lines()
        ms = [1e3 * o.get(k, float("nan")) for k in (
            "request_ttft_overhead_s", "api_server_ttft_s", "engine_frontend_ttft_s",
            "request_e2e_overhead_s")]
        out.append(f"per-request overheads: TTFT +{ms[0]:.2f} ms (API server {ms[1]:.2f} ms, "
                   f"engine front end {ms[2]:.2f} ms), end-to-end +{ms[3]:.2f} ms")
        if self.neighbour is not None:
            out.append("neighbour engine busy: " + ", ".join(
                f"{mine} +{100 * v:.1f} % while it {theirs}s"
                for (mine, theirs), v in self.neighbour.slowdown.items()))
        if self.prefix_hits:
            out.append(f"warning: {self.prefix_hits:.0f} prefix-cache hit tokens")
        out += [f"dropped: {d}" for d in self.dropped]
        return out


def _median(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def build_result(info: EngineInfo, design: Design, limits_meta: dict, got: list[Measurement],
                 dropped: list[str], retried: int, prefix_hits: float, wall_s: float,
                 model: str, gpu: str, meta: dict,
                 e2e_overheads: list[float] = ()) -> CalibrationResult:
    """Rows, fit and metadata from the measurements (ValueError with < 2 design points);
    ``e2e_overheads``: client end-to-end - engine queue + inference time of some requests."""
    by_probe: dict[Probe, list[Measurement]] = {}
    for m in got:
        by_probe.setdefault(m.probe, []).append(m)
    points = sorted(by_probe, key=lambda p: (p.kind != "prefill", p.batch, p.prompt_tokens))
    if len(points) < 2:
        raise ValueError(f"only {len(points)} usable design points; dropped: {dropped}")
    feats, ys = [], []
    extra: dict[str, list[str]] = {"kind": [], "split": [], "repeats": [], "rel_spread": []}
    for p in points:
        ms = by_probe[p]
        y, spread = center([m.iteration_s for m in ms])
        feats.append(np.mean([m.features for m in ms], axis=0))
        ys.append(y)
        extra["kind"].append(p.kind)
        extra["split"].append("holdout" if p.holdout else "train")
        extra["repeats"].append(str(len(ms)))
        extra["rel_spread"].append(f"{spread:.3f}")
    overheads = {k: v for k, v in (
        ("request_ttft_overhead_s", _median([m.ttft_overhead_s for m in got])),
        ("api_server_ttft_s", _median([m.api_server_s for m in got])),
        ("engine_frontend_ttft_s", _median([m.frontend_s for m in got])),
        ("request_e2e_overhead_s", _median(list(e2e_overheads)))) if v is not None}
    full_meta = {
        "source": f"sagellm calibrate against vLLM {info.version} at {info.url}",
        "engine": f"vllm {info.version}",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%MZ"),
        **meta,
        "max_model_len": info.max_model_len, **limits_meta,
        "design": f"prefill {list(design.prefill_tokens)} next to 1 decoding request; decode "
                  f"batches {list(design.decode_batches)} x contexts "
                  f"{list(design.decode_contexts)}, windows of >= {design.window_steps} "
                  f"iterations; {design.repeats} repeats, lower quartile per point",
        **{k: f"{max(0.0, v):.6f}" for k, v in overheads.items()},
    }
    table = ProfileTable(model, gpu, 1, 1, np.array(feats, float), np.array(ys, float),
                         full_meta, {k: tuple(v) for k, v in extra.items()})
    report = holdout_fit(table, np.array([s == "holdout" for s in extra["split"]]))
    table = dataclasses.replace(table, meta={
        **full_meta,
        "fit_rel_err_median": f"{report.full.fit_rel_err_median:.4f}",
        "fit_rel_err_max": f"{report.full.fit_rel_err_max:.4f}",
        "fit_holdout_rel_err_median": f"{report.holdout_err_median:.4f}",
        "fit_holdout_rel_err_max": f"{report.holdout_err_max:.4f}",
        "calibration_wall_s": f"{wall_s:.0f}"})
    return CalibrationResult(info, table, report, tuple(got), tuple(dropped), retried,
                             prefix_hits, wall_s, overheads)
