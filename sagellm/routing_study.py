"""Prefix-aware routing on prefix-heavy traffic: the workload, matched clusters and the runs.

Block sizes. A trace's ``prefix_hashes`` hold one chained hash per ``Trace.block_size``
tokens (512 for Mooncake, whose ``hash_ids`` are 512-token blocks; the engine's KV block
size, 16, for the generators of :mod:`workloads.prefix_gen`). The simulated engine
(:mod:`control_plane.engine`) keys its prefix cache by those hashes, one per
``EngineConfig.hash_block_size`` tokens (None: its own ``block_size``, 16), and maps its
16-token blocks onto them. Nothing passes the trace's block size on by itself:
:func:`sim.simulate` gets Requests, which carry the hashes but not their size, and the
built-in clusters keep the default. With the defaults a 512-token Mooncake hash is taken
for a 16-token block, so a shared prefix of ``n`` hashes gives at most ``16 n`` cached
tokens instead of ``512 n``: hits are under-counted about 32-fold.
:func:`prefix_cluster` therefore sets ``hash_block_size = trace.block_size`` on every
engine, and :func:`locality_router` gives the ``locality`` router the trace's block size
(its index budget is KV tokens / block size) with one index entry per block (``stride 1``:
the default stride of 8 would index only prompts of 8 x 512 = 4,096 tokens or more).

:func:`run_trace_grid` runs a :class:`~sagellm.compare.Grid`'s policies x routers x loads x
clusters on an in-memory :class:`~workloads.trace.Trace` (a generated fallback cannot be
named by a file), with the same run files, keys and summaries as
:func:`sagellm.compare.run_grid`, so :func:`sagellm.compare.load_records`,
:func:`~sagellm.compare.load_summaries` and :func:`~sagellm.compare.write_report` read them.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pandas as pd

from control_plane import ConfigError, ControlPlaneConfig
from control_plane.engine import EngineConfig
from sagellm.compare_exec import execute
from sagellm.compare_grid import ClusterChoice, Grid, expand
from sagellm.compare_store import RUNS_DIR, read_run, run_meta, summary_row
from sagellm.compare_workload import PreparedWorkload, WorkloadChoice
from sim.config import SimConfig
from sim.hardware import instances_for
from workloads import Uniform, arrivals, multi_turn_sessions, read_trace
from workloads.trace import Trace

__all__ = ["cache_references", "locality_router", "lru_prefix_reuse", "prefix_cluster",
           "prefix_workload", "run_trace_grid", "trace_fingerprint"]

_MIN_TURNS = 2
_TURNS = Uniform(_MIN_TURNS, 8)  # turns per synthetic session


def prefix_workload(path: str | Path | None, requests: int, *, seed: int = 0,
                    sessions_per_s: float = 1.0, system_tokens: int = 1024
                    ) -> tuple[Trace, str]:
    """The first ``requests`` of a trace with prefix hashes (e.g. Mooncake), or, when
    ``path`` is None or no file, synthetic multi-turn chat sessions
    (:func:`workloads.multi_turn_sessions`: sessions starting as a Poisson process at
    ``sessions_per_s``, each turn's prompt the whole conversation so far behind one shared
    ``system_tokens`` system prompt). Returns the trace and a sentence saying which."""
    if isinstance(requests, bool) or not isinstance(requests, int) or requests < 2:
        raise ConfigError(f"requests={requests!r}: must be an integer >= 2")
    if path is not None and Path(path).is_file():
        trace = read_trace(path)
        if not isinstance(trace, Trace) or trace.prefix_hashes is None:
            raise ConfigError(f"{path}: no prefix hashes (a Mooncake trace has them)")
        if requests < len(trace):
            trace = trace.take(np.arange(requests), meta={"first_requests": requests})
        return trace, (f"{Path(path).name}: first {len(trace):,} requests, prefix hashes of "
                       f"{trace.block_size}-token blocks")
    # at least 2 turns per session: enough sessions for ``requests`` turns
    starts = arrivals.poisson(sessions_per_s, n=requests // _MIN_TURNS + 1, seed=seed)
    trace = multi_turn_sessions(starts, turns=_TURNS, system_tokens=system_tokens, seed=seed,
                                name="synthetic-sessions")
    trace = trace.take(np.arange(requests), meta={"first_requests": requests})
    where = "no trace given" if path is None else f"{path} not found"
    return trace, (f"{where}: synthetic multi-turn sessions instead ({len(trace):,} requests, "
                   f"{system_tokens}-token shared system prompt, prefix hashes of "
                   f"{trace.block_size}-token blocks)")


def prefix_cluster(name: str, model: str, gpu: str, count: int, *,
                   hash_block_size: int | None, max_inflight: int = 128,
                   max_queue: int = 5000) -> ClusterChoice:
    """``count`` instances of ``model`` on ``gpu`` (TP 1) whose engines read prefix hashes
    as ``hash_block_size``-token blocks (the trace's ``block_size``; None keeps the engine
    default, the KV block size, to show what a mismatch costs)."""
    engine = EngineConfig(hash_block_size=hash_block_size)
    instances = tuple(instances_for(model, gpu, count, engine=engine,
                                    max_inflight=max_inflight, id_prefix=gpu))
    definition = json.dumps({"prefix_cluster": [model, gpu, count, hash_block_size,
                                                max_inflight, max_queue]})
    return ClusterChoice(name, instances, ControlPlaneConfig(max_queue=max_queue),
                         SimConfig(), definition=definition)


def locality_router(block_size: int, **params: object) -> dict:
    """The ``locality`` router's spec for hashes of ``block_size``-token blocks, one index
    entry per block (``stride`` 1); ``params`` override or add router parameters."""
    return {"type": "locality", "params": {"block_size": block_size, "stride": 1, **params}}


def lru_prefix_reuse(trace: Trace, capacity_tokens: int | None) -> float:
    """Fraction of prompt tokens found in one LRU prefix cache of ``capacity_tokens``
    (None: unbounded, :func:`workloads.ideal_prefix_reuse`'s token ratio), requests in
    arrival order, whole hash blocks. A reference for a cluster whose KV caches were pooled
    and perfectly routed to: it ignores blocks pinned by running requests and the engines'
    finer blocks, so a real cluster can land a little above or below it."""
    if trace.prefix_hashes is None or trace.block_size is None:
        raise ConfigError(f"{trace.name}: no prefix hashes")
    bs = trace.block_size
    cap = None if capacity_tokens is None else max(0, capacity_tokens // bs)
    lru: OrderedDict[int, None] = OrderedDict()
    hit = total = 0
    for hashes, prompt in zip(trace.prefix_hashes, trace.prompt_tokens.tolist(), strict=True):
        k = 0  # chained: a cached block implies its whole prefix was cached
        while k < len(hashes) and hashes[k] in lru:
            k += 1
        hit += min(prompt, k * bs)
        total += prompt
        for h in hashes:
            lru[h] = None
            lru.move_to_end(h)
        while cap is not None and len(lru) > cap:
            lru.popitem(last=False)
    return hit / total if total else 0.0


def _kv_tokens(instance: object) -> int:
    engine = getattr(instance, "engine", None)  # InstanceSim; a bare InstanceSpec has none
    return engine.kv_capacity_tokens if engine is not None else instance.kv_capacity_tokens


def cache_references(trace: Trace, clusters: tuple[ClusterChoice, ...]) -> pd.DataFrame:
    """Per cluster: instances, KV tokens per instance and in all, and the prefix-token hit
    ratio of :func:`lru_prefix_reuse` with the cluster's KV pooled; a first row gives the
    unbounded cache's."""
    rows = [{"cluster": "(unbounded cache)", "instances": 0, "kv_tokens_per_instance": 0,
             "kv_tokens_total": 0, "pooled_lru_hit_ratio": lru_prefix_reuse(trace, None)}]
    for c in clusters:
        per = [_kv_tokens(x) for x in c.instances]
        rows.append({"cluster": c.name, "instances": len(per),
                     "kv_tokens_per_instance": min(per), "kv_tokens_total": sum(per),
                     "pooled_lru_hit_ratio": lru_prefix_reuse(trace, sum(per))})
    return pd.DataFrame(rows)


def trace_fingerprint(trace: Trace) -> str:
    """Hex digest of everything in a trace that a simulation reads."""
    h = hashlib.sha256()
    h.update(json.dumps([trace.name, trace.block_size]).encode())
    for name, col in sorted(trace.columns().items()):
        h.update(name.encode())
        if col.dtype == object:
            h.update(repr(col.tolist()).encode())
        else:
            h.update(np.ascontiguousarray(col).tobytes())
    return h.hexdigest()


def run_trace_grid(trace: Trace, *, policies: tuple, routers: tuple, loads: tuple,
                   clusters: tuple[ClusterChoice, ...], out_dir: str | Path,
                   load_unit: str = "capacity", seed: int = 0, workers: int | None = None,
                   force: bool = False, progress: bool = False) -> pd.DataFrame:
    """:func:`sagellm.compare.run_grid` for an in-memory trace (see the module doc): runs
    the missing runs (all with ``force``) and returns one summary row per run of the grid."""
    grid = Grid(WorkloadChoice(seed=seed), tuple(policies), tuple(routers), tuple(loads),
                tuple(clusters), load_unit).validate()
    if len(trace) < 2 or not trace.duration_s > 0:
        raise ConfigError(f"{trace.name}: a comparison needs requests spread over time")
    workload = PreparedWorkload(trace, trace.name, trace_fingerprint(trace),
                                len(trace) / trace.duration_s)
    out = Path(out_dir)
    specs = expand(grid, workload)
    paths = [out / RUNS_DIR / f"{s.name}.parquet" for s in specs]
    todo = [(s, p) for s, p in zip(specs, paths, strict=True)
            if force or run_meta(p, s.key) is None]
    execute(todo, workers=workers, progress=progress, skipped=len(specs) - len(todo))
    return pd.DataFrame([summary_row(*read_run(p)) for p in paths])
