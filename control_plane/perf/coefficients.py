"""Fitted efficiency and overhead coefficients of the roofline, loaded from JSON.

The built-in file ``data/fitted_coefficients.json`` is written by ``sagellm/perf_fit.py``
from Vidur's public operator profiles (the A100's) and the project's own H100/H200 profiles
(``data/gpu_profiles``; its ``source`` field cites both; a GPU the project profiled is fitted
on its own files alone). Coefficients are kept per
*family*, a profiled GPU; other GPUs borrow a family's coefficients through
``GPUSpec.family`` (L40S -> a100: unvalidated assumption) and apply them to their own peak
FLOP/s and bandwidths. The H200 was priced with the h100 family's until it was profiled:
that put its whole-layer times 9-12 % off (median; its own fit: 4-6 %).

Per family:

- ``gemm``: ``eff_compute``, ``eff_mem`` (fractions of peak FLOP/s and HBM bandwidth),
  ``launch_s`` (fixed cost per kernel), ``smooth_p`` (the exponent of the smooth maximum
  of the compute and memory times, see ``ops.gemm_s``).
- ``elementwise``: per op ``launch_s`` and ``eff_mem`` (bandwidth fraction on the
  nominal bytes of ``ops.ELEMENTWISE_BYTES``).
- ``all_reduce``: per link kind (``nvlink``, ``pcie``) and GPU count: ``alpha_s`` and
  ``eff`` (bus bandwidth as a fraction of the GPU's per-direction link bandwidth).
- ``send_recv``: ``nvlink`` (``alpha_s``, ``eff``) within a node; ``inter_node``
  (``alpha_s``, ``bytes_per_s``) between nodes.
- ``attention`` (only families with an attention profile; the others price attention with
  the matmul coefficients): ``prefill`` (``launch_s``, ``eff_compute``, ``per_token_s``:
  ``launch_s + flops / (P * eff_compute) + per_token_s * tokens``) and ``decode``
  (``launch_s``, ``eff_mem``: ``launch_s + kv_bytes / (W * eff_mem)``). The KV-cache write
  is then the element-wise op ``attn_kv_cache_save``.
- ``network_from`` (optional): the family whose collectives were copied, for a GPU
  profiled alone (one GPU has no all-reduce to measure).
- ``moe_gemm`` (optional, the ``gemm`` fields): the grouped expert matmuls of a MoE block,
  fitted on MoE profiles (``moe__*``); much less efficient than a dense matmul of the same
  bytes at small token counts. ``moe_from`` names the family they were copied from; a
  family without them prices the experts with ``gemm``.

Top level: ``per_iteration_overhead_s`` (CPU-side scheduling, input preparation, sampling;
NOT in the operator profiles, an assumption until calibrated), ``attention_causal_factor``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from control_plane.errors import ConfigError
from control_plane.perf.hardware import GPUSpec

__all__ = ["BUILTIN_COEFFICIENTS", "AttentionCoeffs", "Coefficients", "ElementwiseCoeffs",
           "FamilyCoeffs", "GemmCoeffs", "LinkCoeffs", "load_coefficients"]

BUILTIN_COEFFICIENTS = Path(__file__).resolve().parent / "data" / "fitted_coefficients.json"


@dataclass(frozen=True, slots=True)
class GemmCoeffs:
    eff_compute: float
    eff_mem: float
    launch_s: float
    smooth_p: float


@dataclass(frozen=True, slots=True)
class ElementwiseCoeffs:
    launch_s: float
    eff_mem: float


@dataclass(frozen=True, slots=True)
class LinkCoeffs:
    """``alpha_s + bytes_on_wire / bandwidth``; bandwidth = ``eff`` x the GPU's link
    bandwidth, or ``bytes_per_s`` when given (inter-node links are not in GPUSpec)."""

    alpha_s: float
    eff: float = 0.0
    bytes_per_s: float = 0.0


@dataclass(frozen=True, slots=True)
class AttentionCoeffs:
    """Fitted flash-attention kernels: prefill ``prefill_launch_s + flops / (P *
    prefill_eff_compute) + prefill_per_token_s * tokens``; decode ``decode_launch_s +
    kv_bytes / (W * decode_eff_mem)``."""

    prefill_launch_s: float
    prefill_eff_compute: float
    prefill_per_token_s: float
    decode_launch_s: float
    decode_eff_mem: float

    @classmethod
    def from_dict(cls, d: dict) -> AttentionCoeffs:
        p, dec = d["prefill"], d["decode"]
        return cls(float(p["launch_s"]), float(p["eff_compute"]), float(p["per_token_s"]),
                   float(dec["launch_s"]), float(dec["eff_mem"]))


@dataclass(frozen=True, slots=True)
class FamilyCoeffs:
    family: str
    gemm: GemmCoeffs
    elementwise: dict[str, ElementwiseCoeffs]
    all_reduce: dict[str, dict[int, LinkCoeffs]]
    send_recv: dict[str, LinkCoeffs]
    attention: AttentionCoeffs | None = None
    moe_gemm: GemmCoeffs | None = None  # grouped expert matmuls (MoE); None: ``gemm``

    def all_reduce_link(self, kind: str, n: int) -> LinkCoeffs:
        """Coefficients for an ``n``-GPU all-reduce over ``kind``: the fitted GPU count
        nearest to ``n`` (log scale; ties go to the larger count)."""
        table = self.all_reduce.get(kind)
        if not table:
            raise ConfigError(f"family {self.family!r} has no all_reduce fit for {kind!r}")
        best = min(table, key=lambda m: (abs(math.log(m / n)), -m))
        return table[best]


@dataclass(frozen=True, slots=True)
class Coefficients:
    families: dict[str, FamilyCoeffs]
    per_iteration_overhead_s: float
    attention_causal_factor: float
    source: str = ""
    errors: dict | None = None

    def for_gpu(self, gpu: GPUSpec) -> FamilyCoeffs:
        key = gpu.family or gpu.name
        if key not in self.families:
            raise ConfigError(f"no fitted coefficients for GPU {gpu.name!r} (family {key!r}); "
                              f"fitted families: {', '.join(sorted(self.families))}")
        return self.families[key]

    @classmethod
    def from_dict(cls, d: dict, source: str = "coefficients") -> Coefficients:
        try:
            fams = {}
            for name, f in d["families"].items():
                fams[name] = FamilyCoeffs(
                    family=name,
                    gemm=GemmCoeffs(**f["gemm"]),
                    elementwise={op: ElementwiseCoeffs(**c) for op, c in f["elementwise"].items()},
                    all_reduce={kind: {int(n): LinkCoeffs(**c) for n, c in tab.items()}
                                for kind, tab in f["all_reduce"].items()},
                    send_recv={kind: LinkCoeffs(**c) for kind, c in f["send_recv"].items()},
                    attention=(AttentionCoeffs.from_dict(f["attention"])
                               if "attention" in f else None),
                    moe_gemm=GemmCoeffs(**f["moe_gemm"]) if "moe_gemm" in f else None,
                )
            return cls(families=fams,
                       per_iteration_overhead_s=float(d["per_iteration_overhead_s"]),
                       attention_causal_factor=float(d["attention_causal_factor"]),
                       source=str(d.get("source", "")), errors=d.get("errors"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: bad coefficients ({type(exc).__name__}: {exc})") from exc


def load_coefficients(path: str | Path | None = None) -> Coefficients:
    """Read coefficients from ``path`` (default: the built-in fitted file)."""
    p = Path(path) if path is not None else BUILTIN_COEFFICIENTS
    try:
        d = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read coefficients: {exc}") from exc
    return Coefficients.from_dict(d, source=str(p))
