"""The grid of ``sagellm compare``: clusters x loads x policies x routers on one workload.

A :class:`Grid` is built from command-line options or a sweep file (:func:`load_sweep`)::

    workload:                 # sagellm.compare_workload.WorkloadChoice
      trace: azure_llm_2023_conv.csv   # relative to this file; omit for the synthetic mix
      requests: 3000          # the first N requests
      seed: 0                 # workload draws and the routers' random generator
      classes: auto           # auto | trace | default | [{name, share, priority, tenant, slo}]
    policies: [fifo, priority, {type: slo}]
    routers: [round_robin, least_loaded]
    loads: [0.5, 0.8, 1.1]    # fractions of each cluster's estimated capacity
    # rate_scales: [1, 2, 4]  # or: multiples of the trace's own rate (not both)
    clusters:
      - default                         # a built-in: see BUILTIN_CLUSTERS
      - {name: big, file: big.yaml}     # cluster (+ control, sim, failures) of an
                                        # experiment-style YAML, relative to this file
      - {name: small, cluster: {instances: [...]}, control: {max_queue: 500}}

Errors name the file and the key path (``sweep.yaml: clusters[1].file: ...``).
:func:`expand` turns a grid into :class:`RunSpec` s, each with a stable run key: a hash of
the workload's fingerprint, the cluster's definition, its control-plane settings (every
:class:`~control_plane.ControlPlaneConfig` field but the seed, so a run made under other
settings, or before a setting existed, is not reused), the policy and router specs and the
load (the seed and the request count are in the fingerprint).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_plane import ConfigError, ControlPlaneConfig
from control_plane.perf import Batch
from control_plane.policies import create_policy
from control_plane.routing import create_router
from sagellm.capacity import cluster_capacity_rps
from sagellm.compare_workload import PreparedWorkload, WorkloadChoice, parse_classes
from sagellm.experiment import experiment_from_dict, read_yaml
from sim.config import SimConfig
from sim.hardware import instances_for
from workloads.trace import Trace

__all__ = ["BUILTIN_CLUSTERS", "LOAD_UNITS", "ClusterChoice", "Grid", "RunSpec",
           "builtin_cluster", "cluster_from_file", "expand", "grid_from_dict", "load_sweep",
           "spec_name"]

LOAD_UNITS = ("capacity", "trace")  # fraction of estimated capacity / multiple of trace rate
_CLUSTER_FILE_KEYS = {"cluster", "control", "sim", "failures"}
_SWEEP_KEYS = {"workload", "policies", "routers", "loads", "rate_scales", "clusters"}
_WORKLOAD_KEYS = {f.name for f in dataclasses.fields(WorkloadChoice)}
_MAX_INFLIGHT = 128  # per instance, as `sagellm sim`'s default cluster


@dataclass(frozen=True, slots=True)
class ClusterChoice:
    """A named cluster: instances, control-plane settings, driver settings, failures.
    ``definition`` (canonical JSON of what defines it) goes into the run keys."""

    name: str
    instances: tuple
    control: ControlPlaneConfig
    sim: SimConfig
    failures: tuple = ()
    source: str = "built-in"
    definition: str = ""

    def describe(self) -> str:
        kinds: dict[str, int] = {}
        for x in self.instances:
            spec = getattr(x, "spec", x)
            kinds[spec.gpu_type] = kinds.get(spec.gpu_type, 0) + 1
        return " + ".join(f"{n} x {k}" for k, n in kinds.items())


def _hardware(model: str, parts: tuple[tuple[str, int], ...]) -> Callable[[], tuple]:
    def make() -> tuple:
        out: list = []
        for gpu, n in parts:
            out += instances_for(model, gpu, n, id_prefix=gpu, max_inflight=_MAX_INFLIGHT)
        return tuple(out)
    return make


BUILTIN_CLUSTERS: dict[str, tuple[str, Callable[[], tuple]]] = {
    "default": ("Llama-3-8B on 2 H100 + 2 A100 (sagellm sim's default)",
                _hardware("llama-3-8b", (("h100", 2), ("a100", 2)))),
    "h100x4": ("Llama-3-8B on 4 H100", _hardware("llama-3-8b", (("h100", 4),))),
    "a100x4": ("Llama-3-8B on 4 A100", _hardware("llama-3-8b", (("a100", 4),))),
}


def builtin_cluster(name: str) -> ClusterChoice:
    if name not in BUILTIN_CLUSTERS:
        raise ConfigError(f"unknown cluster {name!r}; built-in: {sorted(BUILTIN_CLUSTERS)}, "
                          "or a YAML file")
    return ClusterChoice(name, BUILTIN_CLUSTERS[name][1](), ControlPlaneConfig(max_queue=5000),
                         SimConfig(), definition=json.dumps({"builtin": name}))


def _cluster_from_data(name: str, data: object, where: str, source: str) -> ClusterChoice:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a mapping with 'cluster', got {data!r}")
    extra = sorted(set(data) - _CLUSTER_FILE_KEYS)
    if extra:
        raise ConfigError(f"{where}: key(s) {extra} not allowed in a cluster definition (the "
                          f"grid sets policies, routers and the workload); allowed: "
                          f"{sorted(_CLUSTER_FILE_KEYS)}")
    exp = experiment_from_dict(data, where)
    return ClusterChoice(name, exp.instances, exp.control, exp.sim, exp.failures, source,
                         json.dumps(data, sort_keys=True, default=str))


def cluster_from_file(path: str | Path, name: str | None = None) -> ClusterChoice:
    """A cluster YAML (``cluster`` + optional ``control``, ``sim``, ``failures``)."""
    path = Path(path)
    return _cluster_from_data(name or path.stem, read_yaml(path), str(path), str(path))


def spec_name(spec: object) -> str:
    """A policy / router spec as a short label: ``fifo``, ``priority(aging_s=5)``."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, dict):
        params = spec.get("params") or {}
        inner = ",".join(f"{k}={v}" for k, v in sorted(params.items())) if isinstance(
            params, dict) else str(params)
        return f"{spec.get('type')}({inner})" if inner else str(spec.get("type"))
    return str(spec)


