"""Requests in: trace readers, seeded generators and transformations, all as columnar Traces.

``arrivals`` (Poisson, Gamma with a target CV, Weibull, rate curves) and ``transform``
(rate scaling, windows, sampling, clipping, rule-based classes) are exported as modules:
their function names are short. Everything else is importable from here.
"""

from workloads import arrivals, transform
from workloads.describe import TraceStats, describe, describe_lengths, ideal_prefix_reuse
from workloads.errors import TraceFormatError
from workloads.lengths import (
    DEFAULT_LENGTHS,
    Empirical,
    Fixed,
    LengthDist,
    LengthModel,
    LogNormal,
    Pmf,
    Uniform,
)
from workloads.mix import TenantClass, assign_classes, mix
from workloads.prefix_gen import few_shot_templates, multi_turn_sessions, shared_system_prompts
from workloads.rate_curves import RateCurve
from workloads.readers import LengthTable, detect_format, read_trace
from workloads.servegen import (
    ClientWindows,
    aggregate_rate_curve,
    read_client_windows,
    servegen_trace,
)
from workloads.servegen_files import LengthPmfs, read_length_pmf
from workloads.synthetic import DEFAULT_CLASSES, RequestClass, poisson_mix, poisson_mix_trace
from workloads.trace import Trace

__all__ = [
    "DEFAULT_CLASSES",
    "DEFAULT_LENGTHS",
    "ClientWindows",
    "Empirical",
    "Fixed",
    "LengthDist",
    "LengthModel",
    "LengthPmfs",
    "LengthTable",
    "LogNormal",
    "Pmf",
    "RateCurve",
    "RequestClass",
    "TenantClass",
    "Trace",
    "TraceFormatError",
    "TraceStats",
    "Uniform",
    "aggregate_rate_curve",
    "arrivals",
    "assign_classes",
    "describe",
    "describe_lengths",
    "detect_format",
    "few_shot_templates",
    "ideal_prefix_reuse",
    "mix",
    "multi_turn_sessions",
    "poisson_mix",
    "poisson_mix_trace",
    "read_client_windows",
    "read_length_pmf",
    "read_trace",
    "servegen_trace",
    "shared_system_prompts",
    "transform",
]
