"""Operator profiles measured with the project's own tooling (``live/op_profile.py``): their
loading, the attention fit, and the attention and whole-layer errors.

``control_plane/perf/data/gpu_profiles/<gpu>/`` holds, per model:

- ``mlp__<gpu>__<org>__<model>.csv.gz``: Vidur's column format, fitted by
  :func:`sagellm.perf_fit.fit` exactly like Vidur's own files;
- ``attention__...``: flash-attention prefill rows (``is_prefill`` 1, a fresh prompt of
  ``prefill_chunk_size`` tokens) and decode rows (``batch_size`` sequences at
  ``kv_cache_size`` context tokens each), with ``attn_kv_cache_save`` on both;
- ``layer__...``: one whole decoder layer for a batch (``prefill_tokens``, ``decode_seqs``,
  ``decode_context`` per sequence), compared with ``RooflinePredictor.layer_s``.

The attention fit minimises the mean squared log ratio predicted/measured over the train
models' rows, with the formulas of ``RooflinePredictor.attention_parts`` (prefill
``launch + flops / (P * eff) + per_token * tokens`` with ``flops = 4 * hq * d *
causal_factor * tokens**2``; decode ``launch + 2 * kvg * d * b * context / (W * eff)``;
KV write ``launch + 4 * kvg * d * b * tokens / (W * eff)``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from control_plane.errors import ConfigError
from control_plane.perf.base import Batch
from control_plane.perf.coefficients import Coefficients
from control_plane.perf.hardware import get_gpu
from control_plane.perf.models import ModelSpec, get_model
from control_plane.perf.parallel import ParallelConfig
from control_plane.perf.roofline import RooflinePredictor
from sagellm.perf_fit_math import error_stats, minimise, round6

__all__ = ["MEASURED_PROFILES", "attention_errors", "by_split", "fit_attention",
           "gpu_and_model", "layer_errors", "load_kind", "measured_families", "priced_gpus",
           "skipped_folders"]

MEASURED_PROFILES = Path(__file__).resolve().parents[1] / "control_plane" / "perf" / "data" \
    / "gpu_profiles"


def measured_families(root: Path = MEASURED_PROFILES) -> list[str]:
    """The folders of ``root`` named after a built-in GPU (``h200``, ...): those are
    fitted; others (``h200-eager``: kept for reference) are not."""
    return [name for name, why in _folders(root) if why is None]


def skipped_folders(root: Path = MEASURED_PROFILES) -> list[tuple[str, str]]:
    """(folder, why) for each folder of ``root`` that holds profiles but is not fitted."""
    return [(name, why) for name, why in _folders(root)
            if why is not None and any((root / name).glob("*__*.csv*"))]


def _folders(root: Path) -> list[tuple[str, str | None]]:
    if not root.is_dir():
        return []
    out = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            known = get_gpu(d.name).name == d.name
        except ConfigError:
            known = False
        out.append((d.name, None if known else
                    "not named after a built-in GPU (control_plane/perf/hardware.py GPUS: "
                    "add its GPUSpec to fit it)"))
    return out


def gpu_and_model(path: Path) -> tuple[str, str]:
    """(gpu, model) of a profile file named ``<kind>__<gpu>__<org>__<model>.csv.gz`` (the
    naming of Vidur's files and of ``live/op_profile.py``'s)."""
    _, gpu, _org, name = path.name[: -len(".csv.gz")].split("__")
    return gpu, name


def load_kind(root: Path, kind: str) -> list[tuple[str, str, pd.DataFrame]]:
    """(gpu, model name as in the file name, rows) of every ``<kind>__*.csv.gz`` of the
    fitted families under ``root``."""
    return [(*gpu_and_model(f), pd.read_csv(f)) for fam in measured_families(root)
            for f in sorted((root / fam).glob(f"{kind}__*.csv.gz"))]


def by_split(rows, fam: str, train_models):
    """(split, model names, rows) for ``train`` and ``held_out`` (each that has rows) of the
    GPU ``fam``; ``rows`` are tuples beginning (gpu, model name, ...)."""
    for split in ("train", "held_out"):
        sel = [r for r in rows if r[0] == fam and (r[1] in train_models) == (split == "train")]
        if sel:
            yield split, [r[1] for r in sel], sel


def priced_gpus(rows, coeff_family: str | None = None):
    """(family, GPUSpec to price it with) for each GPU of ``rows`` (tuples beginning
    (gpu, ...)), in name order; ``coeff_family`` makes each GPU borrow that family's
    coefficients (the borrowing the predictor did before the GPU was profiled)."""
    for fam in sorted({g for g, *_ in rows}):
        gpu = get_gpu(fam)
        if coeff_family is not None:
            gpu = dataclasses.replace(gpu, family=coeff_family)
        yield fam, gpu


def _spec(key: tuple[int, ...]) -> ModelSpec:
    """A one-layer ModelSpec from an attention row's shape (hidden, heads, kv heads)."""
    h, hq, kv = key[:3]
    return ModelSpec("attention", 1, h, hq, kv, h // hq, 4 * h, 32000)


def _arrays(d: pd.DataFrame, factor: float):
    tp = d.num_tensor_parallel_workers.to_numpy()
    hq = d.n_q_head.to_numpy() // tp
    kvg = np.maximum(1, d.n_kv_head.to_numpy() // tp)
    hd = (d.n_embd // d.n_q_head).to_numpy()
    pf = d.is_prefill.to_numpy() == 1
    c = d.prefill_chunk_size.to_numpy(float)
    bsz, ctx = d.batch_size.to_numpy(float), d.kv_cache_size.to_numpy(float)
    return {"pf": pf, "tokens": np.where(pf, c, bsz),
            "flops": 4.0 * hq * hd * factor * c * c,
            "kv_bytes": 2.0 * kvg * hd * 2 * bsz * ctx,
            "save_bytes": 4.0 * kvg * hd * 2 * np.where(pf, c, bsz)}


def fit_attention(frames: list[pd.DataFrame], gpu_name: str, factor: float) -> dict:
    """``attention`` coefficients and the ``attn_kv_cache_save`` element-wise op of one
    family from its train models' attention rows."""
    gpu = get_gpu(gpu_name)
    d = pd.concat(frames, ignore_index=True)
    a = _arrays(d, factor)
    pf = a["pf"]
    y_pf = d["time_stats.attn_prefill.median"].to_numpy()[pf] * 1e-3
    y_dec = d["time_stats.attn_decode.median"].to_numpy()[~pf] * 1e-3
    y_save = d["time_stats.attn_kv_cache_save.median"].to_numpy() * 1e-3
    P, W = gpu.bf16_flops, gpu.hbm_bytes_per_s
    flops, tok = a["flops"][pf], a["tokens"][pf]
    kv, save = a["kv_bytes"][~pf], a["save_bytes"]

    def loss(pred, y):
        return float(np.mean(np.log(pred / y) ** 2))

    la, eff, per_tok = minimise(
        lambda x: loss(np.exp(x[0]) + flops / (P * np.exp(x[1])) + np.exp(x[2]) * tok, y_pf),
        [5e-6, 0.6, 1e-9])
    dla, deff = minimise(lambda x: loss(np.exp(x[0]) + kv / (W * np.exp(x[1])), y_dec),
                         [5e-6, 0.9])
    sla, seff = minimise(lambda x: loss(np.exp(x[0]) + save / (W * np.exp(x[1])), y_save),
                         [2e-6, 0.5])
    r = round6
    return {"attention": {"prefill": {"launch_s": r(la), "eff_compute": r(eff),
                                      "per_token_s": r(per_tok)},
                          "decode": {"launch_s": r(dla), "eff_mem": r(deff)}},
            "attn_kv_cache_save": {"launch_s": r(sla), "eff_mem": r(seff)}}


def attention_errors(coeffs: Coefficients, rows, train_models) -> list[dict]:
    """Errors of ``RooflinePredictor.attention_parts`` on every attention row: groups
    ``attn_prefill``, ``attn_decode``, ``attn_kv_cache_save`` per GPU and split."""
    out = []
    for fam in sorted({g for g, *_ in rows}):
        for split, models, sel in by_split(rows, fam, train_models):
            rel: dict[str, list[float]] = {"attn_prefill": [], "attn_decode": [],
                                           "attn_kv_cache_save": []}
            for _g, _name, d in sel:
                preds: dict[tuple, RooflinePredictor] = {}
                for row in d.to_dict("records"):
                    tp = int(row["num_tensor_parallel_workers"])
                    key = (int(row["n_embd"]), int(row["n_q_head"]), int(row["n_kv_head"]), tp)
                    if key not in preds:
                        preds[key] = RooflinePredictor(_spec(key), fam, ParallelConfig(tp=tp),
                                                       coeffs)
                    if row["is_prefill"] == 1:
                        c = int(row["prefill_chunk_size"])
                        batch, op = Batch(prefill_tokens=c, prefill_attention=c * c), "prefill"
                    else:
                        b = int(row["batch_size"])
                        batch = Batch(decode_seqs=b, decode_context=b * int(row["kv_cache_size"]))
                        op = "decode"
                    parts = preds[key].attention_parts(batch)
                    for part in (op, "kv_cache_save"):
                        meas = row[f"time_stats.attn_{part}.median"] * 1e-3
                        rel[f"attn_{part}"].append(parts[part] / meas - 1)
            for group, vals in rel.items():
                out.append({"gpu": fam, "coeffs": fam, "group": group, "split": split,
                            "models": models} | error_stats(np.asarray(vals)))
    return out


def layer_errors(coeffs: Coefficients, rows, train_models,
                 coeff_family: str | None = None) -> list[dict]:
    """Errors of ``RooflinePredictor.layer_s`` on the whole-layer rows, per GPU and split;
    ``coeff_family`` prices the GPU with another family's coefficients (the borrowing the
    predictor did before the GPU was profiled)."""
    out = []
    for fam, gpu in priced_gpus(rows, coeff_family):
        for split, models, sel in by_split(rows, fam, train_models):
            rel = []
            for _g, _name, d in sel:
                for row in d.to_dict("records"):
                    par = ParallelConfig(tp=int(row["num_tensor_parallel_workers"]))
                    pred = RooflinePredictor(get_model(row["model"]), gpu, par, coeffs)
                    p, s = int(row["prefill_tokens"]), int(row["decode_seqs"])
                    batch = Batch(prefill_tokens=p, prefill_attention=p * p, decode_seqs=s,
                                  decode_context=s * int(row["decode_context"]))
                    rel.append(pred.layer_s(batch) / (row["time_stats.layer.median"] * 1e-3) - 1)
            out.append({"gpu": fam, "coeffs": coeff_family or fam, "group": "layer",
                        "split": split, "models": models} | error_stats(np.asarray(rel)))
    return out
