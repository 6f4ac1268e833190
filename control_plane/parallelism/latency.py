"""TPOT and TTFT of one replica under continuous batching, from an iteration predictor.

Notation (one replica): ``B`` running sequences, ``pp`` stages, E[P], E[P^2], E[O] the
workload's prompt / output moments (tokens), ``N`` = ``max_num_batched_tokens``.

**Pipeline stages.** vLLM keeps up to ``pp`` micro-batches in flight: ``m = min(pp, B)``
micro-batches of ``b = ceil(B / m)`` sequences. From the roofline's breakdown of one
micro-batch's iteration, ``body`` = layer matmuls + attention + TP all-reduces (all layers),
the embedding sits on the first stage and the LM head on the last::

    stage_max  = body / pp + max(embedding, lm_head)       (pp > 1; body + both if pp = 1)
    stage_mean = (body + embedding + lm_head) / pp
    cycle      = overhead + pp * stage_max + pp_sends                         (seconds)

``cycle`` is the time between two tokens of one sequence: its micro-batch must pass every
stage (the slowest sets the pace, as the others wait on it), plus the CPU step overhead and
the ``pp - 1`` activation sends. For ``pp = 1`` it is exactly ``iteration_s``.

    imbalance = stage_max / stage_mean          (>= 1; 1 = perfectly balanced stages)
    bubble    = 1 - m * stage_mean / (pp * stage_max)
              = fraction of stage-time idle (fewer micro-batches than stages, imbalance)

**TPOT with piggybacked prefill** (chunked prefill shares iterations with decodes). In
steady state each micro-batch admits ``a = b / E[O]`` new prompts per cycle, i.e. needs
``x = a * E[P]`` prefill tokens per cycle, with room ``c = N - b`` per iteration. It is
sustainable only if ``x <= c``. Prefill runs in iterations of ``s = min(max(E[P], x), c)``
tokens (a whole prompt, or more when several arrive per cycle), a fraction ``f = x / s`` of
the cycles::

    TPOT = (1 - f) * cycle(decode b) + f * cycle(decode b + prefill s)

with decode context ``b * (E[P] + E[O] / 2)`` and prefill attention ``s * E[P^2] / E[P]``
(query-key pairs). TPOT is the mean gap between a request's tokens, which is what a
request's TPOT measures.

**TTFT** of a prompt of ``P`` tokens arriving at operating batch ``B``: it waits for the
cycle in flight (up to one TPOT), then is prefilled in ``ceil(P / c)`` chunks of ``c``
tokens, one per cycle, alongside the micro-batch's ``b`` decodes (chunk ``j`` attends to
the ``j * c`` tokens before it)::

    TTFT = TPOT(B) + sum_j cycle(decode b + chunk_j)

Queueing behind other prompts is not modelled (the simulator confirmation measures it).
"""

from __future__ import annotations

import math

from control_plane.perf.base import Batch, IterationPredictor
from control_plane.perf.parallel import ParallelConfig

__all__ = ["ReplicaLatency", "StageSplit"]


class StageSplit:
    """Per-micro-batch pipeline timing: ``overhead``, ``stage_max``, ``stage_mean``,
    ``sends`` (seconds) and ``cycle = overhead + pp * stage_max + sends``."""

    __slots__ = ("cycle", "overhead", "sends", "stage_max", "stage_mean")

    def __init__(self, overhead: float, stage_max: float, stage_mean: float, sends: float,
                 pp: int) -> None:
        self.overhead, self.stage_max, self.stage_mean, self.sends = (
            overhead, stage_max, stage_mean, sends)
        self.cycle = overhead + pp * stage_max + sends


class ReplicaLatency:
    """TPOT / TTFT model of one replica (see the module docstring for the formulas)."""

    def __init__(self, predictor: IterationPredictor, parallel: ParallelConfig,
                 prompt_mean: float, prompt_sq_mean: float, output_mean: float,
                 max_num_batched_tokens: int = 8192) -> None:
        self.predictor = predictor
        self.pp = parallel.pp
        self.prompt_mean = prompt_mean
        self.pairs_per_prompt_token = prompt_sq_mean / prompt_mean
        self.output_mean = output_mean
        self.context_mean = prompt_mean + output_mean / 2
        self.budget = max_num_batched_tokens
        self._has_breakdown = hasattr(predictor, "breakdown")

    # -- pipeline ------------------------------------------------------------------------
    def split(self, batch: Batch) -> StageSplit:
        pp = self.pp
        if self._has_breakdown:
            d = self.predictor.breakdown(batch)  # type: ignore[attr-defined]
            overhead, sends = d.get("overhead", 0.0), d.get("pp_comm", 0.0)
            emb, lm = d.get("embedding", 0.0), d.get("lm_head", 0.0)
            body = sum(d.values()) - overhead - sends - emb - lm
        else:  # no components known: even stages, everything in the body
            overhead = sends = emb = lm = 0.0
            body = self.predictor.iteration_s(batch)
        total = body + emb + lm
        stage_max = total if pp == 1 else body / pp + max(emb, lm)
        return StageSplit(overhead, stage_max, total / pp, sends, pp)

    def micro_batches(self, batch: int) -> tuple[int, int]:
        """(m, b): micro-batches in flight and sequences in the largest one."""
        m = max(1, min(self.pp, batch))
        return m, math.ceil(batch / m)

    def _batch(self, b: int, prefill: int = 0, attention: float | None = None) -> Batch:
        if attention is None:
            attention = prefill * self.pairs_per_prompt_token
        return Batch(prefill_tokens=int(prefill), prefill_attention=round(attention),
                     decode_seqs=b, decode_context=round(b * self.context_mean))

    # -- steady state --------------------------------------------------------------------
    def prefill_per_cycle(self, batch: int) -> tuple[float, float]:
        """(x, c): prefill tokens a micro-batch needs per cycle and its room per iteration."""
        _, b = self.micro_batches(batch)
        return b * self.prompt_mean / self.output_mean, float(self.budget - b)

    def sustainable(self, batch: int) -> bool:
        x, c = self.prefill_per_cycle(batch)
        return c >= 1 and x <= c

    def tpot_s(self, batch: int) -> float:
        """Mean seconds between a sequence's tokens at ``batch`` running sequences (the
        prefill share is capped at the room ``c`` when unsustainable)."""
        _, b = self.micro_batches(batch)
        x, c = self.prefill_per_cycle(batch)
        c = max(c, 1.0)
        s = min(max(self.prompt_mean, x), c)
        f = min(1.0, x / s)
        plain = self.split(self._batch(b)).cycle
        mixed = self.split(self._batch(b, round(s))).cycle
        return (1.0 - f) * plain + f * mixed

    def ttft_s(self, prompt_tokens: float, batch: int) -> float:
        """Seconds to the first token of a ``prompt_tokens`` prompt at ``batch``."""
        _, b = self.micro_batches(batch)
        c = max(1, self.budget - b)
        total = self.tpot_s(batch)
        done, left = 0, max(1, math.ceil(prompt_tokens))
        while left > 0:
            chunk = min(c, left)
            total += self.split(self._batch(b, chunk, chunk * (done + chunk))).cycle
            done += chunk
            left -= chunk
        return total

    def pipeline(self, batch: int) -> tuple[float, float]:
        """(bubble, imbalance) of pure decode at ``batch`` (both 0 / 1 for pp = 1)."""
        m, b = self.micro_batches(batch)
        sp = self.split(self._batch(b))
        return 1.0 - m * sp.stage_mean / (self.pp * sp.stage_max), sp.stage_max / sp.stage_mean
