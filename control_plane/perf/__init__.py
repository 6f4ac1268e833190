"""Performance model: GPU and model specs, iteration-time predictors (roofline, fitted).

- :mod:`hardware` (``GPUSpec``, ``GPUS``, ``get_gpu``) and :mod:`models` (``ModelSpec``,
  ``MODELS``, ``get_model``, ``from_hf_config``): built-in specs with cited figures.
- :mod:`parallel` (``ParallelConfig``) and :mod:`memory`: weights per GPU, KV capacity.
- :mod:`roofline` (``RooflinePredictor``): roofline with efficiencies, launch costs and
  collective costs fitted to operator profiles: the project's own H100 and H200 ones and
  Vidur's public A100 ones and collectives (:mod:`coefficients`,
  ``data/fitted_coefficients.json``, written by ``sagellm/perf_fit.py``).
- :mod:`profile` (``FittedPredictor``, ``predictor_for``, ``resolve_profile``): measured
  iteration-time tables (with per-request overheads), which replace the roofline where one
  exists for the model/GPU/TP/PP; built-in ones in ``data/profiles`` (``sagellm
  calibrate`` writes them); :mod:`calibration`: their held-out fit report.
"""

from control_plane.perf.base import Batch, IterationPredictor, LinearPredictor
from control_plane.perf.coefficients import Coefficients, load_coefficients
from control_plane.perf.hardware import GPUS, GPUSpec, get_gpu
from control_plane.perf.memory import (
    kv_bytes_per_token_per_gpu,
    kv_capacity_tokens,
    weights_bytes_per_gpu,
)
from control_plane.perf.models import MODELS, ModelSpec, from_hf_config, get_model
from control_plane.perf.parallel import ParallelConfig, check_parallel
from control_plane.perf.pipelined import PipelinedPredictor
from control_plane.perf.profile import (
    FittedPredictor,
    ProfileTable,
    builtin_profiles,
    find_profile,
    predictor_for,
    read_profile,
    resolve_profile,
    write_profile,
)
from control_plane.perf.roofline import RooflinePredictor

__all__ = [
    "GPUS",
    "MODELS",
    "Batch",
    "Coefficients",
    "FittedPredictor",
    "GPUSpec",
    "IterationPredictor",
    "LinearPredictor",
    "ModelSpec",
    "ParallelConfig",
    "PipelinedPredictor",
    "ProfileTable",
    "RooflinePredictor",
    "builtin_profiles",
    "check_parallel",
    "find_profile",
    "from_hf_config",
    "get_gpu",
    "get_model",
    "kv_bytes_per_token_per_gpu",
    "kv_capacity_tokens",
    "load_coefficients",
    "predictor_for",
    "read_profile",
    "resolve_profile",
    "weights_bytes_per_gpu",
    "write_profile",
]
