"""``sagellm replay``: send a workload to the gateway in real time, record what the client saw.

The workload is a trace file (``--trace``, any format ``sagellm sim`` reads; a length-only
table gets Poisson arrivals at ``--rate``) or, by default, the simulator's synthetic mix
(:func:`workloads.poisson_mix`) with ``--requests`` and ``--rate``. ``--time-scale`` speeds
it up (a request is sent at ``arrival_s / time_scale``). Records (the simulator's format:
``RequestRecord.FIELDS``) go to ``--out`` (``.parquet`` or ``.csv``); a summary is printed.
See :mod:`live.replay` for what is sent and measured.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path

import aiohttp
import click
from tqdm import tqdm

from control_plane.metrics import format_table, summarize
from control_plane.prefix import DEFAULT_BLOCK_SIZE
from control_plane.types import Request
from live.replay import ReplayConfig, run_replay, save_records
from sagellm.cli_sim import _trace_workload
from workloads import poisson_mix

__all__ = ["replay_cmd"]

DEFAULT_REQUESTS = 100
DEFAULT_RATE = 2.0  # requests per second: a pair of CPU engines with the tiny model


@click.command("replay")
@click.option("--gateway", "url", required=True, metavar="URL",
              help="The gateway's (or one vLLM server's) base URL, e.g. http://127.0.0.1:8000.")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False),
              help="Trace file to replay (default: the synthetic mix).")
@click.option("--format", "fmt", help="Trace format (default: detected).")
@click.option("--skip-bad", is_flag=True, help="Skip malformed trace rows.")
@click.option("--requests", type=click.IntRange(min=1),
              help=f"Number of requests (the trace's first N; synthetic default "
                   f"{DEFAULT_REQUESTS}).")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_RATE,
              show_default=True,
              help="Requests per second of the synthetic mix (or of a length-only table).")
@click.option("--seed", type=int, default=0, show_default=True, help="Workload seed.")
@click.option("--time-scale", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, help="Speed-up: each request is sent at arrival_s / SCALE.")
@click.option("--concurrency", type=click.IntRange(min=1), default=256, show_default=True,
              help="Requests in flight at most (later sends wait, and their wait counts).")
@click.option("--model", help="Model name (default: the first of GET /v1/models).")
@click.option("--max-model-len", type=click.IntRange(min=2), default=2048, show_default=True,
              help="Clip prompt + output to fit the engines' context.")
@click.option("--vocab-size", type=click.IntRange(min=2), default=4096, show_default=True,
              help="Token ids of the prompts are drawn below this (the tiny model's "
                   "vocabulary).")
@click.option("--first-token-id", type=click.IntRange(min=0), default=8, show_default=True,
              help="Lowest prompt token id (skips the tiny model's special tokens).")
@click.option("--text-prompts", is_flag=True,
              help="Send synthetic text (one word per token) instead of token ids.")
@click.option("--no-stream", is_flag=True, help="Non-streaming requests (TTFT = end-to-end).")
@click.option("--id-prefix", default="", help="Prefix of the request ids sent.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0,
              show_default=True, help="Longest silence of the server while answering.")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Write the records here (.parquet or .csv).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def replay_cmd(url, trace_path, fmt, skip_bad, requests, rate, seed, time_scale, concurrency,
               model, max_model_len, vocab_size, first_token_id, text_prompts, no_stream,
               id_prefix, timeout, out, as_json) -> None:
    """Replay a workload against a running gateway and record client-side latencies."""
    if out and Path(out).suffix not in (".parquet", ".csv"):
        raise click.BadParameter(f"{out!r}: must end in .parquet or .csv", param_hint="--out")
    block_size = DEFAULT_BLOCK_SIZE
    reqs: Iterable[Request]
    if trace_path:
        trace = _trace_workload(trace_path, fmt, skip_bad, requests, rate, seed, None)
        reqs, n = trace.requests(), len(trace)
        block_size = trace.block_size or DEFAULT_BLOCK_SIZE
        heading = f"{trace.name}: {n} requests"
    else:
        n = requests or DEFAULT_REQUESTS
        reqs = poisson_mix(n, rate, seed=seed)
        heading = f"{n} requests at {rate:g}/s (seed {seed})"
    try:
        cfg = ReplayConfig(time_scale=time_scale, max_concurrency=concurrency, model=model,
                           stream=not no_stream, prompt_mode="text" if text_prompts
                           else "tokens", vocab_size=vocab_size,
                           first_token_id=first_token_id, block_size=block_size,
                           max_model_len=max_model_len, id_prefix=id_prefix,
                           request_timeout_s=timeout)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if not as_json:
        click.echo(f"replaying {heading} x{time_scale:g} against {url}", err=True)
    bar = tqdm(total=n, desc="replay", unit="req", disable=as_json, file=sys.stderr)
    try:
        result = run_replay(reqs, url, cfg, on_record=lambda r: bar.update())
    except (OSError, RuntimeError, aiohttp.ClientError) as exc:
        raise click.ClickException(f"replay against {url} failed: {exc}") from exc
    finally:
        bar.close()
    summary = summarize(result.records)
    counts = result.counts()
    if out:
        save_records(result.records, out)
    if as_json:
        click.echo(json.dumps({"counts": counts, "wall_s": result.wall_s,
                               "max_send_lag_s": result.max_send_lag_s,
                               "clipped": result.clipped, "summary": summary.to_dict()},
                              indent=2))
        return
    click.echo(f"{len(result.records)} requests in {result.wall_s:.1f} s: "
               + ", ".join(f"{k} {v}" for k, v in counts.items())
               + (f"; {result.clipped} clipped to --max-model-len" if result.clipped else "")
               + f"; sends at most {result.max_send_lag_s * 1e3:.0f} ms late")
    click.echo(format_table({"live": summary}))
    if out:
        click.echo(f"records written to {out}")
