"""``sagellm sim``: replay a workload on a simulated cluster under policies x routers."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from control_plane import ConfigError, ControlPlaneConfig, Request
from control_plane.engine import EngineConfig
from control_plane.metrics import format_table
from control_plane.perf.parallel import ParallelConfig
from control_plane.policies import POLICIES
from control_plane.routing import ROUTERS
from sagellm.cli_workloads import load as load_trace
from sagellm.experiment import Experiment, WorkloadSpec, load_experiment, parse_failure
from sagellm.results import FORMATS, write_run, write_summaries
from sim import RequestLevelModel, simulate
from sim.hardware import instances_for
from workloads import arrivals, poisson_mix, transform
from workloads.readers import LengthTable
from workloads.trace import Trace

DEFAULT_POLICIES = ("fifo", "priority", "slo", "fair", "cost", "adaptive")
DEFAULT_ROUTERS = ("round_robin", "least_loaded", "power_of_two")


SYNTHETIC_REQUESTS = 3000
DEFAULT_RATE = 110.0  # beyond what FIFO serves within the SLOs on this cluster
DEFAULT_MAX_INFLIGHT = 128  # per instance: the control plane holds the rest in its queue


def default_experiment() -> Experiment:
    """Llama-3-8B on 2 H100 and 2 A100 (TP1, vLLM engine defaults) near saturation."""
    fast = instances_for("llama-3-8b", "h100", 2, id_prefix="h100",
                         max_inflight=DEFAULT_MAX_INFLIGHT)
    slow = instances_for("llama-3-8b", "a100", 2, id_prefix="a100",
                         max_inflight=DEFAULT_MAX_INFLIGHT)
    return Experiment(tuple(fast + slow), control=ControlPlaneConfig(max_queue=5000),
                      workload=WorkloadSpec(requests=SYNTHETIC_REQUESTS,
                                               rate_per_s=DEFAULT_RATE, seed=0))


def _check_names(names: tuple[str, ...], registry, hint: str) -> None:
    for name in names:
        if name not in registry:
            raise click.BadParameter(f"unknown {hint[2:]} {name!r}; known: {registry.names()}",
                                     param_hint=hint)


def _trace_workload(path: str, fmt: str | None, skip_bad: bool, limit: int | None,
                    rate: float, seed: int, rate_scale: float | None) -> Trace:
    """Load a trace: lengths get Poisson arrivals; scale; keep the first ``limit``."""
    data = load_trace(path, fmt, skip_bad, None)
    if isinstance(data, LengthTable):
        data = data.with_arrivals(arrivals.poisson(rate, n=limit or len(data), seed=seed))
    if rate_scale:
        data = transform.scale_rate(data, rate_scale)
    if limit and limit < len(data):
        data = data.take(np.arange(limit), meta={"first_requests": limit})
    if not len(data):
        raise click.ClickException(f"{path}: no requests to simulate")
    return data


def spec_label(spec: object) -> str:
    """A policy or router spec as a short name."""
    return spec if isinstance(spec, str) else str(spec.get("type"))  # type: ignore[union-attr]


@click.command("sim")
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="Experiment YAML (cluster, policy, router, control, workload, sim, "
                   "failures).")
@click.option("--policy", "policies", multiple=True,
              help="Queue policy name (repeat to compare). Default: the config's, or all.")
@click.option("--router", "routers", multiple=True,
              help="Router name (repeat to compare). Default: the config's, or three.")
@click.option("--model", help="Model for hardware instances (e.g. llama-3-8b); with --gpu.")
@click.option("--gpu", help="GPU type for hardware instances (h100, h200, a100, l40s).")
@click.option("--instances", "count", type=click.IntRange(min=1), default=4,
              show_default=True, help="Number of hardware instances (with --model).")
@click.option("--tp", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tensor parallel size per instance.")
@click.option("--pp", type=click.IntRange(min=1), default=1, show_default=True,
              help="Pipeline parallel size per instance.")
@click.option("--max-num-seqs", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--max-num-batched-tokens", type=click.IntRange(min=1), default=8192,
              show_default=True)
@click.option("--service", type=click.Choice(["engine", "request"]), default="engine",
              show_default=True,
              help="Iteration-level engine model, or the coarse request-level model.")
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
@click.option("--fail", "fails", multiple=True, metavar="ID:DOWN_S[:UP_S]",
              help="Take an instance down at DOWN_S (and back at UP_S). Repeatable.")
@click.option("--scrape-interval", type=click.FloatRange(min=0, min_open=True),
              help="Seconds between engine-stats scrapes (staleness the routers see).")
@click.option("--out", type=click.Path(file_okay=False),
              help="Write per-request records, per-instance series and summary.json here.")
@click.option("--out-format", type=click.Choice(FORMATS), default="parquet",
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print summaries as JSON.")
def sim_cmd(config_path, policies, routers, model, gpu, count, tp, pp, max_num_seqs,
            max_num_batched_tokens, service, requests, rate, seed, trace_path, fmt, skip_bad,
            rate_scale, fails, scrape_interval, out, out_format, as_json) -> None:
    """Simulate a workload under policies x routers and compare them.

    With no arguments: Llama-3-8B on 2 H100 + 2 A100 instances (vLLM engine model,
    calibrated roofline) serving 3,000 requests of three classes (interactive / standard /
    batch) near saturation, every policy against three routers.
    """
    try:
        exp = load_experiment(config_path) if config_path else default_experiment()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc
    _check_names(policies, POLICIES, "--policy")
    _check_names(routers, ROUTERS, "--router")
    instances = exp.instances
    if model or gpu:
        if not (model and gpu):
            raise click.UsageError("--model and --gpu go together")
        engine = EngineConfig(max_num_seqs=max_num_seqs,
                              max_num_batched_tokens=max_num_batched_tokens)
        try:
            instances = tuple(instances_for(model, gpu, count, ParallelConfig(tp=tp, pp=pp),
                                            engine=engine))
        except (ValueError, ConfigError) as exc:
            raise click.ClickException(str(exc)) from exc
    failures = list(exp.failures)
    ids = {x.instance_id for x in instances}
    for f in fails:
        parts = f.split(":")
        if len(parts) not in (2, 3) or parts[0] not in ids:
            raise click.BadParameter(f"{f!r}: expected ID:DOWN_S[:UP_S] with ID one of "
                                     f"{sorted(ids)}", param_hint="--fail")
        try:
            failures.append(parse_failure(parts[0], float(parts[1]),
                                          float(parts[2]) if len(parts) == 3 else None,
                                          "--fail"))
        except (ValueError, ConfigError) as exc:
            raise click.BadParameter(f"{f!r}: {exc}", param_hint="--fail") from exc
    sim_config = exp.sim
    if scrape_interval:
        sim_config = dataclasses.replace(sim_config, scrape_interval_s=scrape_interval,
                                         tick_interval_s=scrape_interval)
    make_requests, heading, hash_block = _workload(exp, config_path, requests, rate, seed,
                                                   trace_path, fmt, skip_bad, rate_scale)
    service_model = None
    if service == "request":
        if failures:
            raise click.UsageError("failures need the engine model (--service engine)")
        service_model = RequestLevelModel()
        instances = tuple(getattr(x, "spec", x) for x in instances)
    policies = policies or ((exp.policy,) if config_path else DEFAULT_POLICIES)
    routers = routers or ((exp.router,) if config_path else DEFAULT_ROUTERS)
    runs = [(p, rt) for p in policies for rt in routers]
    summaries = {}
    out_dir = Path(out) if out else None
    for policy, router in tqdm(runs, desc="simulating", unit="run", disable=as_json,
                               file=sys.stderr):
        try:
            result = simulate(make_requests(), instances, policy=policy, router=router,
                              control=exp.control, model=service_model, config=sim_config,
                              failures=failures,
                              hash_block_size=None if service_model else hash_block)
        except ValueError as exc:
            raise click.ClickException(str(exc)) from exc
        label = f"{spec_label(policy)} / {spec_label(router)}"
        summaries[label] = result.summary()
        if out_dir:
            write_run(out_dir, f"{spec_label(policy)}__{spec_label(router)}", result, out_format)
    if out_dir:
        write_summaries(out_dir, summaries)
    if as_json:
        click.echo(json.dumps({k: v.to_dict() for k, v in summaries.items()}, indent=2))
        return
    click.echo(f"{len(instances)} instances ({_describe(instances)}), {heading}")
    click.echo(format_table(summaries))
    if out_dir:
        click.echo(f"results written to {out_dir}/")


def _describe(instances) -> str:
    kinds: dict[str, int] = {}
    for x in instances:
        spec = getattr(x, "spec", x)
        kinds[spec.gpu_type] = kinds.get(spec.gpu_type, 0) + 1
    return ", ".join(f"{n} x {k}" for k, n in kinds.items())


def _workload(exp: Experiment, config_path, requests, rate, seed, trace_path, fmt, skip_bad,
              rate_scale) -> tuple[Callable[[], Iterable[Request]], str, int | None]:
    w = exp.workload
    r = rate or w.rate_per_s
    s = w.seed if seed is None else seed
    trace_path = trace_path or w.trace
    if trace_path:
        trace = _trace_workload(trace_path, fmt or w.format, skip_bad or w.skip_bad,
                                requests or w.requests, r, s, rate_scale or w.rate_scale)
        return trace.requests, (f"{trace.name}: {len(trace)} requests over "
                                f"{trace.duration_s:,.0f} s"), trace.block_size
    n = requests or w.requests or SYNTHETIC_REQUESTS

    def make() -> Iterable[Request]:
        return poisson_mix(n, r, seed=s)

    return make, f"{n} requests at {r:g}/s (seed {s})", None
