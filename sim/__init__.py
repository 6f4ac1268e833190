"""Simulated cluster: SimPy drivers that run the control plane in simulated time."""

from sim.driver import SimConfig, SimResult, simulate
from sim.request_level import RequestLevelModel

__all__ = ["RequestLevelModel", "SimConfig", "SimResult", "simulate"]
