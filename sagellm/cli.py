"""The ``sagellm`` command line."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from control_plane import ConfigError, ControlPlaneConfig, InstanceSpec
from control_plane.metrics import RequestRecord, format_table
from control_plane.policies import POLICIES
from control_plane.routing import FILTERS, PICKERS, ROUTERS, SCORERS
from sagellm.cli_workloads import load as load_trace
from sagellm.cli_workloads import workloads
from sagellm.experiment import Experiment, WorkloadSpec, load_experiment
from sagellm.plan import plan_cmd
from sim import simulate
from workloads import arrivals, poisson_mix, transform
from workloads.readers import LengthTable
from workloads.trace import Trace

DEFAULT_POLICIES = ("fifo", "priority", "slo", "fair", "cost", "adaptive")
DEFAULT_ROUTERS = ("round_robin", "least_loaded", "power_of_two")


def default_experiment() -> Experiment:
    """8 instances (4 fast at $4/h, 4 slower at $2/h) near saturation, mixed classes."""
    fast = [InstanceSpec(f"fast-{k}", gpu_type="h100", price_per_hour_usd=4.0,
                         max_inflight=16, decode_s_per_token=0.02, tokens_per_s=3000)
            for k in range(4)]
    slow = [InstanceSpec(f"slow-{k}", gpu_type="a100", price_per_hour_usd=2.0,
                         max_inflight=16, decode_s_per_token=0.03, prefill_tokens_per_s=5000,
                         tokens_per_s=2000) for k in range(4)]
    return Experiment(tuple(fast + slow), control=ControlPlaneConfig(max_queue=2000),
                      workload=WorkloadSpec(requests=3000, rate_per_s=22.0, seed=0))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="sagellm")
def main() -> None:
    """sageLLM: scheduling policies, routers and planning for LLM inference clusters."""


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Experiment YAML (cluster, policy, router, control, workload).")
@click.option("--policy", "policies", multiple=True,
              help="Queue policy name (repeat to compare). Default: the config's, or all.")
@click.option("--router", "routers", multiple=True,
              help="Router name (repeat to compare). Default: the config's, or three.")
@click.option("--requests", type=click.IntRange(min=1), help="Number of requests.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), help="Requests per second.")
@click.option("--seed", type=int, help="Workload seed.")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False),
              help="Replay a trace file (Azure, BurstGPT, Mooncake, length table, ...). A "
                   "length-only table gets Poisson arrivals at --rate.")
@click.option("--format", "fmt", help="Trace format (default: detected).")
@click.option("--skip-bad", is_flag=True, help="Skip malformed trace rows (reported).")
@click.option("--rate-scale", type=click.FloatRange(min=0, min_open=True),
              help="Replay the trace at this many times its rate.")
@click.option("--out", type=click.Path(file_okay=False), help="Write records CSV per run here.")
@click.option("--json", "as_json", is_flag=True, help="Print summaries as JSON.")
def sim(config_path, policies, routers, requests, rate, seed, trace_path, fmt, skip_bad,
        rate_scale, out, as_json) -> None:
    """Simulate a workload under policies x routers and compare them.

    With no arguments: a built-in 8-instance scenario near saturation with three request
    classes (interactive / standard / batch), every policy against three routers.
    With --trace: the trace's requests (the first --requests of them if given).
    """
    try:
        exp = load_experiment(config_path) if config_path else default_experiment()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    for name in policies:
        if name not in POLICIES:
            raise click.BadParameter(f"unknown policy {name!r}; known: {POLICIES.names()}",
                                     param_hint="--policy")
    for name in routers:
        if name not in ROUTERS:
            raise click.BadParameter(f"unknown router {name!r}; known: {ROUTERS.names()}",
                                     param_hint="--router")
    if not policies:
        policies = (exp.policy,) if config_path else DEFAULT_POLICIES
    if not routers:
        routers = (exp.router,) if config_path else DEFAULT_ROUTERS
    w = exp.workload
    r = rate or w.rate_per_s
    s = w.seed if seed is None else seed
    if trace_path:
        trace = _trace_workload(trace_path, fmt, skip_bad, requests, r, s, rate_scale)
        make_requests = trace.requests
        heading = (f"{len(exp.instances)} instances, {trace.name}: {len(trace)} requests "
                   f"over {trace.duration_s:,.0f} s")
    else:
        n = requests or w.requests
        def make_requests():
            return poisson_mix(n, r, seed=s)
        heading = f"{len(exp.instances)} instances, {n} requests at {r:g}/s (seed {s})"
    runs = [(p, rt) for p in policies for rt in routers]
    summaries = {}
    out_dir = Path(out) if out else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    for policy, router in tqdm(runs, desc="simulating", unit="run", disable=as_json,
                               file=sys.stderr):
        result = simulate(make_requests(), exp.instances, policy=policy,
                          router=router, control=exp.control)
        label = f"{_label(policy)} / {_label(router)}"
        summaries[label] = result.summary()
        if out_dir:
            _write_records(out_dir / f"{_label(policy)}__{_label(router)}.csv", result.records)
    if as_json:
        click.echo(json.dumps({k: v.to_dict() for k, v in summaries.items()}, indent=2))
        return
    click.echo(heading)
    click.echo(format_table(summaries))


def _trace_workload(path: str, fmt: str | None, skip_bad: bool, limit: int | None,
                    rate: float, seed: int, rate_scale: float | None) -> Trace:
    """Load a trace for the simulator: lengths get Poisson arrivals; scale; keep the first
    ``limit`` requests."""
    data = load_trace(path, fmt, skip_bad, None)
    if isinstance(data, LengthTable):
        count = limit or len(data)
        data = data.with_arrivals(arrivals.poisson(rate, n=count, seed=seed))
    if rate_scale:
        data = transform.scale_rate(data, rate_scale)
    if limit and limit < len(data):
        data = data.take(np.arange(limit), meta={"first_requests": limit})
    if not len(data):
        raise click.ClickException(f"{path}: no requests to simulate")
    return data


def _label(spec: object) -> str:
    return spec if isinstance(spec, str) else str(spec.get("type"))  # type: ignore[union-attr]


def _write_records(path: Path, records: list[RequestRecord]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=RequestRecord.FIELDS)
        writer.writeheader()
        for rec in records:
            writer.writerow(rec.to_dict())


@main.command()
def plugins() -> None:
    """List the registered policies, routers and router parts (plugins included)."""
    for title, reg in (("policies", POLICIES), ("routers", ROUTERS), ("filters", FILTERS),
                       ("scorers", SCORERS), ("pickers", PICKERS)):
        click.echo(f"{title}: {', '.join(reg.names())}")


@main.group()
def config() -> None:
    """Experiment configuration files."""


@config.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def config_check(path) -> None:
    """Validate an experiment YAML and print what it describes."""
    try:
        exp = load_experiment(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{path}: ok")
    click.echo(f"  instances: {len(exp.instances)} "
               f"({', '.join(s.instance_id for s in exp.instances)})")
    click.echo(f"  policy: {_label(exp.policy)}  router: {_label(exp.router)}")
    click.echo(f"  workload: {exp.workload.requests} requests at {exp.workload.rate_per_s}/s")


main.add_command(workloads)
main.add_command(plan_cmd)

if __name__ == "__main__":
    main()
