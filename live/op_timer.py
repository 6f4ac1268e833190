"""Time one PyTorch operator the way the operator profiles report it (milliseconds per call).

Used by :mod:`live.op_profile`; needs ``torch`` (run in an interpreter that has it).

On CUDA, ``inner`` back-to-back calls are captured into one CUDA graph and the graph is
replayed ``reps`` times, each replay timed with CUDA events: per-call time = replay time /
``inner``. The graph removes Python's launch cost, as vLLM's CUDA graphs and fused
kernels do, so what is timed is the GPU's own time (kernel runs and the gaps between
them). The calls rotate over ``len(variants)`` copies of the operator's weights, so a
weight matrix smaller than the L2 cache is read from HBM as in a real forward pass (where
each layer's weights are read once per iteration), not from L2. If capture fails the calls
are timed eagerly, and the result says so.

On CPU, each of ``reps`` samples times ``inner`` calls with ``time.perf_counter``.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence

import torch

__all__ = ["L2_FLUSH_BYTES", "OpTiming", "copies_for", "time_op"]

L2_FLUSH_BYTES = 256 * 2**20  # > 4x the 50-60 MB L2 of an H100/H200


class OpTiming:
    """Per-call milliseconds of ``reps`` samples; ``graph``: timed through a CUDA graph."""

    __slots__ = ("graph", "samples_ms")

    def __init__(self, samples_ms: Sequence[float], graph: bool) -> None:
        self.samples_ms = list(samples_ms)
        self.graph = graph

    def stats(self) -> dict[str, float]:
        s = self.samples_ms
        return {"min": min(s), "max": max(s), "mean": statistics.fmean(s),
                "median": statistics.median(s),
                "std": statistics.pstdev(s) if len(s) > 1 else 0.0}


def copies_for(nbytes: float, limit: int) -> int:
    """Weight copies to rotate over so that together they exceed :data:`L2_FLUSH_BYTES`."""
    if nbytes <= 0:
        return 1
    return max(1, min(limit, math.ceil(L2_FLUSH_BYTES / nbytes)))


def time_op(variants: Sequence[Callable[[], object]], device: torch.device, reps: int = 10,
            inner: int = 10, warmup: int = 2) -> OpTiming:
    """Time ``variants`` (the same operator over different weight copies), called in turn."""
    if not variants:
        raise ValueError("time_op needs at least one variant")
    calls = [variants[j % len(variants)] for j in range(inner)]
    if device.type != "cuda":
        for _ in range(warmup):
            for f in calls:
                f()
        samples = []
        for _ in range(reps):
            t0 = time.perf_counter()
            for f in calls:
                f()
            samples.append((time.perf_counter() - t0) * 1e3 / inner)
        return OpTiming(samples, graph=False)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            for f in calls:
                f()
    torch.cuda.current_stream().wait_stream(side)
    torch.cuda.synchronize()
    run: Callable[[], object]
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for f in calls:
                f()
        run, captured = graph.replay, True
    except RuntimeError:
        torch.cuda.synchronize()

        def run() -> None:
            for f in calls:
                f()
        captured = False
    run()
    torch.cuda.synchronize()
    start = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    end = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    for a, b in zip(start, end, strict=True):
        a.record()
        run()
        b.record()
    torch.cuda.synchronize()
    return OpTiming([a.elapsed_time(b) / inner for a, b in zip(start, end, strict=True)],
                    graph=captured)
