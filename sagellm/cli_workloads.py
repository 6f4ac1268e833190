"""``sagellm workloads ...``: inspect trace files."""

from __future__ import annotations

import json

import click

from workloads.describe import describe, describe_lengths
from workloads.errors import TraceFormatError
from workloads.readers import LengthTable, read_trace


def parse_mapping(pairs: tuple[str, ...]) -> dict[str, str] | None:
    """``("arrival_s=ts", "prompt_tokens=in")`` -> {"arrival_s": "ts", ...}."""
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        key, sep, column = pair.partition("=")
        if not sep or not key or not column:
            raise click.BadParameter(f"{pair!r}: expected FIELD=COLUMN", param_hint="--map")
        out[key] = column
    return out


def load(path: str, fmt: str | None, skip_bad: bool, mapping: dict[str, str] | None):
    """read_trace with errors turned into CLI errors that name file, line and field."""
    options = {"mapping": mapping} if mapping else {}
    try:
        return read_trace(path, fmt, skip_bad=skip_bad, **options)
    except (TraceFormatError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def workloads() -> None:
    """Workload traces: describe and plot."""


@workloads.command("describe")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", help="Trace format (default: detected from the file).")
@click.option("--skip-bad", is_flag=True, help="Skip malformed rows and report how many.")
@click.option("--map", "mapping", multiple=True, metavar="FIELD=COLUMN",
              help="Column mapping for generic CSV/JSONL/Parquet (repeat).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Draw arrivals over time and length histograms to this PNG.")
@click.option("--bin-s", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True, help="Bin width for the peak rate and the arrival plot.")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def describe_cmd(path, fmt, skip_bad, mapping, plot_path, bin_s, as_json) -> None:
    """Print rate, burstiness, length percentiles and prefix reuse of a trace file."""
    data = load(path, fmt, skip_bad, parse_mapping(mapping))
    if isinstance(data, LengthTable):
        stats = describe_lengths(data.name, data.prompt_tokens, data.output_tokens, data.meta)
        arrivals = None
    else:
        stats = describe(data, bin_s=bin_s)
        arrivals = data.arrival_s
    if as_json:
        click.echo(json.dumps(stats.to_dict(), indent=2, default=str))
    else:
        click.echo(stats.format())
    if plot_path:
        from sagellm.plots import plot_workload  # matplotlib only when asked

        out = plot_workload(plot_path, stats.name, data.prompt_tokens, data.output_tokens,
                            arrivals, bin_s)
        click.echo(f"plot written to {out}", err=as_json)
