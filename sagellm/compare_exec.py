"""Executing the runs of a grid: in this process, in worker processes, or on Ray.

Each run is independent and deterministic (:func:`simulate_run`: the workload's requests
at the run's rate, simulated to completion), so results do not depend on the executor or
the number of workers. Workers return the run file's bytes and the parent writes them
(:func:`sagellm.compare_store.write_atomic`), so on a multi-node Ray cluster the files
still land in the parent's output folder. A run that raises is reported with its name;
the other runs still complete (and are kept for the next, resuming, call).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from sagellm.compare_grid import RunSpec
from sagellm.compare_store import encode_run, write_atomic
from sim import simulate
from workloads import transform

__all__ = ["EXECUTORS", "RunFailed", "execute", "simulate_run"]

EXECUTORS = ("process", "ray")


class RunFailed(RuntimeError):
    """Some runs raised; ``failures`` maps run name -> error text."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = failures
        lines = "\n".join(f"  {k}: {v}" for k, v in failures.items())
        super().__init__(f"{len(failures)} run(s) failed:\n{lines}")


def simulate_run(spec: RunSpec) -> bytes:
    """Simulate one grid point; the run file's bytes (see :mod:`sagellm.compare_store`)."""
    trace = transform.scale_rate(spec.trace, spec.rate_scale)
    config = dataclasses.replace(spec.sim, keep_records=True, keep_series=False)
    result = simulate(trace.requests(), spec.instances, policy=spec.policy,
                      router=spec.router, control=spec.control, config=config,
                      failures=spec.failures, hash_block_size=trace.block_size)
    meta = {"key": spec.key, "params": dict(spec.params), "end_s": result.end_s,
            "instances": [dataclasses.asdict(s) for s in result.instances]}
    return encode_run(result.records, meta)


def _serial(todo, done: Callable[[RunSpec, bytes | None, str | None], None]) -> None:
    for spec, _ in todo:
        try:
            data = simulate_run(spec)
        except Exception as exc:  # reported with the run's name, the others go on
            done(spec, None, f"{type(exc).__name__}: {exc}")
        else:
            done(spec, data, None)


def _processes(todo, workers: int, done) -> None:
    # spawn: fresh interpreters, safe with threads in the parent (tqdm, notebooks)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(simulate_run, spec): spec for spec, _ in todo}
        for fut in as_completed(futures):
            exc = fut.exception()
            if exc is not None:
                done(futures[fut], None, f"{type(exc).__name__}: {exc}")
            else:
                done(futures[fut], fut.result(), None)


def _ray(todo, workers: int | None, address: str | None, done) -> None:
    try:
        import ray
    except ImportError as exc:
        raise RuntimeError("--executor ray needs Ray: pip install 'sagellm[ray]'") from exc
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, logging_level=logging.WARNING)
        else:
            ray.init(num_cpus=workers, include_dashboard=False,
                     logging_level=logging.WARNING)
        started = True
    try:
        task = ray.remote(num_cpus=1)(simulate_run)
        pending: dict = {}
        queue = list(todo)
        limit = workers or len(queue)
        while queue or pending:
            while queue and len(pending) < limit:
                spec, _ = queue.pop(0)
                pending[task.remote(spec)] = spec
            ready, _ = ray.wait(list(pending), num_returns=1)
            spec = pending.pop(ready[0])
            try:
                data = ray.get(ready[0])
            except Exception as exc:  # RayTaskError wraps the worker's exception
                done(spec, None, str(getattr(exc, "cause", None) or exc).strip())
            else:
                done(spec, data, None)
    finally:
        if started:
            ray.shutdown()


def execute(todo: Sequence[tuple[RunSpec, Path]], *, executor: str = "process",
            workers: int | None = None, ray_address: str | None = None,
            progress: bool = True, skipped: int = 0) -> None:
    """Run ``todo`` (spec, file) pairs and write each file; raise :class:`RunFailed` at
    the end if any raised. ``workers``: processes (default: CPU count; 1 runs in this
    process) or, with Ray, the most runs in flight (default: as Ray schedules)."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r}: one of {EXECUTORS}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers={workers!r}: must be >= 1")
    paths = {id(spec): path for spec, path in todo}
    failures: dict[str, str] = {}
    bar = tqdm(total=len(todo) + skipped, initial=skipped, desc="compare", unit="run",
               file=sys.stderr, disable=not progress)

    def done(spec: RunSpec, data: bytes | None, error: str | None) -> None:
        if error is not None:
            failures[spec.name] = error
        else:
            write_atomic(paths[id(spec)], data)
        bar.update(1)

    try:
        if not todo:
            pass
        elif executor == "ray":
            _ray(todo, workers, ray_address, done)
        else:
            n = min(workers or os.cpu_count() or 1, len(todo))
            if n == 1:
                _serial(todo, done)
            else:
                _processes(todo, n, done)
    finally:
        bar.close()
    if failures:
        raise RunFailed(dict(sorted(failures.items())))