def _check_specs(kind: str, specs: tuple, where: str) -> None:
    create = create_policy if kind == "policies" else create_router
    if not specs:
        raise ConfigError(f"{where}: {kind}: at least one is required")
    for k, spec in enumerate(specs):
        try:
            create(spec)
        except (ConfigError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {kind}[{k}]: {exc}") from exc
    names = [spec_name(s) for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"{where}: {kind}: duplicate entries {dup}")


@dataclass(frozen=True, slots=True)
class Grid:
    """Every combination of ``clusters`` x ``loads`` x ``policies`` x ``routers`` on
    ``workload``. ``load_unit``: ``capacity`` (fractions of each cluster's estimated
    capacity, :mod:`sagellm.capacity`) or ``trace`` (multiples of the trace's own rate)."""

    workload: WorkloadChoice
    policies: tuple
    routers: tuple
    loads: tuple[float, ...]
    clusters: tuple[ClusterChoice, ...]
    load_unit: str = "capacity"

    def validate(self, where: str = "grid") -> Grid:
        _check_specs("policies", tuple(self.policies), where)
        _check_specs("routers", tuple(self.routers), where)
        key = "loads" if self.load_unit == "capacity" else "rate_scales"
        if self.load_unit not in LOAD_UNITS:
            raise ConfigError(f"{where}: load_unit {self.load_unit!r}: one of {LOAD_UNITS}")
        if not self.loads:
            raise ConfigError(f"{where}: {key}: at least one is required")
        for k, x in enumerate(self.loads):
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not x > 0:
                raise ConfigError(f"{where}: {key}[{k}]: must be a number > 0, got {x!r}")
        if len(set(self.loads)) != len(self.loads):
            raise ConfigError(f"{where}: {key}: duplicate values {list(self.loads)}")
        if not self.clusters:
            raise ConfigError(f"{where}: clusters: at least one is required")
        names = [c.name for c in self.clusters]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"{where}: clusters: duplicate names {dup}")
        return self

    @property
    def size(self) -> int:
        return len(self.clusters) * len(self.loads) * len(self.policies) * len(self.routers)


