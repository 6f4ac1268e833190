"""Measured iteration-time tables and the predictor fitted to them.

Profile table format (CSV, UTF-8), one file per model / GPU / TP / PP::

    # sagellm iteration profile v1
    # model: llama-3-8b
    # gpu: h100
    # tp: 1
    # pp: 1
    # source: vLLM 0.9.1, 1x H100 SXM, measured 2025-06-01   (free text, optional)
    prefill_tokens,prefill_attention,decode_seqs,decode_context,iteration_s
    512,131328,0,0,0.0391
    0,0,64,65536,0.0142

Metadata lines ``# key: value`` come before the header; ``model``, ``gpu``, ``tp`` and
``pp`` are required (names as :func:`~control_plane.perf.get_model` /
:func:`~control_plane.perf.get_gpu` accept them; a CPU engine names its processor, e.g.
``gpu: cpu``, and is then used through its file, see below). Columns, one row per measured
engine iteration (or the mean of several iterations of the same composition), are those of
:class:`~control_plane.perf.base.Batch` plus ``iteration_s`` (seconds, wall time of the
step, from one step's start to the next's); ``prefill_attention`` and ``decode_context``
default to 0 when absent. Other columns are kept as text in ``ProfileTable.extra`` and
written back, never fitted (``sagellm calibrate`` writes ``kind`` prefill|decode, ``split``
train|holdout, ``repeats`` and ``rel_spread``: (slowest - fastest repeat) / median).
Files are found by :func:`find_profile` in a folder (``*.csv``, recursively) by their
metadata, not their names; :func:`resolve_profile` takes a path or the name of a built-in
profile (``data/profiles/<name>.csv``).

Optional metadata, per-request overheads in seconds (absent: 0), time a request spends
outside the engine's iterations and queue, which the iteration predictor does not cover:

- ``request_ttft_overhead_s``: added to the time to first token as a client of the engine's
  HTTP server sees it (API server parsing and serialising, IPC to and from the engine core,
  HTTP) = client TTFT - (engine queue time + the prefill iteration) of a request joining a
  running engine, median over requests. Informational split: ``api_server_ttft_s`` (client
  TTFT - engine-reported TTFT) and ``engine_frontend_ttft_s`` (engine TTFT - queue -
  prefill).
- ``request_e2e_overhead_s``: client end-to-end time - (engine queue + inference time) of a
  streamed request, median.

They become :class:`FittedPredictor`'s ``request_ttft_overhead_s`` / ``request_e2e_overhead_s``.

Optional metadata, co-located engines (absent: 0): ``neighbour_<mine>_slowdown_<theirs>``
for ``mine`` in decode / prefill and ``theirs`` in decode / prefill / spin, how much longer
this engine's decode iterations / prefills take while one other engine on the same machine
decodes / prefills / spins, as a fraction (0.3: 30 % longer), measured by ``sagellm
calibrate --neighbour-core``; ``neighbour_spin_s``, how long this engine keeps its core
busy after its last iteration (vLLM's worker busy-polls for new work, see
:mod:`control_plane.engine.contention`), during which it is a *spinning* neighbour. The
simulator applies them to instances that share a ``host``
(:mod:`control_plane.engine.contention`).
The fixed per-*step* overhead of the engine (scheduling, sampling, Python) is the fit's
``intercept_s``. Other metadata (hardware, engine version, date, fit quality) is free text.

:class:`FittedPredictor` fits ``iteration_s ~ intercept + a * prefill_tokens + b *
prefill_attention + c * decode_seqs + d * decode_context`` with all coefficients >= 0,
minimising the squared *relative* error (rows weighted by 1 / iteration_s), by solving the
least-squares problem on every subset of features and keeping the best non-negative
solution (exact NNLS for 5 features). It is linear in the decode context, so
``decode_run_s`` is closed-form.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from control_plane.errors import ConfigError
from control_plane.perf.base import Batch
from control_plane.perf.coefficients import Coefficients
from control_plane.perf.hardware import GPUSpec, get_gpu
from control_plane.perf.models import ModelSpec, get_model
from control_plane.perf.parallel import ParallelConfig
from control_plane.perf.roofline import RooflinePredictor

__all__ = ["COLUMNS", "NEIGHBOUR_KEYS", "OVERHEAD_KEYS", "PROFILES_DIR", "SPIN_KEY",
           "FittedPredictor",
           "ProfileTable", "builtin_profiles", "find_profile", "predictor_for", "read_profile",
           "resolve_profile", "write_profile"]

COLUMNS = ("prefill_tokens", "prefill_attention", "decode_seqs", "decode_context")
OVERHEAD_KEYS = ("request_ttft_overhead_s", "request_e2e_overhead_s")
NEIGHBOUR_KEYS = ("neighbour_decode_slowdown_decode", "neighbour_decode_slowdown_prefill",
                  "neighbour_prefill_slowdown_decode", "neighbour_prefill_slowdown_prefill",
                  "neighbour_decode_slowdown_spin", "neighbour_prefill_slowdown_spin")
SPIN_KEY = "neighbour_spin_s"
PROFILES_DIR = Path(__file__).resolve().parent / "data" / "profiles"
_REQUIRED_META = ("model", "gpu", "tp", "pp")


@dataclass(frozen=True, eq=False)
class ProfileTable:
    model: str
    gpu: str
    tp: int
    pp: int
    features: np.ndarray  # rows x 4, the COLUMNS
    iteration_s: np.ndarray
    meta: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # other columns: name -> tuple of str per row

    def matches(self, model: ModelSpec, gpu: GPUSpec, parallel: ParallelConfig) -> bool:
        return (_norm_model(self.model) == model.name and _norm_gpu(self.gpu) == gpu.name
                and self.tp == parallel.tp and self.pp == parallel.pp)


def _norm_model(name: str) -> str:
    try:
        return get_model(name).name
    except (ConfigError, ValueError):
        return name.strip().lower()


def _norm_gpu(name: str) -> str:
    try:
        return get_gpu(name).name
    except ConfigError:
        return name.strip().lower()


def _read_meta(f) -> tuple[dict, int]:
    """The ``# key: value`` lines at the top of an open file; leaves it at the header."""
    meta, line_no = {}, 0
    pos = f.tell()
    while True:
        line = f.readline()
        if not line.startswith("#"):
            f.seek(pos)
            return meta, line_no
        pos, line_no = f.tell(), line_no + 1
        key, sep, value = line[1:].partition(":")
        if sep:
            meta[key.strip().lower()] = value.strip()


