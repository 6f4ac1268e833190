"""Experiment configuration files (YAML): cluster, policy, router, control-plane settings.

```yaml
cluster:
  instances:
    # hardware instances: a model on a GPU type with a parallel config (control_plane.perf)
    - {id: fast, count: 4, model: llama-3-8b, gpu: h100, tp: 1, max_num_seqs: 256}
    - {id: big, model: llama-3-70b, gpu: h100, tp: 4, scheduling_policy: priority}
    # or a bare control-plane view with nominal speeds (a linear iteration-time model)
    - {id: toy, gpu_type: l4, price_per_hour_usd: 1.0, max_inflight: 24,
       decode_s_per_token: 0.03}
policy: {type: priority, params: {aging_s: 10}}
router: {type: locality}
control: {max_queue: 5000, sheddable_priorities: [4]}
workload: {requests: 3000, rate_per_s: 40, seed: 0}   # or {trace: file.csv, rate_scale: 2}
sim: {scrape_interval_s: 0.5, network_delay_s: 0.001}
failures: [{instance: fast-1, down_s: 60, up_s: 120}]
```

An instance entry with ``count: n`` expands to ids ``<id>-0 .. <id>-(n-1)``. Hardware
entries take ``model``, ``gpu``, ``tp``, ``pp``, ``gpu_memory_utilization``, the engine
settings of :class:`control_plane.engine.EngineConfig` and ``price_per_hour_usd`` /
``max_inflight``, and optionally ``profile`` (a measured iteration-time profile instead of
the roofline). An entry with ``profile`` and no ``model``/``gpu`` is an engine as measured,
e.g. by ``sagellm calibrate`` (:mod:`sagellm.profiled`). Errors name the file and the key
path (``cluster.instances[1].max_inflight``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from control_plane import ConfigError, ControlPlaneConfig, InstanceSpec, ValidationError
from control_plane.engine import EngineConfig
from control_plane.perf.parallel import ParallelConfig
from control_plane.policies import create_policy
from control_plane.routing import create_router
from sagellm.profiled import load_profile, profiled_instances
from sim.config import InstanceSim, SimConfig
from sim.hardware import instances_for

__all__ = ["Experiment", "WorkloadSpec", "experiment_from_dict", "load_experiment",
           "parse_failure", "read_yaml"]

_SPEC_FIELDS = {f.name for f in dataclasses.fields(InstanceSpec)} - {"instance_id"}
_ENGINE_FIELDS = {f.name for f in dataclasses.fields(EngineConfig)} - {"num_gpu_blocks"}
_HW_FIELDS = {"model", "gpu", "tp", "pp", "gpu_memory_utilization", "price_per_hour_usd",
              "max_inflight", "profile"} | _ENGINE_FIELDS
_SIM_FIELDS = {f.name for f in dataclasses.fields(SimConfig)}


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    """The built-in synthetic mix (``requests``, default 3,000, at ``rate_per_s``) or a
    ``trace`` file (its first ``requests`` rows, default all)."""

    requests: int | None = None
    rate_per_s: float = 40.0
    seed: int = 0
    trace: str | None = None
    format: str | None = None
    rate_scale: float | None = None
    skip_bad: bool = False


@dataclass(frozen=True, slots=True)
class Experiment:
    instances: tuple[InstanceSpec | InstanceSim, ...]
    policy: object = "fifo"
    router: object = "round_robin"
    control: ControlPlaneConfig = field(default_factory=ControlPlaneConfig)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)
    sim: SimConfig = field(default_factory=SimConfig)
    failures: tuple[tuple[str, float, float | None], ...] = ()


def _hardware(entry: dict, iid: str, count: int, path: str) -> list[InstanceSim]:
    unknown = sorted(set(entry) - _HW_FIELDS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; known: "
                          f"{sorted(_HW_FIELDS | {'id', 'count'})}")
    if "model" not in entry or "gpu" not in entry:
        raise ConfigError(f"{path}: a hardware instance needs both 'model' and 'gpu'")
    engine = {k: entry[k] for k in _ENGINE_FIELDS if k in entry}
    predictor = load_profile(entry["profile"], path)[0] if "profile" in entry else None
    try:
        par = ParallelConfig(tp=entry.get("tp", 1), pp=entry.get("pp", 1))
        return instances_for(entry["model"], entry["gpu"], count, par,
                             engine=EngineConfig(**engine),
                             gpu_memory_utilization=entry.get("gpu_memory_utilization", 0.9),
                             price_per_hour_usd=entry.get("price_per_hour_usd"),
                             max_inflight=entry.get("max_inflight"),
                             id_prefix=iid if count > 1 else None, predictor=predictor)
    except (ValueError, TypeError, KeyError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def _instances(entries: object, where: str) -> tuple[InstanceSpec | InstanceSim, ...]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: cluster.instances must be a non-empty list")
    out: list[InstanceSpec | InstanceSim] = []
    for k, entry in enumerate(entries):
        path = f"{where}: cluster.instances[{k}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{path} must be a mapping, got {entry!r}")
        entry = dict(entry)
        iid = entry.pop("id", None)
        count = entry.pop("count", 1)
        if not isinstance(iid, str) or not iid:
            raise ConfigError(f"{path}.id must be a non-empty string, got {iid!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ConfigError(f"{path}.count must be an integer >= 1, got {count!r}")
        if "model" in entry or "gpu" in entry:
            sims = _hardware(entry, iid, count, path)
            if count == 1:  # keep the id the user gave
                sims = [dataclasses.replace(sims[0], spec=dataclasses.replace(
                    sims[0].spec, instance_id=iid))]
            out += sims
            continue
        if "profile" in entry:
            out += profiled_instances(entry, iid, count, path)
            continue
        unknown = sorted(set(entry) - _SPEC_FIELDS)
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {unknown}; known: "
                              f"{sorted(_SPEC_FIELDS | {'id', 'count'})}, or a hardware "
                              f"instance with 'model' and 'gpu', or one with a 'profile'")
        for n in range(count):
            name = iid if count == 1 else f"{iid}-{n}"
            try:
                out.append(InstanceSpec(name, **entry))
            except ValidationError as exc:
                raise ConfigError(f"{path}.{exc.field}: {exc}") from exc
    ids = [instance_id(x) for x in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(f"{where}: duplicate instance ids {dup}")
    return tuple(out)


def instance_id(x: InstanceSpec | InstanceSim) -> str:
    return x.instance_id


def _failures(entries: object, ids: set[str], where: str) -> tuple:
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: failures must be a list")
    out = []
    for k, e in enumerate(entries):
        path = f"{where}: failures[{k}]"
        if not isinstance(e, dict) or set(e) - {"instance", "down_s", "up_s"} or \
                "instance" not in e or "down_s" not in e:
            raise ConfigError(f"{path}: expected {{instance, down_s, up_s (optional)}}, "
                              f"got {e!r}")
        if e["instance"] not in ids:
            raise ConfigError(f"{path}.instance: unknown instance {e['instance']!r}; known: "
                              f"{sorted(ids)}")
        out.append(parse_failure(e["instance"], e["down_s"], e.get("up_s"), path))
    return tuple(out)


def parse_failure(iid: str, down: object, up: object, where: str) -> tuple[str, float,
                                                                             float | None]:
    """Validate one failure window: down at ``down`` s, back at ``up`` s (or never)."""
    for name, v in (("down_s", down), ("up_s", up)):
        if v is None and name == "up_s":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ConfigError(f"{where}.{name}: must be a number >= 0, got {v!r}")
    if up is not None and up <= down:
        raise ConfigError(f"{where}: up_s {up} must be after down_s {down}")
    return (iid, float(down), None if up is None else float(up))


def _section(data: dict, name: str, cls: type, where: str):
    raw = data.get(name) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {name} must be a mapping")
    known = {f.name for f in dataclasses.fields(cls)}
    if set(raw) - known:
        raise ConfigError(f"{where}: {name}: unknown key(s) {sorted(set(raw) - known)}; "
                          f"known: {sorted(known)}")
    try:
        return cls(**raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {name}: {exc}") from exc


def experiment_from_dict(data: object, where: str = "<config>") -> Experiment:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: top level must be a mapping, got {type(data).__name__}")
    known = {"cluster", "policy", "router", "control", "workload", "sim", "failures"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    cluster = data.get("cluster")
    if not isinstance(cluster, dict) or "instances" not in cluster:
        raise ConfigError(f"{where}: 'cluster' with 'instances' is required")
    instances = _instances(cluster["instances"], where)
    policy = data.get("policy", "fifo")
    router = data.get("router", "round_robin")
    try:
        create_policy(policy)  # validate now: names and params, with the file named
    except ConfigError as exc:
        raise ConfigError(f"{where}: policy: {exc}") from exc
    try:
        create_router(router)
    except ConfigError as exc:
        raise ConfigError(f"{where}: router: {exc}") from exc
    try:
        control = ControlPlaneConfig.from_dict(data.get("control"))
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{where}: control: {exc}") from exc
    workload = _section(data, "workload", WorkloadSpec, where)
    sim = _section(data, "sim", SimConfig, where)
    failures = _failures(data.get("failures"), {instance_id(x) for x in instances}, where)
    return Experiment(instances, policy, router, control, workload, sim, failures)


def read_yaml(path: str | Path) -> Any:
    """A YAML file's data; unreadable files and syntax errors are ConfigErrors naming the
    file (and the line)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{at}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc


def load_experiment(path: str | Path) -> Experiment:
    return experiment_from_dict(read_yaml(path), str(path))