def _list(data: dict, key: str, where: str) -> tuple:
    v = data.get(key)
    if v is None:
        return ()
    if not isinstance(v, list):
        raise ConfigError(f"{where}: {key}: must be a list, got {v!r}")
    return tuple(v)


def _clusters(entries: tuple, where: str, base: Path) -> tuple[ClusterChoice, ...]:
    out = []
    for k, e in enumerate(entries):
        path = f"{where}: clusters[{k}]"
        if isinstance(e, str):
            try:
                out.append(builtin_cluster(e))
            except ConfigError as exc:
                raise ConfigError(f"{path}: {exc}") from exc
            continue
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not e["name"]:
            raise ConfigError(f"{path}: a built-in name or a mapping with 'name' and "
                              f"'file' or 'cluster', got {e!r}")
        rest = {k2: v for k2, v in e.items() if k2 != "name"}
        if "file" in rest:
            if set(rest) != {"file"} or not isinstance(rest["file"], str):
                raise ConfigError(f"{path}: 'file' (a path) goes with 'name' only")
            f = Path(rest["file"])
            try:
                out.append(cluster_from_file(f if f.is_absolute() else base / f, e["name"]))
            except ConfigError as exc:
                raise ConfigError(f"{path}.file: {exc}") from exc
        else:
            out.append(_cluster_from_data(e["name"], rest, path, path))
    return tuple(out)


def grid_from_dict(data: object, where: str = "<sweep>", base: Path | None = None) -> Grid:
    """A :class:`Grid` from a sweep mapping; relative paths are resolved against ``base``."""
    base = base or Path(".")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: top level must be a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _SWEEP_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; known: {sorted(_SWEEP_KEYS)}")
    w = data.get("workload") or {}
    if not isinstance(w, dict):
        raise ConfigError(f"{where}: workload: must be a mapping")
    unknown = sorted(set(w) - _WORKLOAD_KEYS)
    if unknown:
        raise ConfigError(f"{where}: workload: unknown key(s) {unknown}; known: "
                          f"{sorted(_WORKLOAD_KEYS)}")
    w = dict(w)
    if "classes" in w:
        w["classes"] = parse_classes(w["classes"], f"{where}: workload.classes")
    if isinstance(w.get("trace"), str) and not Path(w["trace"]).is_absolute():
        w["trace"] = str(base / w["trace"])
    try:
        workload = WorkloadChoice(**w)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    if "loads" in data and "rate_scales" in data:
        raise ConfigError(f"{where}: give 'loads' or 'rate_scales', not both")
    unit = "trace" if "rate_scales" in data else "capacity"
    loads = _list(data, "rate_scales" if unit == "trace" else "loads", where)
    return Grid(workload, _list(data, "policies", where), _list(data, "routers", where),
                loads, _clusters(_list(data, "clusters", where), where, base),
                unit).validate(where)


def load_sweep(path: str | Path) -> Grid:
    path = Path(path)
    return grid_from_dict(read_yaml(path), str(path), path.parent)


# -- runs ---------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class RunSpec:
    """One grid point: what a worker needs to simulate it, and its identity.

    ``params`` (JSON-able) are stored with the run's records: ``cluster``, ``policy``,
    ``router`` (labels), ``policy_spec``, ``router_spec``, ``load``, ``load_unit``,
    ``rate_scale``, ``offered_rps``, ``capacity_rps``, ``workload``, ``requests``,
    ``seed``, ``cluster_description``, ``key``."""

    key: str
    name: str  # file-name slug, ends with the key
    params: Mapping[str, Any]
    trace: Trace  # before rate scaling
    rate_scale: float
    instances: tuple
    control: ControlPlaneConfig
    sim: SimConfig
    failures: tuple
    policy: object
    router: object


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=-]+", "-", text).strip("-") or "x"


