"""Performance model: GPU and model specs, iteration-time predictors (roofline, fitted)."""

from control_plane.perf.base import Batch, IterationPredictor, LinearPredictor

__all__ = ["Batch", "IterationPredictor", "LinearPredictor"]
