"""Built-in GPU specs: dense bf16 peak, HBM bandwidth, memory, interconnect.

Figures are NVIDIA's public datasheet numbers (dense, i.e. without 2:4 sparsity; SI units:
1 TB/s = 1e12 bytes/s, 1 GB = 1e9 bytes). Link bandwidths are stored **per direction per
GPU**: the datasheets quote NVLink and PCIe as bidirectional totals, so they are halved here.

- H100 SXM5 80 GB (NVIDIA H100 Tensor Core GPU datasheet): bf16 1,979 TFLOPS with sparsity
  -> 989.5 TFLOPS dense; HBM3 3.35 TB/s; 80 GB; NVLink 4 900 GB/s; PCIe Gen5 128 GB/s.
- H200 SXM 141 GB (NVIDIA H200 datasheet): same GH100 compute as H100 (989.5 TFLOPS dense);
  HBM3e 4.8 TB/s; 141 GB; NVLink 900 GB/s; PCIe Gen5 128 GB/s.
- A100 80 GB SXM (NVIDIA A100 datasheet): bf16 312 TFLOPS dense (624 sparse); HBM2e
  2,039 GB/s; 80 GB; NVLink 3 600 GB/s; PCIe Gen4 64 GB/s.
- L40S 48 GB (NVIDIA L40S datasheet): bf16 362.05 TFLOPS dense (733 with sparsity); GDDR6
  864 GB/s; 48 GB; no NVLink; PCIe Gen4 x16 64 GB/s.

``price_per_hour_usd`` is an illustrative on-demand cloud rate per GPU-hour (order of
magnitude, 2025), not a quote: cost studies should set their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.errors import ConfigError, ValidationError

__all__ = ["GPUS", "GPUSpec", "get_gpu"]


@dataclass(frozen=True, slots=True)
class GPUSpec:
    """One accelerator. ``bf16_flops``: dense peak FLOP/s; ``hbm_bytes_per_s``: memory
    bandwidth; ``memory_bytes``: device memory; ``nvlink_bytes_per_s`` and
    ``pcie_bytes_per_s``: per direction per GPU (0 = no NVLink); ``family``: the profiled
    GPU whose fitted efficiencies this one borrows (see ``coefficients``)."""

    name: str
    bf16_flops: float
    hbm_bytes_per_s: float
    memory_bytes: float
    nvlink_bytes_per_s: float
    pcie_bytes_per_s: float
    price_per_hour_usd: float = 0.0
    family: str = ""

    def __post_init__(self) -> None:
        for f in ("bf16_flops", "hbm_bytes_per_s", "memory_bytes", "pcie_bytes_per_s"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValidationError("GPUSpec", f, v, "must be a number > 0")
        for f in ("nvlink_bytes_per_s", "price_per_hour_usd"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise ValidationError("GPUSpec", f, v, "must be a number >= 0")

    @property
    def has_nvlink(self) -> bool:
        return self.nvlink_bytes_per_s > 0

    @property
    def ridge_flops_per_byte(self) -> float:
        """Arithmetic intensity (FLOP/byte) above which a kernel is compute bound."""
        return self.bf16_flops / self.hbm_bytes_per_s


GPUS: dict[str, GPUSpec] = {
    "h100": GPUSpec("h100", 989.5e12, 3.35e12, 80e9, 450e9, 64e9, 3.0, "h100"),
    "h200": GPUSpec("h200", 989.5e12, 4.8e12, 141e9, 450e9, 64e9, 3.8, "h200"),
    "a100": GPUSpec("a100", 312e12, 2.039e12, 80e9, 300e9, 32e9, 1.8, "a100"),
    "l40s": GPUSpec("l40s", 362.05e12, 864e9, 48e9, 0.0, 32e9, 1.0, "a100"),
}

_ALIASES = {
    "h100-sxm": "h100", "h100-sxm5": "h100", "h100-80gb": "h100", "h100_sxm": "h100",
    "h200-sxm": "h200", "h200-141gb": "h200",
    "a100-80gb": "a100", "a100-sxm": "a100", "a100-sxm4-80gb": "a100", "a100_80gb": "a100",
    "l40s-48gb": "l40s",
}


def get_gpu(name: str | GPUSpec) -> GPUSpec:
    """The built-in spec for ``name`` (case-insensitive; aliases such as ``"H100"``,
    ``"h100-sxm"``, ``"a100-80gb"``). A GPUSpec is returned unchanged."""
    if isinstance(name, GPUSpec):
        return name
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in GPUS:
        known = ", ".join(sorted(GPUS)) + "; aliases " + ", ".join(sorted(_ALIASES))
        raise ConfigError(f"unknown GPU {name!r}: known GPUs are {known}")
    return GPUS[key]