def _control_key(control: ControlPlaneConfig) -> dict[str, Any]:
    """The control-plane settings as they enter a run key: every field but ``seed`` (the
    workload's seed sets it), sets as sorted lists."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(control):
        if f.name != "seed":
            v = getattr(control, f.name)
            out[f.name] = sorted(v) if isinstance(v, (set, frozenset)) else v
    return out


# batches whose predicted iteration times stand for an instance's performance model in
# a run key: prefill, decode, mixed, at sizes the studies reach
_PROBES = (Batch(prefill_tokens=512, prefill_attention=512 ** 2),
           Batch(prefill_tokens=4096, prefill_attention=4096 ** 2),
           Batch(decode_seqs=1, decode_context=1000),
           Batch(decode_seqs=64, decode_context=64 * 2000),
           Batch(prefill_tokens=256, prefill_attention=256 * 1024, decode_seqs=32,
                 decode_context=32 * 1024))


def instances_key(instances) -> list[dict[str, Any]]:
    """What the simulation of ``instances`` depends on, as it enters a run key: each
    instance's spec, engine settings, host, and its predictor's iteration times at
    :data:`_PROBES`, so that a changed performance model (refitted coefficients, a new
    profile) makes new runs instead of reusing stale ones."""
    out = []
    for inst in instances:
        pred = getattr(inst, "predictor", None)
        probes = ([float(f"{pred.iteration_s(b):.12g}") for b in _PROBES]
                  if pred is not None else None)
        out.append({"spec": dataclasses.asdict(inst.spec) if hasattr(inst, "spec")
                    else dataclasses.asdict(inst),
                    "engine": dataclasses.asdict(inst.engine) if hasattr(inst, "engine")
                    else None, "host": getattr(inst, "host", None), "probes": probes})
    return out


def run_key(workload: PreparedWorkload, cluster: ClusterChoice, policy: object,
            router: object, load: float, unit: str,
            instances: list[dict[str, Any]] | None = None) -> str:
    blob = json.dumps({"v": 3, "workload": workload.fingerprint, "cluster": cluster.definition,
                       "instances": instances_key(cluster.instances) if instances is None
                       else instances,
                       "control": _control_key(cluster.control), "policy": policy,
                       "router": router, "load": float(load), "unit": unit},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def expand(grid: Grid, workload: PreparedWorkload) -> list[RunSpec]:
    """The runs, in the order clusters, loads, policies, routers."""
    trace = workload.trace
    out = []
    for cluster in grid.clusters:
        capacity = cluster_capacity_rps(cluster.instances, trace.prompt_tokens,
                                        trace.output_tokens)
        control = dataclasses.replace(cluster.control, seed=grid.workload.seed)
        inst_key = instances_key(cluster.instances)
        for load in grid.loads:
            scale = (load * capacity / workload.rate_rps if grid.load_unit == "capacity"
                     else float(load))
            for policy in grid.policies:
                for router in grid.routers:
                    key = run_key(workload, cluster, policy, router, load, grid.load_unit,
                                  inst_key)
                    params = {
                        "key": key, "cluster": cluster.name, "policy": spec_name(policy),
                        "router": spec_name(router), "load": float(load),
                        "load_unit": grid.load_unit, "rate_scale": scale,
                        "offered_rps": workload.rate_rps * scale, "capacity_rps": capacity,
                        "workload": workload.name, "requests": len(trace),
                        "seed": grid.workload.seed,
                        "cluster_description": cluster.describe(),
                        "policy_spec": policy, "router_spec": router}
                    name = "__".join(_slug(x) for x in (
                        cluster.name, spec_name(policy), spec_name(router), f"load{load:g}",
                        key))
                    out.append(RunSpec(key, name, params, trace, scale, cluster.instances,
                                       control, cluster.sim, cluster.failures, policy, router))
    return out

