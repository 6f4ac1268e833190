"""Length distributions and (prompt, output) length models."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workloads.lengths import (
    DEFAULT_LENGTHS,
    Empirical,
    Fixed,
    LengthModel,
    LogNormal,
    Pmf,
    Uniform,
)
from workloads.trace import Trace


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def test_fixed_and_uniform():
    assert Fixed(7).sample(3, 0).tolist() == [7, 7, 7]
    u = Uniform(2, 4).sample(2000, 1)
    assert u.dtype == np.int64 and set(u.tolist()) == {2, 3, 4}  # both ends inclusive
    assert np.array_equal(u, Uniform(2, 4).sample(2000, 1))


def test_lognormal_formula_and_clip():
    got = LogNormal(100, 1.5, 300).sample(1000, 3)
    want = np.clip(np.rint(_rng(3).lognormal(math.log(100), 1.5, 1000)), 1, 300)
    assert np.array_equal(got, want) and got.dtype == np.int64
    assert got.min() >= 1 and got.max() == 300
    assert np.median(LogNormal(100, 0.5).sample(20_001, 0)) == pytest.approx(100, rel=0.03)


def test_pmf_support_and_frequencies():
    pmf = Pmf([0, 10, 20], [0.2, 0.3, 0.5])
    x = pmf.sample(100_000, 0)
    assert set(x.tolist()) == {0, 10, 20}  # zero allowed (ServeGen image_count)
    freq = [(x == v).mean() for v in (0, 10, 20)]
    assert freq == pytest.approx([0.2, 0.3, 0.5], abs=0.01)
    assert pmf.mean() == pytest.approx(13.0)
    assert Pmf([5], [1.0]).sample(3, 0).tolist() == [5, 5, 5]
    # ServeGen's probabilities are rounded: a sum off by < 1e-3 is renormalised
    assert Pmf([1, 2], [0.5, 0.4999]).probs.sum() == pytest.approx(1.0)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Pmf([1, 2], [0.5, 0.4]), "sum to"),
    (lambda: Pmf([1, 2], [1.5, -0.5]), r"probs\[1\]=-0.5"),
    (lambda: Pmf([1.5, 2], [0.5, 0.5]), "integers"),
    (lambda: Pmf([-1, 2], [0.5, 0.5]), r"values\[0\]=-1"),
    (lambda: Pmf([1, 2], [1.0]), "same length"),
    (lambda: Fixed(0), "tokens=0"),
    (lambda: Uniform(5, 4), "hi=4"),
    (lambda: LogNormal(0, 1), "median=0"),
    (lambda: LogNormal(10, -1), "sigma=-1"),
    (lambda: Empirical([0, 3]), r"values\[0\]=0"),
    (lambda: Empirical(np.ones((3, 3))), "shape"),
    (lambda: Empirical.from_pairs([1, 2], [3]), "same length"),
    (lambda: LengthModel(Fixed(1), Fixed(1), joint=Empirical.from_pairs([1], [1])), "not both"),
    (lambda: LengthModel(joint=Empirical([1, 2])), "pairs"),
    (lambda: LengthModel(Fixed(1), None), "output=None"),
])
def test_bad_parameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_empirical_joint_keeps_pairs():
    prompt = np.array([100, 2000, 30, 400])
    output = np.array([1, 500, 7, 80])
    emp = Empirical.from_pairs(prompt, output)
    rows = emp.sample(500, 2)
    assert rows.shape == (500, 2)
    pairs = set(zip(prompt.tolist(), output.tolist(), strict=True))
    assert {tuple(r) for r in rows.tolist()} == pairs  # only observed pairs, all of them
    single = Empirical([5, 6]).sample(100, 0)
    assert single.shape == (100,) and set(single.tolist()) == {5, 6}


def test_length_model_independent_and_joint():
    m = LengthModel(Uniform(1, 9), Fixed(3))
    p, o = m.sample(4, 5)
    assert np.array_equal(p, _rng(5).integers(1, 10, 4)) and o.tolist() == [3, 3, 3, 3]
    trace = Trace([0.0, 1.0, 2.0], [10, 20, 30], [1, 2, 3])
    j = LengthModel.from_trace(trace)
    p, o = j.sample(300, 0)
    assert set(zip(p.tolist(), o.tolist(), strict=True)) == {(10, 1), (20, 2), (30, 3)}
    p2, o2 = j.sample(300, 0)
    assert np.array_equal(p, p2) and np.array_equal(o, o2)


def test_default_lengths_are_poisson_mix_defaults():
    assert LengthModel(LogNormal(512, 0.8, 4096), LogNormal(128, 0.7, 1024)) == DEFAULT_LENGTHS
