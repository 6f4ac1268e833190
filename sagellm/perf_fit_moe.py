"""The MoE block from the project's own MoE profiles: the fit of the grouped expert
matmuls (``moe_gemm``) and the errors of ``RooflinePredictor.moe_parts``.

``control_plane/perf/data/gpu_profiles/<gpu>/moe__<gpu>__<org>__<model>.csv.gz``
(``live/op_profile.py --parts moe``, kernels in ``live/op_moe.py``) hold, per (tokens, TP),
the MoE block's ops: ``moe_gate``, ``moe_route``, ``moe_up``, ``moe_act``, ``moe_down``,
``moe_combine`` and the whole block ``moe``.

Fit: the four ``gemm`` fields (``eff_compute``, ``eff_mem``, ``launch_s``, ``smooth_p``) on
the ``moe_up`` and ``moe_down`` rows of :data:`MOE_TRAIN_MODELS`, with the predictor's own
formula (``ops.gemm_s`` over the ``T * k`` routed rows, reading the expected number of
experts hit), minimising the mean squared log ratio predicted/measured. The other models
(Qwen3-30B-A3B: 128 narrow experts against Mixtral's 8 wide ones) are held out.

Errors (per GPU and split): ``moe_gemm``, each grouped matmul; ``moe_experts``, the block's
router, grouped matmuls and activation together against the same four measured ops. The
profiles' ``moe_route`` and ``moe_combine`` are PyTorch's sort, gather and scatter, copies
that vLLM's fused-MoE kernels do not make, so they are not compared with the predictor's
``route`` and ``combine``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from control_plane.perf.coefficients import Coefficients, GemmCoeffs
from control_plane.perf.hardware import get_gpu
from control_plane.perf.models import get_model
from control_plane.perf.ops import experts_hit, gemm_s
from control_plane.perf.parallel import ParallelConfig
from control_plane.perf.roofline import RooflinePredictor
from sagellm.perf_fit_math import error_stats, minimise, round6
from sagellm.perf_fit_measured import by_split, priced_gpus

__all__ = ["MOE_FROM", "MOE_GROUPS", "MOE_TRAIN_MODELS", "fit_moe_gemm", "moe_errors"]

MOE_TRAIN_MODELS = ("Mixtral-8x7B-v0.1",)
# the H100 and H200 have the same GH100 chip (132 SMs); the efficiencies are fractions of
# each GPU's own peaks, so the H100 uses the H200's until it is profiled itself
MOE_FROM = {"h100": "h200"}
MOE_GROUPS = ("moe_gemm", "moe_experts")
EXPERT_OPS = ("moe_gate", "moe_up", "moe_act", "moe_down")


def _gemm_rows(d: pd.DataFrame):
    """(routed rows, K, N, experts hit, seconds) of the up and down matmuls of ``d``."""
    m = get_model(str(d.model.iloc[0]))
    tokens = d.num_tokens.to_numpy(float)
    width = m.intermediate / d.num_tensor_parallel_workers.to_numpy(float)
    routed = tokens * m.experts_per_token
    hit = experts_hit(m.n_experts, m.experts_per_token / m.n_experts, tokens)
    hidden = np.full(len(d), float(m.hidden))
    return (np.concatenate([routed, routed]), np.concatenate([hidden, width]),
            np.concatenate([2 * width, hidden]), np.concatenate([hit, hit]),
            np.concatenate([d["time_stats.moe_up.median"], d["time_stats.moe_down.median"]])
            * 1e-3)


def fit_moe_gemm(frames: list[pd.DataFrame], gpu_name: str) -> dict:
    """``moe_gemm`` coefficients of one family from its train models' MoE rows."""
    gpu = get_gpu(gpu_name)
    R, K, N, H, Y = (np.concatenate(a) for a in zip(*(_gemm_rows(d) for d in frames),
                                                    strict=True))

    def loss(x):
        c = GemmCoeffs(*np.exp(x))
        return float(np.mean(np.log(gemm_s(R, K, N, gpu, c, copies=H) / Y) ** 2))

    ec, em, launch, p = minimise(loss, [0.7, 0.6, 1e-5, 2.0])
    return {"eff_compute": round6(ec), "eff_mem": round6(em), "launch_s": round6(launch),
            "smooth_p": round6(p)}


def moe_errors(coeffs: Coefficients, rows, train_models=MOE_TRAIN_MODELS,
               coeff_family: str | None = None) -> list[dict]:
    """Errors of ``RooflinePredictor.moe_parts`` on the MoE rows (groups
    :data:`MOE_GROUPS`) per GPU and split; ``coeff_family`` prices the GPU with another
    family's coefficients."""
    out = []
    for fam, gpu in priced_gpus(rows, coeff_family):
        for split, models, sel in by_split(rows, fam, train_models):
            rel: dict[str, list[float]] = {g: [] for g in MOE_GROUPS}
            for _g, _name, d in sel:
                for tp, grp in d.groupby("num_tensor_parallel_workers"):
                    pred = RooflinePredictor(get_model(str(grp.model.iloc[0])), gpu,
                                             ParallelConfig(tp=int(tp)), coeffs)
                    for row in grp.to_dict("records"):
                        parts = pred.moe_parts(int(row["num_tokens"]))
                        meas = {op: row[f"time_stats.{op}.median"] * 1e-3 for op in EXPERT_OPS}
                        rel["moe_gemm"] += [parts["up"] / meas["moe_up"] - 1,
                                            parts["down"] / meas["moe_down"] - 1]
                        priced = sum(parts[k] for k in ("router", "up", "act", "down"))
                        rel["moe_experts"].append(priced / sum(meas.values()) - 1)
            for group, vals in rel.items():
                out.append({"gpu": fam, "coeffs": coeff_family or fam, "group": group,
                            "split": split, "models": models} | error_stats(np.asarray(vals)))
    return out
