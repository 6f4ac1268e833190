"""Pipeline-parallel engines run micro-batches concurrently (vLLM's virtual engines).

With ``pp`` stages, vLLM keeps up to ``pp`` batches in flight: while one is in stage 2 the
next is in stage 1. An engine iteration in the simulator advances every running request by
one step; on a ``pp``-stage replica that takes about one full pass of a micro-batch of
``1/pp`` of the batch, because the ``pp`` micro-batches move through the stages together:

    iteration_s(batch) ~= full_pass_s(batch / pp)

At small batches the pass is bound by reading the weights, so this stays the full-pass
latency (a lone request still crosses every stage). At large batches it is compute-bound
and the throughput gain approaches ``pp``. Batch fields are scaled as real numbers; the
wrapped predictor is linear in the decode context, so ``decode_run_s`` stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from control_plane.perf.base import Batch, IterationPredictor

__all__ = ["PipelinedPredictor"]


@dataclass(frozen=True, slots=True)
class PipelinedPredictor:
    """``inner`` predicts one full pass of a pipeline-parallel replica; this one predicts
    an iteration with ``pp`` micro-batches in flight (see the module docstring)."""

    inner: IterationPredictor
    pp: int

    def __post_init__(self) -> None:
        if isinstance(self.pp, bool) or not isinstance(self.pp, int) or self.pp < 1:
            raise ValueError(f"PipelinedPredictor.pp={self.pp!r}: must be an integer >= 1")

    def iteration_s(self, batch: Batch) -> float:
        k = self.pp
        if k == 1:
            return self.inner.iteration_s(batch)
        return self.inner.iteration_s(Batch(batch.prefill_tokens / k,
                                            batch.prefill_attention / k,
                                            batch.decode_seqs / k, batch.decode_context / k))

    def decode_run_s(self, decode_seqs: int, decode_context: int, steps: int) -> float:
        k = self.pp
        return self.inner.decode_run_s(decode_seqs / k, decode_context / k, steps)
