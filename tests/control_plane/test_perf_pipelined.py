"""Pipeline-parallel replicas keep pp micro-batches in flight."""

from __future__ import annotations

import pytest

from control_plane.perf import Batch
from control_plane.perf.parallel import ParallelConfig
from control_plane.perf.pipelined import PipelinedPredictor
from control_plane.perf.profile import predictor_for


def _pair():
    inner = predictor_for("llama-3-70b", "h100", ParallelConfig(tp=2, pp=2))
    return inner, PipelinedPredictor(inner, 2)


def test_pp1_is_the_inner_predictor():
    inner = predictor_for("llama-3-8b", "h100")
    b = Batch(prefill_tokens=512, prefill_attention=512 * 512, decode_seqs=8,
              decode_context=8000)
    assert PipelinedPredictor(inner, 1).iteration_s(b) == inner.iteration_s(b)


def test_gain_grows_with_batch_and_stays_below_pp():
    inner, piped = _pair()
    gains = []
    for seqs in (1, 64, 256):
        b = Batch(decode_seqs=seqs, decode_context=seqs * 1500)
        gains.append(inner.iteration_s(b) / piped.iteration_s(b))
    assert gains[0] == pytest.approx(1.0, abs=0.01)  # one request crosses every stage
    assert gains[0] < gains[1] < gains[2] < 2.0


def test_decode_run_is_the_sum_of_steps():
    _, piped = _pair()
    steps = [piped.iteration_s(Batch(decode_seqs=48, decode_context=48 * 900 + 48 * i))
             for i in range(37)]
    assert piped.decode_run_s(48, 48 * 900, 37) == pytest.approx(sum(steps), rel=1e-9)


def test_bad_pp():
    with pytest.raises(ValueError, match="pp=0"):
        PipelinedPredictor(predictor_for("llama-3-8b", "h100"), 0)
