"""``sagellm compare``: a grid of policies x routers x loads x clusters on one workload."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import click

from control_plane import ConfigError
from control_plane.policies import POLICIES
from control_plane.routing import ROUTERS
from sagellm.compare import (
    BUILTIN_CLUSTERS,
    EXECUTORS,
    Grid,
    RunFailed,
    WorkloadChoice,
    builtin_cluster,
    cluster_from_file,
    load_summaries,
    load_sweep,
    run_grid,
    write_report,
)
from sagellm.compare_report import report_tables
from sagellm.compare_workload import CLASS_MODES

DEFAULT_POLICIES = ("fifo", "priority", "slo")
DEFAULT_ROUTERS = ("round_robin", "least_loaded")
DEFAULT_LOADS = (0.5, 0.8, 1.1)


def _numbers(values: tuple[str, ...], hint: str) -> tuple[float, ...]:
    """Repeatable, comma-separated positive numbers: ``--load 0.5,0.8 --load 1.1``."""
    out: list[float] = []
    for text in values:
        for part in text.split(","):
            try:
                x = float(part)
            except ValueError:
                raise click.BadParameter(f"{part.strip()!r} is not a number",
                                         param_hint=hint) from None
            if not x > 0 or x == float("inf"):
                raise click.BadParameter(f"{part.strip()!r}: must be > 0", param_hint=hint)
            if x in out:
                raise click.BadParameter(f"{part.strip()!r} given twice", param_hint=hint)
            out.append(x)
    return tuple(out)


def _check_names(names: tuple[str, ...], registry, hint: str) -> None:
    for name in names:
        if name not in registry:
            raise click.BadParameter(f"unknown {hint[2:]} {name!r}; known: {registry.names()}",
                                     param_hint=hint)


def _cluster(value: str):
    if value in BUILTIN_CLUSTERS:
        return builtin_cluster(value)
    if not Path(value).is_file():
        raise click.BadParameter(f"{value!r}: neither a built-in cluster "
                                 f"({', '.join(sorted(BUILTIN_CLUSTERS))}) nor a YAML file",
                                 param_hint="--cluster")
    try:
        return cluster_from_file(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--cluster") from exc


def _grid(config_path, trace_path, fmt, skip_bad, requests, seed, classes, policies,
          routers, loads, rate_scales, clusters) -> Grid:
    if loads and rate_scales:
        raise click.UsageError("--load (fractions of capacity) and --rate-scale (multiples "
                               "of the trace's rate) are exclusive")
    _check_names(policies, POLICIES, "--policy")
    _check_names(routers, ROUTERS, "--router")
    load_values = _numbers(loads, "--load")
    scale_values = _numbers(rate_scales, "--rate-scale")
    cluster_choices = tuple(_cluster(c) for c in clusters)
    if config_path:
        try:
            grid = load_sweep(config_path)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
    else:
        grid = Grid(WorkloadChoice(), DEFAULT_POLICIES, DEFAULT_ROUTERS, DEFAULT_LOADS,
                    (builtin_cluster("default"),))
    w = grid.workload
    changes = {k: v for k, v in (("trace", trace_path), ("format", fmt), ("requests", requests),
                                 ("seed", seed), ("classes", classes)) if v is not None}
    if skip_bad:
        changes["skip_bad"] = True
    try:
        w = dataclasses.replace(w, **changes)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    grid = dataclasses.replace(
        grid, workload=w, policies=tuple(policies) or grid.policies,
        routers=tuple(routers) or grid.routers, clusters=cluster_choices or grid.clusters)
    if load_values:
        grid = dataclasses.replace(grid, loads=load_values, load_unit="capacity")
    elif scale_values:
        grid = dataclasses.replace(grid, loads=scale_values, load_unit="trace")
    try:
        return grid.validate(config_path or "command line")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command("compare")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Sweep YAML (workload, policies, routers, loads or rate_scales, clusters); "
                   "options given here override its entries.")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False),
              help="Trace file (read with workloads.read_trace). Default: the synthetic "
                   "3-class mix.")
@click.option("--format", "fmt", help="Trace format (default: detected).")
@click.option("--skip-bad", is_flag=True, help="Skip malformed trace rows (reported).")
@click.option("--requests", type=click.IntRange(min=2),
              help="Use the first N requests of the trace (synthetic: N requests, default "
                   "3000).")
@click.option("--seed", type=int, help="Seed of the workload draws and the routers. [0]")
@click.option("--classes", type=click.Choice(CLASS_MODES),
              help="Request classes: auto (the trace's own, else the default mix), trace "
                   "(as is), default (interactive/standard/batch mix). [auto]")
@click.option("--policy", "policies", multiple=True,
              help=f"Queue policy (repeatable). [{', '.join(DEFAULT_POLICIES)}]")
@click.option("--router", "routers", multiple=True,
              help=f"Router (repeatable). [{', '.join(DEFAULT_ROUTERS)}]")
@click.option("--load", "loads", multiple=True, metavar="X[,X...]",
              help="Load as a fraction of each cluster's estimated capacity (repeatable, "
                   f"comma-separated). [{','.join(f'{x:g}' for x in DEFAULT_LOADS)}]")
@click.option("--rate-scale", "rate_scales", multiple=True, metavar="K[,K...]",
              help="Instead of --load: replay at K times the trace's own rate.")
@click.option("--cluster", "clusters", multiple=True, metavar="NAME|FILE.yaml",
              help=f"Cluster (repeatable): built-in ({', '.join(BUILTIN_CLUSTERS)}) or a "
                   "YAML file with cluster (+ control, sim, failures). [default]")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output folder: runs/*.parquet, report.md, summaries.csv, plots/.")
@click.option("--workers", type=click.IntRange(min=1),
              help="Worker processes (default: CPU count; 1 = in this process); with Ray, "
                   "the most runs in flight.")
@click.option("--executor", type=click.Choice(EXECUTORS), default="process",
              show_default=True, help="Local worker processes, or Ray tasks.")
@click.option("--ray-address", help="Ray cluster to connect to (default: a local instance).")
@click.option("--force", is_flag=True, help="Redo runs whose files already exist.")
@click.option("--report-only", is_flag=True,
              help="Rebuild the report from the run files in --out; run nothing.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
def compare_cmd(config_path, trace_path, fmt, skip_bad, requests, seed, classes, policies,
                routers, loads, rate_scales, clusters, out_dir, workers, executor,
                ray_address, force, report_only, no_progress) -> None:
    """Compare policies x routers x loads x clusters on one workload, in simulation.

    Each grid point is one simulation whose per-request records go to
    OUT/runs/<run>.parquet; a rerun skips runs already there (--force redoes them). Then
    OUT/report.md (tables per load, the best policy / router, plots in OUT/plots) and
    OUT/summaries.csv are written. Same seed, same results, whatever the executor.
    """
    out = Path(out_dir)
    if report_only:
        given = [name for name, v in (
            ("--config", config_path), ("--trace", trace_path), ("--policy", policies),
            ("--router", routers), ("--load", loads), ("--rate-scale", rate_scales),
            ("--cluster", clusters), ("--requests", requests), ("--seed", seed),
            ("--force", force)) if v is not None and v is not False and v != ()]
        if given:
            raise click.UsageError(f"--report-only rebuilds the report from the run files "
                                   f"in --out; it takes no {', '.join(given)}")
        try:
            df = load_summaries(out)
        except (ConfigError, ValueError) as exc:
            raise click.ClickException(str(exc)) from exc
    else:
        if ray_address and executor != "ray":
            raise click.UsageError("--ray-address goes with --executor ray")
        grid = _grid(config_path, trace_path, fmt, skip_bad, requests, seed, classes,
                     policies, routers, loads, rate_scales, clusters)
        try:
            df = run_grid(grid, out, executor=executor, workers=workers,
                          ray_address=ray_address, force=force, progress=not no_progress)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        except RunFailed as exc:
            raise click.ClickException(f"{exc}\nthe other runs are kept; rerun to resume") \
                from exc
    path = write_report(df, out)
    click.echo(report_tables(df))
    click.echo(f"report written to {path}")
