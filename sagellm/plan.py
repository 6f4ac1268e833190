"""``sagellm plan``: choose tensor / pipeline / data / expert parallelism for a GPU budget.

This command runs the *analytic* planner (:func:`control_plane.parallelism.plan` without a
``confirm`` callable): memory per GPU, operating batch under KV and SLO limits, TTFT,
TPOT, max rate, goodput per GPU and cost per million output tokens for every
configuration, ranked with the reason each won or lost, and the winner's vLLM flags.
Simulator confirmation (a rate search per top candidate) is a ``confirm`` argument of the
planner; this command does not pass one.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import click
import numpy as np

from control_plane.errors import ConfigError
from control_plane.parallelism import (
    COLUMNS,
    OBJECTIVES,
    Plan,
    PlanOptions,
    SLOTarget,
    WorkloadStats,
    format_plan,
    plan,
    plan_table,
)
from control_plane.perf import get_gpu
from sagellm.plan_confirm import simulator_confirm

__all__ = ["parse_duration", "parse_gpus", "plan_cmd", "plot_plan", "write_csv"]

_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "min": 60.0}
_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(s|ms|us|min)?\s*$")
_GPUS = re.compile(r"^\s*(\d+)\s*[xX*]\s*([A-Za-z0-9_.\-]+)\s*$")


def parse_duration(text: str) -> float:
    """``"2s"`` -> 2.0, ``"100ms"`` -> 0.1, ``"1.5"`` -> 1.5 (seconds), ``"250us"``."""
    m = _DURATION.match(str(text))
    if not m or not float(m.group(1)) > 0:
        raise ValueError(f"{text!r}: expected a positive duration such as 2s, 100ms or 1.5 "
                         "(seconds)")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def parse_gpus(text: str) -> tuple[int, str]:
    """``"8xh100"`` -> (8, "h100"); the GPU name is checked against the known GPUs."""
    m = _GPUS.match(str(text))
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"{text!r}: expected COUNTxGPU, e.g. 8xh100")
    return int(m.group(1)), get_gpu(m.group(2)).name


class _Duration(click.ParamType):
    name = "duration"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def write_csv(path: str | Path, p: Plan) -> Path:
    """The ranking as CSV, columns :data:`control_plane.parallelism.COLUMNS`."""
    path = Path(path)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(plan_table(p))
    return path


def plot_plan(path: str | Path, p: Plan) -> Path:
    """Goodput per GPU of each configuration (bars, winner highlighted; infeasible ones
    marked), as a PNG (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = plan_table(p)
    names = [r["config"] for r in rows]
    good = [r["goodput_per_gpu"] or 0.0 for r in rows]
    colors = ["tab:green" if r["rank"] == 1 else ("tab:blue" if r["feasible"] else
              "lightgrey") for r in rows]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(rows) + 1.5), constrained_layout=True)
    y = list(range(len(rows)))
    ax.barh(y, good, color=colors)
    if p.confirmed:
        conf = [r["confirmed_goodput_per_gpu"] for r in rows]
        pts = [(c, i) for i, c in enumerate(conf) if c != ""]
        if pts:
            ax.plot([c for c, _ in pts], [i for _, i in pts], "k|", markersize=14,
                    label="simulator-confirmed")
            ax.legend(loc="lower right")
    top = max(good) if any(good) else 1.0
    for i, r in enumerate(rows):
        if not r["feasible"]:
            ax.text(0.01 * top, i, "infeasible", va="center", fontsize=8, color="dimgrey")
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_xlabel("goodput per GPU (output tokens/s at SLO)")
    ax.set_title(f"{p.model.name} on {p.gpus} x {p.gpu.name}: {p.slo.describe()}")
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


@click.command("plan")
@click.option("--model", required=True, help="Model name (e.g. llama-3-70b) or HF config.json.")
@click.option("--gpus", "gpus_spec", required=True, metavar="COUNTxGPU",
              help="GPU budget, e.g. 8xh100.")
@click.option("--gpus-per-node", type=click.IntRange(min=1), default=8, show_default=True,
              help="GPUs per node (TP stays inside a node).")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False),
              help="Trace or length table whose prompt/output lengths to plan for.")
@click.option("--format", "fmt", help="Trace format (default: detected).")
@click.option("--skip-bad", is_flag=True, help="Skip malformed trace rows.")
@click.option("--prompt-tokens", type=click.IntRange(min=1), default=1024, show_default=True,
              help="Prompt length without --trace.")
