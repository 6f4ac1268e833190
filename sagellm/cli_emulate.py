"""``sagellm emulate``: emulated vLLM engines (no GPU) serving vLLM's OpenAI API in real time.

Each engine is the simulator's iteration-level engine model (:mod:`control_plane.engine`)
run on the event loop's clock (:mod:`live.emulate`) behind vLLM's HTTP API and metrics
(:mod:`live.emulate_api`): a stand-in for real engines when testing the gateway with many
engines. One process serves ``--instances`` engines on consecutive ports.

The engine is sized as the simulator sizes a hardware instance
(:func:`sim.hardware.instances_for`): KV blocks from the GPU's memory less the weights of
``--model`` at ``--tp`` x ``--pp`` (or ``--num-gpu-blocks``), iteration times from the
calibrated roofline, a measured profile table (``--profile``), or a linear predictor
(``--predictor linear:...``). With ``--shared-host`` the engines share one machine and
slow each other down by the profile's neighbour slowdowns (:mod:`live.emulate_host`).
"""

from __future__ import annotations

import dataclasses

import click

from control_plane import ConfigError
from control_plane.engine import EngineConfig, SharedHostPredictor, neighbour_slowdowns
from control_plane.perf import (
    FittedPredictor,
    IterationPredictor,
    LinearPredictor,
    ParallelConfig,
    PipelinedPredictor,
    get_gpu,
    get_model,
    read_profile,
)
from control_plane.perf.profile import NEIGHBOUR_KEYS
from live.emulate import EmulatedEngine
from live.emulate_api import EmulatorServer
from live.emulate_host import EmulatedHost
from live.serve import run_until_signalled
from sim.hardware import instances_for

__all__ = ["build_engine", "emulate_cmd", "parse_predictor"]

_LINEAR_FIELDS = ("overhead_s", "per_token_s", "per_context_s", "per_attention_s")


