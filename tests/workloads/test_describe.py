"""Workload statistics on hand-made traces."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workloads.describe import describe, describe_lengths, prefix_reuse
from workloads.trace import Trace


def test_rate_burstiness_peak_and_lengths():
    # gaps 1, 1, 1, 3 -> mean 1.5, std sqrt(0.75)
    t = Trace([0.0, 1.0, 2.0, 3.0, 6.0], [10, 20, 30, 40, 50], [1, 2, 3, 4, 100],
              tenant=["a", "b", "a", "a", "b"], priority=[0, 2, 2, 4, 2], name="t")
    s = describe(t, bin_s=2.0)
    assert s.requests == 5 and s.duration_s == 6.0
    assert s.rate_per_s == pytest.approx(4 / 6)
    assert s.burstiness_cv == pytest.approx(math.sqrt(0.75) / 1.5)
    assert s.peak_rate_per_s == pytest.approx(1.0)  # bin [0, 2) holds 2 requests
    assert s.prompt_tokens.p50 == 30 and s.prompt_tokens.max == 50
    assert s.output_tokens.mean == pytest.approx(22.0)
    assert s.tenants == {"a": 3, "b": 2} and s.priorities == {0: 1, 2: 3, 4: 1}
    assert s.prefix_reuse_ratio is None
    text = s.format()
    assert "t: 5 requests" in text and "inter-arrival CV 0.58" in text


def test_prefix_reuse_counts_leading_seen_blocks():
    hashes = np.empty(3, dtype=object)
    hashes[:] = [(1, 2, 3), (1, 2, 9), (5, 2, 3)]
    t = Trace([0, 1, 2], [48, 40, 48], [1, 1, 1], prefix_hashes=hashes, block_size=16)
    # request 2 reuses blocks 1, 2 (32 of 40 tokens); request 3 reuses nothing
    # (its first block differs, so its later blocks are a different prefix)
    assert prefix_reuse(t) == (pytest.approx(2 / 9), pytest.approx(32 / 136))
    assert describe(t).prefix_reuse_ratio == pytest.approx(2 / 9)


def test_length_table_and_empty_trace():
    s = describe_lengths("lens", np.array([1, 2, 3]), np.array([4, 5, 6]), {"note": 1})
    assert s.rate_per_s is None and s.prompt_tokens.p50 == 2 and s.meta == {"note": 1}
    e = describe(Trace([], [], []))
    assert e.requests == 0 and e.rate_per_s is None and math.isnan(e.prompt_tokens.mean)
    with pytest.raises(ValueError, match="bin_s=0"):
        describe(e, bin_s=0)
