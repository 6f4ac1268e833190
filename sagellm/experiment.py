"""Experiment configuration files (YAML): cluster, policy, router, control-plane settings.

```yaml
cluster:
  instances:
    - {id: h100, count: 4, gpu_type: h100, price_per_hour_usd: 4.0, max_inflight: 32}
    - {id: a100, count: 2, gpu_type: a100, price_per_hour_usd: 2.0, max_inflight: 24,
       decode_s_per_token: 0.03}
policy: {type: priority, params: {aging_s: 10}}
router: {type: locality}
control: {max_queue: 5000, sheddable_priorities: [4]}
workload: {requests: 3000, rate_per_s: 40, seed: 0}
```

An instance entry with ``count: n`` expands to ids ``<id>-0 .. <id>-(n-1)``. Errors name the
file and the key path (``cluster.instances[1].max_inflight``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from control_plane import ConfigError, ControlPlaneConfig, InstanceSpec, ValidationError
from control_plane.policies import create_policy
from control_plane.routing import create_router

__all__ = ["Experiment", "WorkloadSpec", "load_experiment"]

_SPEC_FIELDS = {f.name for f in dataclasses.fields(InstanceSpec)} - {"instance_id"}


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    requests: int = 3000
    rate_per_s: float = 40.0
    seed: int = 0


@dataclass(frozen=True, slots=True)
class Experiment:
    instances: tuple[InstanceSpec, ...]
    policy: object = "fifo"
    router: object = "round_robin"
    control: ControlPlaneConfig = field(default_factory=ControlPlaneConfig)
    workload: WorkloadSpec = field(default_factory=WorkloadSpec)


def _instances(entries: object, where: str) -> tuple[InstanceSpec, ...]:
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{where}: cluster.instances must be a non-empty list")
    out: list[InstanceSpec] = []
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
        unknown = sorted(set(entry) - _SPEC_FIELDS)
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {unknown}; known: "
                              f"{sorted(_SPEC_FIELDS | {'id', 'count'})}")
        for n in range(count):
            name = iid if count == 1 else f"{iid}-{n}"
            try:
                out.append(InstanceSpec(name, **entry))
            except ValidationError as exc:
                raise ConfigError(f"{path}.{exc.field}: {exc}") from exc
    ids = [s.instance_id for s in out]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ConfigError(f"{where}: duplicate instance ids {dup}")
    return tuple(out)


def experiment_from_dict(data: object, where: str = "<config>") -> Experiment:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: top level must be a mapping, got {type(data).__name__}")
    known = {"cluster", "policy", "router", "control", "workload"}
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
    w = data.get("workload") or {}
    if not isinstance(w, dict):
        raise ConfigError(f"{where}: workload must be a mapping")
    wknown = {f.name for f in dataclasses.fields(WorkloadSpec)}
    if set(w) - wknown:
        raise ConfigError(f"{where}: workload: unknown key(s) {sorted(set(w) - wknown)}; "
                          f"known: {sorted(wknown)}")
    return Experiment(instances, policy, router, control, WorkloadSpec(**w))


def load_experiment(path: str | Path) -> Experiment:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{at}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    return experiment_from_dict(data, str(path))