@click.option("--output-tokens", type=click.IntRange(min=1), default=256, show_default=True,
              help="Output length without --trace.")
@click.option("--slo-ttft", type=_Duration(), help="TTFT target, e.g. 2s.")
@click.option("--slo-tpot", type=_Duration(), help="TPOT target, e.g. 100ms.")
@click.option("--slo-percentile", type=click.FloatRange(0, 100, min_open=True), default=99.0,
              show_default=True, help="Percentile the SLO targets apply to.")
@click.option("--objective", type=click.Choice(OBJECTIVES), default="goodput",
              show_default=True, help="goodput per GPU, or cost per million output tokens.")
@click.option("--price", type=click.FloatRange(min=0), help="USD per GPU-hour (default: the "
              "GPU's built-in illustrative rate).")
@click.option("--gpu-memory-utilization", type=click.FloatRange(0, 1, min_open=True),
              default=0.9, show_default=True, help="vLLM's memory fraction.")
@click.option("--interconnect", type=click.Choice(["nvlink", "pcie"]),
              help="TP link (default: NVLink when the GPU has it).")
@click.option("--out", type=click.Path(dir_okay=False), default="plan.csv", show_default=True,
              help="Write the ranking as CSV here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Draw goodput per config to this PNG.")
@click.option("--confirm/--no-confirm", default=True, show_default=True,
              help="Confirm the top candidates in the simulator (highest rate keeping SLO "
                   "attainment >= the SLO percentile).")
@click.option("--top-k", type=click.IntRange(min=1), default=3, show_default=True,
              help="Candidates to confirm in the simulator.")
@click.option("--confirm-requests", type=click.IntRange(min=10), default=1500,
              show_default=True, help="Simulated requests per confirmation run.")
def plan_cmd(model, gpus_spec, gpus_per_node, trace_path, fmt, skip_bad, prompt_tokens,
             output_tokens, slo_ttft, slo_tpot, slo_percentile, objective, price,
             gpu_memory_utilization, interconnect, out, plot_path, confirm, top_k,
             confirm_requests) -> None:
    """Rank TP/PP/DP/EP configurations for a model on a GPU budget.

    Ranks every configuration analytically, then confirms the top candidates in the
    simulator (binary search on the request rate that keeps SLO attainment at the SLO
    percentile). Prints the ranking (memory, KV tokens, operating batch, TTFT, TPOT, max
    rate, goodput per GPU, cost per million output tokens, and why each config won or
    lost), writes it as CSV and prints the winner's vLLM flags. Example:

        sagellm plan --model llama-3-70b --gpus 8xh100 --slo-ttft 2s --slo-tpot 100ms
    """
    try:
        gpus, gpu = parse_gpus(gpus_spec)
    except (ValueError, ConfigError) as exc:
        raise click.BadParameter(str(exc), param_hint="--gpus") from exc
    if trace_path:
        from sagellm.cli_workloads import load

        data = load(trace_path, fmt, skip_bad, None)
        try:
            workload = WorkloadStats.from_samples(data.prompt_tokens, data.output_tokens,
                                                  f"trace {Path(trace_path).name}")
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
    else:
        workload = WorkloadStats.fixed(prompt_tokens, output_tokens)
        click.echo(f"no --trace: planning for fixed lengths, {prompt_tokens} prompt / "
                   f"{output_tokens} output tokens", err=True)
    options = PlanOptions(gpu_memory_utilization=gpu_memory_utilization,
                          interconnect=interconnect, price_per_gpu_hour=price)
    slo = SLOTarget(slo_ttft, slo_tpot, slo_percentile)
    checker = None
    if confirm:
        if trace_path:
            samples = (data.prompt_tokens, data.output_tokens)
        else:
            samples = (np.array([prompt_tokens]), np.array([output_tokens]))
        checker = simulator_confirm(model, gpu, slo, *samples, options,
                                    requests=confirm_requests)
    try:
        p = plan(model, gpu, gpus, gpus_per_node, workload, slo, objective, top_k=top_k,
                 confirm=checker, attainment_target=slo_percentile / 100.0, options=options)
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(format_plan(p))
    click.echo(f"ranking written to {write_csv(out, p)}")
    if plot_path:
        click.echo(f"plot written to {plot_plan(plot_path, p)}")