def read_profile(path: str | Path) -> ProfileTable:
    """Parse a profile table (format in the module docstring); errors name file:line."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            meta, skipped = _read_meta(f)
            rows = list(csv.reader(f))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read profile: {exc}") from exc
    for key in _REQUIRED_META:
        if key not in meta:
            raise ConfigError(f"{path}: missing metadata line '# {key}: ...'")
    if not rows:
        raise ConfigError(f"{path}:{skipped + 1}: missing header row")
    header = [h.strip() for h in rows[0]]
    for col in ("prefill_tokens", "decode_seqs", "iteration_s"):
        if col not in header:
            raise ConfigError(f"{path}:{skipped + 1}: missing column {col!r} (have {header})")
    idx = {c: header.index(c) for c in (*COLUMNS, "iteration_s") if c in header}
    others = {h: k for k, h in enumerate(header) if h and h not in idx}
    feats, ys = [], []
    extra: dict[str, list[str]] = {h: [] for h in others}
    for i, row in enumerate(rows[1:], start=skipped + 2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            vals = [float(row[idx[c]]) if c in idx else 0.0 for c in COLUMNS]
            y = float(row[idx["iteration_s"]])
        except (ValueError, IndexError) as exc:
            raise ConfigError(f"{path}:{i}: bad row {row!r}: {exc}") from exc
        if min(vals) < 0 or not y > 0:
            raise ConfigError(f"{path}:{i}: values must be >= 0 and iteration_s > 0: {row!r}")
        feats.append(vals)
        ys.append(y)
        for h, k in others.items():
            extra[h].append(row[k].strip() if k < len(row) else "")
    if not ys:
        raise ConfigError(f"{path}: no data rows")
    try:
        tp, pp = int(meta["tp"]), int(meta["pp"])
    except ValueError as exc:
        raise ConfigError(f"{path}: tp/pp metadata must be integers: {exc}") from exc
    return ProfileTable(meta["model"], meta["gpu"], tp, pp, np.array(feats, float),
                        np.array(ys, float), meta, {h: tuple(v) for h, v in extra.items()})


def write_profile(path: str | Path, table: ProfileTable) -> None:
    """Write ``table`` in the documented format."""
    meta = {**table.meta, "model": table.model, "gpu": table.gpu, "tp": table.tp,
            "pp": table.pp}
    with Path(path).open("w", newline="") as f:
        f.write("# sagellm iteration profile v1\n")
        for k, v in meta.items():
            f.write(f"# {k}: {v}\n")
        w = csv.writer(f)
        names = list(table.extra)
        for name in names:
            if len(table.extra[name]) != len(table.iteration_s):
                raise ValueError(f"extra column {name!r} has {len(table.extra[name])} values "
                                 f"for {len(table.iteration_s)} rows")
        w.writerow([*COLUMNS, "iteration_s", *names])
        for i, (feats, y) in enumerate(zip(table.features, table.iteration_s, strict=True)):
            w.writerow([*(int(v) if float(v).is_integer() else v for v in feats), repr(float(y)),
                        *(table.extra[n][i] for n in names)])


def builtin_profiles() -> list[str]:
    """Names of the profiles shipped in ``data/profiles`` (file stems)."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.csv")) if PROFILES_DIR.is_dir() else []