def parse_predictor(spec: str) -> LinearPredictor | None:
    """``roofline`` -> None (the model's roofline); ``linear:k=v,...`` -> LinearPredictor
    (fields ``overhead_s``, ``per_token_s``, ``per_context_s``, ``per_attention_s``)."""
    kind, _, args = spec.strip().partition(":")
    if kind == "roofline" and not args:
        return None
    if kind != "linear":
        raise click.BadParameter(f"{spec!r}: expected 'roofline' or 'linear:FIELD=SECONDS,...' "
                                 f"(fields {', '.join(_LINEAR_FIELDS)})", param_hint="--predictor")
    kw = {}
    for part in filter(None, (p.strip() for p in args.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in _LINEAR_FIELDS:
            raise click.BadParameter(f"{part!r}: expected FIELD=SECONDS with FIELD one of "
                                     f"{', '.join(_LINEAR_FIELDS)}", param_hint="--predictor")
        try:
            kw[key] = float(value)
        except ValueError:
            raise click.BadParameter(f"{part!r}: {value!r} is not a number",
                                     param_hint="--predictor") from None
    try:
        return LinearPredictor(**kw)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--predictor") from exc


def build_engine(model: str, gpu: str, parallel: ParallelConfig, engine: EngineConfig, *,
                 predictor: str = "roofline", profile: str | None = None,
                 num_gpu_blocks: int | None = None, gpu_memory_utilization: float = 0.9
                 ) -> tuple[EngineConfig, IterationPredictor, str]:
    """(engine settings with the KV capacity, iteration-time predictor, a description).
    Errors are click errors naming the option."""
    linear = parse_predictor(predictor)
    if linear is not None and profile is not None:
        raise click.UsageError("--predictor linear:... and --profile exclude each other")
    pred: IterationPredictor | None = linear
    what = f"linear {linear}" if linear is not None else "roofline"
    if linear is None or num_gpu_blocks is None:  # the hardware model is needed
        try:
            m = get_model(model)
        except (ConfigError, ValueError) as exc:
            raise click.BadParameter(str(exc), param_hint="--model") from exc
        try:
            g = get_gpu(gpu)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--gpu") from exc
        try:
            inst = instances_for(m, g, 1, parallel, engine=engine,
                                 gpu_memory_utilization=gpu_memory_utilization)[0]
        except (ConfigError, ValueError) as exc:
            raise click.ClickException(f"{exc} (options --model, --gpu, --tp, --pp, "
                                       "--gpu-memory-utilization)") from exc
        engine = inst.engine
        pred = pred or inst.predictor
        what = f"{what}, {m.name} on {g.name} {parallel}"
    if num_gpu_blocks is not None:
        engine = dataclasses.replace(engine, num_gpu_blocks=num_gpu_blocks)
    if profile is not None:
        try:
            table = read_profile(profile)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--profile") from exc
        if (table.tp, table.pp) != (parallel.tp, parallel.pp):
            raise click.BadParameter(f"{profile} is a profile for tp={table.tp} pp={table.pp},"
                                     f" not tp={parallel.tp} pp={parallel.pp}",
                                     param_hint="--profile")
        try:
            pred = FittedPredictor.from_table(table)
        except ConfigError as exc:
            raise click.BadParameter(str(exc), param_hint="--profile") from exc
        if parallel.pp > 1:  # vLLM keeps pp micro-batches in flight (as sim.hardware)
            pred = PipelinedPredictor(pred, parallel.pp)
        what = f"profile {profile} ({table.model} on {table.gpu})"
    assert pred is not None
    return engine, pred, what


def _serve(servers: list[EmulatorServer], host: str, ports: list[int]) -> None:
    """Serve until SIGINT / SIGTERM, then close every server (:mod:`live.serve`)."""
    async def start() -> None:
        for s, p in zip(servers, ports, strict=True):
            try:
                await s.listen(host, p)
            except OSError as exc:
                raise click.ClickException(f"cannot listen on {host}:{p}: {exc}") from exc
            click.echo(f"engine {s.url} model {s.model_name}", err=False)
        click.echo("serving; Ctrl-C to stop")

    async def stop() -> None:
        for s in servers:
            await s.close()

    run_until_signalled(start, stop)


@click.command("emulate")
@click.option("--model", required=True,
              help="Model: a built-in name (e.g. llama-3-8b) or a Hugging Face config.json; "
                   "sizes the KV cache and the roofline. Also the served name.")
@click.option("--served-model-name", help="Name in the API (default: --model as given).")
@click.option("--gpu", default="h100", show_default=True,
              help="GPU type (h100, h200, a100, l40s, ...).")
@click.option("--tp", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tensor parallel size of each engine.")
@click.option("--pp", type=click.IntRange(min=1), default=1, show_default=True,
              help="Pipeline parallel size of each engine.")
@click.option("--predictor", default="roofline", show_default=True,
              metavar="roofline|linear:FIELD=S,...",
              help="Iteration times: the calibrated roofline of --model on --gpu, or "
                   "'linear:overhead_s=0.01,per_token_s=5e-5' (also per_context_s, "
                   "per_attention_s; with --num-gpu-blocks --model needs no spec).")
@click.option("--profile", type=click.Path(dir_okay=False),
              help="Measured iteration-time table (CSV, see control_plane.perf.profile): "
                   "iteration times from the predictor fitted to it.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port of the (first) engine; 0: any free port.")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
              help="Engines served by this process, on consecutive ports.")
@click.option("--base-port", type=click.IntRange(0, 65535),
              help="Port of the first of --instances engines (instead of --port).")
@click.option("--max-num-seqs", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--max-num-batched-tokens", type=click.IntRange(min=1), default=8192,
              show_default=True)
@click.option("--block-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Tokens per KV block.")
@click.option("--num-gpu-blocks", type=click.IntRange(min=1),
              help="KV blocks (default: from the GPU memory left after the weights).")
@click.option("--gpu-memory-utilization", type=click.FloatRange(0, 1, min_open=True),
              default=0.9, show_default=True)
@click.option("--enable-prefix-caching/--no-enable-prefix-caching", default=True,
              show_default=True)
@click.option("--enable-chunked-prefill/--no-enable-chunked-prefill", default=True,
              show_default=True)
@click.option("--scheduling-policy", type=click.Choice(["fcfs", "priority"]), default="fcfs",
              show_default=True, help="priority: requests' 'priority' field orders the queue.")
@click.option("--long-prefill-token-threshold", type=click.IntRange(min=0), default=0,
              show_default=True)
@click.option("--max-model-len", type=click.IntRange(min=2),
              help="Refuse prompt + max_tokens beyond this (default: no limit but the KV "
                   "cache).")
@click.option("--max-lag", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="Seconds the loop may fall behind the model's clock before the clock "
                   "jumps to real time.")
@click.option("--shared-host", is_flag=True,
              help="The --instances engines share one machine: each runs slower while the "
                   "others decode, prefill or spin, by --profile's neighbour slowdowns "
                   "(`sagellm calibrate --neighbour-core`), as the simulator's instances "
                   "with one host.")
def emulate_cmd(model, served_model_name, gpu, tp, pp, predictor, profile, host, port,
                instances, base_port, max_num_seqs, max_num_batched_tokens, block_size,
                num_gpu_blocks, gpu_memory_utilization, enable_prefix_caching,
                enable_chunked_prefill, scheduling_policy, long_prefill_token_threshold,
                max_model_len, max_lag, shared_host) -> None:
    """Serve emulated vLLM engines: vLLM's OpenAI API (/v1/completions,
    /v1/chat/completions, /v1/models, /health, /load, /version) and /metrics with vLLM's
    metric names, with tokens produced in real time by the simulator's engine model.

    Outputs have exactly max_tokens tokens (as with ignore_eos). Example: 16 engines of
    Llama-3-8B on H100 on ports 8100-8115, then a gateway in front of them:

    \b
        sagellm emulate --model llama-3-8b --gpu h100 --instances 16 --base-port 8100
        sagellm gateway --engine http://127.0.0.1:8100 --engine ...
    """
    ctx = click.get_current_context()
    if base_port is not None and ctx.get_parameter_source("port").name != "DEFAULT":
        raise click.UsageError("give --port or --base-port, not both")
    first = port if base_port is None else base_port
    ports = [first + k if first else 0 for k in range(instances)]
    if ports[-1] > 65535:
        raise click.BadParameter(f"{instances} engines from port {first} go past 65535",
                                 param_hint="--instances")
    try:
        par = ParallelConfig(tp=tp, pp=pp)
    except (ConfigError, ValueError) as exc:
        raise click.BadParameter(str(exc), param_hint="--tp") from exc
    cfg = EngineConfig(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                       block_size=block_size, enable_chunked_prefill=enable_chunked_prefill,
                       enable_prefix_caching=enable_prefix_caching,
                       scheduling_policy=scheduling_policy,
                       long_prefill_token_threshold=long_prefill_token_threshold)
    cfg, pred, what = build_engine(model, gpu, par, cfg, predictor=predictor, profile=profile,
                                   num_gpu_blocks=num_gpu_blocks,
                                   gpu_memory_utilization=gpu_memory_utilization)
    name = served_model_name or model
    click.echo(f"{instances} emulated engine(s): {what}; KV {cfg.num_gpu_blocks} blocks x "
               f"{cfg.block_size} tokens, max_num_seqs {cfg.max_num_seqs}, "
               f"max_num_batched_tokens {cfg.max_num_batched_tokens}")
    slow = neighbour_slowdowns(pred)
    if shared_host:
        if instances < 2:
            raise click.BadParameter("a shared host needs 2 or more engines",
                                     param_hint="--instances")
        if not any(slow):
            raise click.BadParameter("the predictor has no neighbour slowdowns: give a "
                                     "--profile calibrated with `sagellm calibrate "
                                     "--neighbour-core`", param_hint="--shared-host")
    engines = [EmulatedEngine(cfg, SharedHostPredictor(pred, slow) if shared_host else pred,
                              max_lag_s=max_lag) for _ in range(instances)]
    if shared_host:
        EmulatedHost(engines)
        click.echo(f"one shared host: neighbour slowdowns {', '.join(f'{v:.3f}' for v in slow)}"
                   f" ({', '.join(NEIGHBOUR_KEYS)})")
    servers = [EmulatorServer(e, name, max_model_len=max_model_len) for e in engines]
    _serve(servers, host, ports)
