"""Compare policies x routers x loads x clusters on one workload (``sagellm compare``).

The Python API, for scripts and notebooks::

    from sagellm.compare import Grid, WorkloadChoice, builtin_cluster, run_grid, write_report

    grid = Grid(WorkloadChoice(trace="azure_llm_2023_conv.csv", requests=3000),
                policies=("fifo", "priority", "slo"), routers=("round_robin", "least_loaded"),
                loads=(0.5, 0.8, 1.1), clusters=(builtin_cluster("default"),))
    df = run_grid(grid, "out/")          # one row per run (pandas.DataFrame)
    write_report(df, "out/")             # out/report.md, out/summaries.csv, out/plots/*.png

or ``grid = load_sweep("sweep.yaml")`` (:mod:`sagellm.compare_grid` has the format).

Each run is one simulation (:func:`sim.simulate`) whose per-request records go to
``out/runs/<name>.parquet`` (:mod:`sagellm.compare_store`). :func:`run_grid` skips runs
whose file is already complete (``force=True`` redoes them), runs the others in worker
processes (default) or on Ray (``executor="ray"``), then summarises every run of the grid
from its file, so a resumed grid and a fresh one give the same table. Same seed, same
results, whatever the executor and the number of workers.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from control_plane import ConfigError
from sagellm.capacity import cluster_capacity_rps
from sagellm.compare_exec import EXECUTORS, RunFailed, execute
from sagellm.compare_grid import (
    BUILTIN_CLUSTERS,
    ClusterChoice,
    Grid,
    RunSpec,
    builtin_cluster,
    cluster_from_file,
    expand,
    grid_from_dict,
    load_sweep,
)
from sagellm.compare_report import best_runs, write_report
from sagellm.compare_store import RUNS_DIR, read_run, run_meta, summary_row
from sagellm.compare_workload import WorkloadChoice, prepare_workload

__all__ = ["BUILTIN_CLUSTERS", "EXECUTORS", "ClusterChoice", "Grid", "RunFailed", "RunSpec",
           "WorkloadChoice", "best_runs", "builtin_cluster", "cluster_capacity_rps",
           "cluster_from_file", "grid_from_dict", "load_records", "load_summaries",
           "load_sweep", "plan_runs", "run_grid", "write_report"]


def _path(out_dir: Path, spec: RunSpec) -> Path:
    return out_dir / RUNS_DIR / f"{spec.name}.parquet"


def plan_runs(grid: Grid, out_dir: str | Path, *, force: bool = False
              ) -> tuple[list[RunSpec], list[RunSpec]]:
    """(every run of the grid, the ones still to do) for ``out_dir``."""
    grid.validate()
    out = Path(out_dir)
    specs = expand(grid, prepare_workload(grid.workload))
    todo = [s for s in specs if force or run_meta(_path(out, s), s.key) is None]
    return specs, todo


def _summaries(paths: Iterable[Path]) -> pd.DataFrame:
    rows = []
    for p in paths:
        df, meta = read_run(p)
        rows.append(summary_row(df, meta))
    return pd.DataFrame(rows)


def run_grid(grid: Grid, out_dir: str | Path, *, executor: str = "process",
             workers: int | None = None, ray_address: str | None = None,
             force: bool = False, progress: bool = True) -> pd.DataFrame:
    """Run the grid's missing runs (all with ``force``) and return one summary row per run
    of the grid, in grid order (clusters, loads, policies, routers). Raises
    :class:`RunFailed` naming the runs that raised (the others are kept)."""
    out = Path(out_dir)
    specs, todo = plan_runs(grid, out, force=force)
    execute([(s, _path(out, s)) for s in todo], executor=executor, workers=workers,
            ray_address=ray_address, progress=progress, skipped=len(specs) - len(todo))
    return _summaries(_path(out, s) for s in specs)


def _run_files(out_dir: Path) -> list[Path]:
    files = sorted((out_dir / RUNS_DIR).glob("*.parquet"))
    complete = [p for p in files if run_meta(p) is not None]
    if not complete:
        raise ConfigError(f"{out_dir}: no complete run files under {RUNS_DIR}/")
    return complete


def load_summaries(out_dir: str | Path) -> pd.DataFrame:
    """One summary row per complete run file in ``out_dir/runs`` (any grid), sorted by
    cluster, load, policy and router."""
    df = _summaries(_run_files(Path(out_dir)))
    return df.sort_values(["workload", "cluster", "load_unit", "load", "policy", "router"],
                          kind="stable").reset_index(drop=True)


def load_records(out_dir: str | Path) -> pd.DataFrame:
    """Every complete run's per-request records, with the run's ``key``, ``cluster``,
    ``policy``, ``router``, ``load`` and ``load_unit`` as leading columns."""
    frames = []
    for p in _run_files(Path(out_dir)):
        df, meta = read_run(p)
        params = meta["params"]
        for k, col in enumerate(("key", "cluster", "policy", "router", "load", "load_unit")):
            df.insert(k, col, params[col])
        frames.append(df)
    return pd.concat(frames, ignore_index=True)