def resolve_profile(name_or_path: str | Path) -> Path:
    """A profile file: an existing path, else a built-in profile's name (with or without
    ``.csv``); ConfigError naming the built-in ones otherwise."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    builtin = PROFILES_DIR / (p.name if p.suffix == ".csv" else f"{p.name}.csv")
    if p.parent == Path(".") and builtin.is_file():
        return builtin
    raise ConfigError(f"profile {str(name_or_path)!r}: no such file, nor a built-in profile "
                      f"(built-in: {', '.join(builtin_profiles()) or 'none'})")


def find_profile(model: ModelSpec | str, gpu: GPUSpec | str, parallel: ParallelConfig,
                 profiles_dir: str | Path) -> Path | None:
    """The table in ``profiles_dir`` for this model/GPU/TP/PP, None if there is none;
    ConfigError if several match."""
    m, g = get_model(model), get_gpu(gpu)
    hits = []
    for path in sorted(Path(profiles_dir).rglob("*.csv")):
        with path.open(newline="") as f:
            meta, _ = _read_meta(f)
        if not all(k in meta for k in _REQUIRED_META):
            continue
        if (_norm_model(meta["model"]) == m.name and _norm_gpu(meta["gpu"]) == g.name
                and meta["tp"].strip() == str(parallel.tp)
                and meta["pp"].strip() == str(parallel.pp)):
            hits.append(path)
    if len(hits) > 1:
        raise ConfigError(f"several profiles match {m.name}/{g.name}/{parallel}: "
                          + ", ".join(map(str, hits)))
    return hits[0] if hits else None


@dataclass(frozen=True, slots=True)
class FittedPredictor:
    """Linear predictor fitted to a measured profile table (see module docstring)."""

    intercept_s: float
    per_prefill_token_s: float
    per_attention_pair_s: float
    per_decode_seq_s: float
    per_context_token_s: float
    model: str = ""
    gpu: str = ""
    tp: int = 1
    pp: int = 1
    rows: int = 0
    fit_rel_err_median: float = 0.0
    fit_rel_err_max: float = 0.0
    request_ttft_overhead_s: float = 0.0  # per request, outside iterations (module doc)
    request_e2e_overhead_s: float = 0.0
    neighbour_decode_slowdown_decode: float = 0.0   # co-located engines (module doc)
    neighbour_decode_slowdown_prefill: float = 0.0
    neighbour_prefill_slowdown_decode: float = 0.0
    neighbour_prefill_slowdown_prefill: float = 0.0
    neighbour_decode_slowdown_spin: float = 0.0
    neighbour_prefill_slowdown_spin: float = 0.0
    neighbour_spin_s: float = 0.0   # how long this engine spins after its last iteration

    @classmethod
    def from_file(cls, name_or_path: str | Path) -> FittedPredictor:
        """Fit the profile at a path, or the built-in profile of that name."""
        return cls.from_table(read_profile(resolve_profile(name_or_path)))

    @classmethod
    def from_table(cls, table: ProfileTable) -> FittedPredictor:
        X = np.column_stack([np.ones(len(table.iteration_s)), table.features])
        y = table.iteration_s
        if len(y) < 2:
            raise ConfigError(f"profile {table.model}/{table.gpu}: need >= 2 rows, got {len(y)}")
        A = X / y[:, None]  # relative-error weighting: minimise sum((X c / y - 1)^2)
        scale = np.abs(A).max(axis=0)
        scale[scale == 0] = 1.0
        A = A / scale
        best, best_res = np.zeros(5), np.inf
        for r in range(1, 6):
            for cols in itertools.combinations(range(5), r):
                sol = np.linalg.lstsq(A[:, cols], np.ones(len(y)), rcond=None)[0]
                if (sol < 0).any():
                    continue
                res = float(np.sum((A[:, cols] @ sol - 1.0) ** 2))
                if res < best_res - 1e-15:
                    best, best_res = np.zeros(5), res
                    best[list(cols)] = sol
        coef = best / scale
        rel = np.abs(X @ coef / y - 1)
        return cls(*(float(c) for c in coef), model=table.model, gpu=table.gpu, tp=table.tp,
                   pp=table.pp, rows=len(y), fit_rel_err_median=float(np.median(rel)),
                   fit_rel_err_max=float(rel.max()), **_overheads(table))

    def iteration_s(self, batch: Batch) -> float:
        if batch.prefill_tokens + batch.decode_seqs <= 0:
            return 0.0
        return (self.intercept_s + self.per_prefill_token_s * batch.prefill_tokens
                + self.per_attention_pair_s * batch.prefill_attention
                + self.per_decode_seq_s * batch.decode_seqs
                + self.per_context_token_s * batch.decode_context)

    def decode_run_s(self, decode_seqs: int, decode_context: int, steps: int) -> float:
        if steps <= 0 or decode_seqs <= 0:
            return 0.0
        first = self.iteration_s(Batch(decode_seqs=decode_seqs, decode_context=decode_context))
        return steps * first + self.per_context_token_s * decode_seqs * steps * (steps - 1) / 2

    def scaled(self, decode: float = 1.0, prefill: float = 1.0) -> FittedPredictor:
        """This predictor on a machine running ``decode`` times as long on the decode part
        of an iteration (its intercept, per sequence and per context token) and ``prefill``
        times on the prefill part (per prompt token and attention pair): the factors a
        speed check measures against the profile (``live.speed_check``). The per-request
        overheads and neighbour slowdowns are kept."""
        for name, v in (("decode", decode), ("prefill", prefill)):
            if not (v > 0 and v != float("inf")):
                raise ConfigError(f"scaled({name}={v!r}): must be a finite factor > 0")
        return dataclasses.replace(
            self, intercept_s=self.intercept_s * decode,
            per_decode_seq_s=self.per_decode_seq_s * decode,
            per_context_token_s=self.per_context_token_s * decode,
            per_prefill_token_s=self.per_prefill_token_s * prefill,
            per_attention_pair_s=self.per_attention_pair_s * prefill)


def _overheads(table: ProfileTable) -> dict[str, float]:
    out = {}
    for key in (*OVERHEAD_KEYS, *NEIGHBOUR_KEYS, SPIN_KEY):
        raw = table.meta.get(key)
        if raw is None or raw == "":
            continue
        try:
            v = float(raw)
        except ValueError:
            v = -1.0
        if not v >= 0 or v == float("inf"):
            what = "seconds" if key.endswith("_s") else "a fraction"
            raise ConfigError(f"profile {table.model}/{table.gpu}: metadata {key}={raw!r} must "
                              f"be a finite number >= 0 ({what})")
        out[key] = v
    return out


def predictor_for(model: ModelSpec | str, gpu: GPUSpec | str,
                  parallel: ParallelConfig | None = None,
                  profiles_dir: str | Path | None = None, coeffs: Coefficients | None = None,
                  **roofline_kwargs) -> FittedPredictor | RooflinePredictor:
    """The fitted predictor when ``profiles_dir`` holds a table for this model, GPU, TP and
    PP; else the roofline (``roofline_kwargs``: ``interconnect``, ``gpus_per_node``)."""
    parallel = parallel or ParallelConfig()
    if profiles_dir is not None:
        path = find_profile(model, gpu, parallel, profiles_dir)
        if path is not None:
            return FittedPredictor.from_table(read_profile(path))
    return RooflinePredictor(model, gpu, parallel, coeffs, **roofline_kwargs)
