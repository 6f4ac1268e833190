"""The TPOT admission gate's prediction: an instance's steady-state time per output token.

An engine that batches continuously interleaves the prefill of newly admitted requests with
the decode steps of the running ones, so every request it runs sees, per output token, one
decode iteration plus its share of that prefill work. With ``n`` requests in flight, each
request ``i`` completes at ``1 / O_i`` per decode step (``O_i`` output tokens) and is replaced
by a new one whose prompt is prefilled, so the prefill tokens per step are estimated by
``S = sum_i P_i / O_i`` over the in-flight requests (``P_i`` prompt tokens; the ``1 / O_i``
weight undoes the in-flight sample's bias towards long outputs). The predicted time per
output token with ``n`` requests in flight is then::

    decode_s(n) + S / prefill_tokens_per_s
    decode_s(n) = max(0, decode_s_per_token + decode_s_per_seq x (n - NOMINAL_BATCH))

from the instance's nominal speeds (:class:`~control_plane.types.InstanceSpec`: the decode
iteration at a batch of ``NOMINAL_BATCH`` sequences and its growth per sequence). For one
more request, ``S`` is scaled by ``(n + 1) / n`` (the newcomer taken as an average one).

The gate (``ControlPlaneConfig.tpot_gate``, a fraction ``f``) gives an instance that already
runs work no new request while this prediction for one more request exceeds ``f`` x the
tightest TPOT SLO among its in-flight requests (the instance then has no room: it is no
candidate for any request) or ``f`` x the new request's own TPOT SLO (checked on the
instance the router picks; when it refuses, the router picks again among the instances that
admit the request). Requests nothing admits wait in the control plane's queue, where the
queue policy orders them. An instance with nothing in flight always admits, so every request
is eventually dispatched. The cluster state (:mod:`control_plane.cluster`) keeps ``S``, the
tightest bound and the prediction current per instance as requests are dispatched and
released (O(1) each, amortised).

Why: at high load an engine's decode steps slow down with its batch and with the prefills it
interleaves; without the gate every request is dispatched at once while an engine has fewer
than ``max_inflight`` requests, so the engines' own FCFS order and large batches decide and
the queue policy rarely acts (see ``reports/headline.md`` for the measured effect).
"""

from __future__ import annotations

from control_plane.types import InstanceSpec

__all__ = ["NOMINAL_BATCH", "decode_s", "predicted_tpot_s"]

NOMINAL_BATCH = 32  # sequences in the batch that InstanceSpec.decode_s_per_token is quoted at


def decode_s(spec: InstanceSpec, n: int) -> float:
    """Seconds of one decode iteration of ``n`` sequences, from the nominal speeds."""
    return max(0.0, spec.decode_s_per_token + spec.decode_s_per_seq * (n - NOMINAL_BATCH))


def predicted_tpot_s(spec: InstanceSpec, n: int, prefill_per_step: float) -> float:
    """Steady-state seconds per output token with ``n`` requests in flight whose prefill
    tokens per decode step are ``prefill_per_step`` (module doc)."""
    return decode_s(spec, n) + max(0.0, prefill_per_step) / spec.prefill_tokens_per_s
