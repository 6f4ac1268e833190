"""Settings of a simulation: the driver, the instances and the default service model."""

from __future__ import annotations

from dataclasses import dataclass, field

from control_plane.engine import EngineConfig
from control_plane.perf.base import IterationPredictor, LinearPredictor
from control_plane.types import InstanceSpec

__all__ = ["EngineModel", "InstanceSim", "SimConfig"]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Driver settings. ``network_delay_s``: one way, gateway <-> engine (engine model;
    the request-level model has its own). ``fast_forward``: skip runs of identical decode
    iterations (identical results). ``keep_records``: per-request RequestRecords (else
    compact columns, summary only). ``keep_series``: per-instance samples at each scrape.
    ``track_admissions``: the start of the iteration that first schedules each request on
    the engine that served it (``SimResult.admissions``; vLLM's queue time ends there)."""

    scrape_interval_s: float = 0.5
    tick_interval_s: float = 0.5
    network_delay_s: float = 0.001
    fast_forward: bool = True
    keep_records: bool = True
    keep_series: bool = True
    track_admissions: bool = False

    def __post_init__(self) -> None:
        for name in ("scrape_interval_s", "tick_interval_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"SimConfig.{name}={v!r}: must be a number > 0")
        v = self.network_delay_s
        if not isinstance(v, (int, float)) or not v >= 0:
            raise ValueError(f"SimConfig.network_delay_s={v!r}: must be a number >= 0")


@dataclass(frozen=True, slots=True)
class InstanceSim:
    """One simulated instance: the control plane's view (``spec``), the engine's
    settings, the iteration-time predictor (None: derived from the spec, see
    :meth:`EngineModel.predictor_for`) and the machine it shares with others (``host``)."""

    spec: InstanceSpec
    engine: EngineConfig = field(default_factory=EngineConfig)
    predictor: IterationPredictor | None = None
    # instances with the same host share a machine: while others of the host are busy,
    # iterations slow down by the predictor's neighbour_decode_slowdown /
    # neighbour_prefill_slowdown (measured profiles; control_plane.engine.contention)
    host: str | None = None

    @property
    def instance_id(self) -> str:
        return self.spec.instance_id


@dataclass(frozen=True, slots=True)
class EngineModel:
    """The iteration-level service model (the default). Instances given as bare
    InstanceSpecs get ``engine`` (default: EngineConfig with ``num_gpu_blocks`` from the
    spec's ``kv_capacity_tokens`` when set) and ``predictor`` (default: a LinearPredictor
    with ``overhead_s = decode_s_per_token`` and ``per_token_s = 1 / prefill_tokens_per_s``,
    i.e. the spec's nominal speeds at batch size 1)."""

    engine: EngineConfig | None = None
    predictor: IterationPredictor | None = None

    def instance_for(self, spec: InstanceSpec) -> InstanceSim:
        cfg = self.engine
        if cfg is None:
            cfg = EngineConfig()
            if spec.kv_capacity_tokens > 0:
                cfg = EngineConfig(num_gpu_blocks=max(1, spec.kv_capacity_tokens
                                                      // cfg.block_size))
        return InstanceSim(spec, cfg, self.predictor)

    @staticmethod
    def predictor_for(spec: InstanceSpec) -> IterationPredictor:
        return LinearPredictor(overhead_s=spec.decode_s_per_token,
                               per_token_s=1.0 / spec.prefill_tokens_per_s)
