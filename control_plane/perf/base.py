"""The iteration-time predictor protocol shared by the simulator, planner and policies.

One engine iteration (a forward pass of a continuous batch) is described by a
:class:`Batch`: how many prompt tokens are prefilled in it (possibly chunks of longer
prompts), how much attention work those chunks do against their context, and how many
sequences decode one token each with how much total context. A predictor maps a Batch to
seconds. ``decode_run_s`` sums ``steps`` consecutive pure-decode iterations in which every
sequence's context grows by one token per step; predictors whose time is linear in the
decode context give it in closed form, which lets the simulator fast-forward through runs
of decode steps with exactly the times step-by-step simulation would give.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Batch", "IterationPredictor", "LinearPredictor"]


@dataclass(frozen=True, slots=True)
class Batch:
    """Composition of one iteration.

    ``prefill_tokens``: prompt tokens computed in this step (sum over prefill chunks).
    ``prefill_attention``: sum over chunks of ``chunk * (context_before + chunk)``, the
    number of (query, key) pairs the chunks attend over (x2 for causal-average is left to
    the predictor). ``decode_seqs``: sequences generating one token. ``decode_context``:
    sum of their context lengths (tokens already in the KV cache, incl. the prompt).
    """

    prefill_tokens: int = 0
    prefill_attention: int = 0
    decode_seqs: int = 0
    decode_context: int = 0

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.decode_seqs


class IterationPredictor(Protocol):
    """Seconds per engine iteration, for one model on one GPU type with one parallel config."""

    def iteration_s(self, batch: Batch) -> float: ...

    def decode_run_s(self, decode_seqs: int, decode_context: int, steps: int) -> float:
        """Total seconds of ``steps`` pure-decode iterations, context growing by
        ``decode_seqs`` tokens per step (exactly the sum of ``iteration_s`` over them)."""
        ...


@dataclass(frozen=True, slots=True)
class LinearPredictor:
    """``overhead_s + per_token_s x tokens + per_context_s x decode_context +
    per_attention_s x prefill_attention``: a simple predictor (tests, quick scenarios),
    linear in the decode context, so decode runs sum in closed form."""

    overhead_s: float = 0.005
    per_token_s: float = 0.0001
    per_context_s: float = 0.0
    per_attention_s: float = 0.0

    def __post_init__(self) -> None:
        for name in ("overhead_s", "per_token_s", "per_context_s", "per_attention_s"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"LinearPredictor.{name}={v!r}: must be a number >= 0")

    def iteration_s(self, batch: Batch) -> float:
        return (self.overhead_s + self.per_token_s * (batch.prefill_tokens + batch.decode_seqs)
                + self.per_context_s * batch.decode_context
                + self.per_attention_s * batch.prefill_attention)

    def decode_run_s(self, decode_seqs: int, decode_context: int, steps: int) -> float:
        # sum_{i<steps} (a + c * (ctx + i * seqs)) = steps * (a + c * ctx)
        #                                            + c * seqs * steps * (steps - 1) / 2
        a = self.overhead_s + self.per_token_s * decode_seqs
        c = self.per_context_s
        return (steps * (a + c * decode_context)
                + c * decode_seqs * steps * (steps - 1) / 2)
