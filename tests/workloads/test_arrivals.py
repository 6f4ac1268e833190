"""Arrival processes and rate curves: exact small cases, determinism, seeded statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from workloads import arrivals as A


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def _cv(times: np.ndarray) -> float:
    gaps = np.diff(times)
    return float(gaps.std() / gaps.mean())


def test_poisson_is_cumsum_of_exponential_gaps():
    got = A.poisson(2.0, n=5, seed=3)
    assert got.dtype == np.float64
    assert np.array_equal(got, np.cumsum(_rng(3).exponential(0.5, 5)))
    assert np.array_equal(A.poisson(2.0, n=5, seed=3, start_s=10.0), 10.0 + got)
    assert len(A.poisson(1.0, n=0)) == 0


def test_gamma_formula_and_cv1_is_poisson():
    got = A.gamma(4.0, 2.0, n=6, seed=9)  # shape 1/4, scale 1/(4 * 1/4) = 1
    assert np.array_equal(got, np.cumsum(_rng(9).gamma(0.25, 1.0, 6)))
    assert np.array_equal(A.gamma(3.0, 1.0, n=50, seed=1), A.poisson(3.0, n=50, seed=1))


def test_weibull_formula():
    lam = 1.0 / (2.0 * math.gamma(1 + 1 / 0.5))
    assert np.allclose(A.weibull(2.0, 0.5, n=4, seed=2),
                       np.cumsum(lam * _rng(2).weibull(0.5, 4)), rtol=0, atol=1e-12)


@pytest.mark.parametrize("make", [
    lambda **kw: A.poisson(5.0, **kw),
    lambda **kw: A.gamma(5.0, 3.0, **kw),
    lambda **kw: A.weibull(5.0, 0.6, **kw),
])
def test_duration_mode_is_a_prefix_of_count_mode_and_deterministic(make):
    a = make(duration_s=200.0, seed=4)
    assert len(a) > 100 and (np.diff(a) >= 0).all() and a[-1] < 200.0
    assert np.array_equal(a, make(n=len(a), seed=4))  # the same draws, cut at the duration
    assert np.array_equal(a, make(duration_s=200.0, seed=4))
    assert not np.array_equal(a[:50], make(duration_s=200.0, seed=5)[:50])
    b = make(duration_s=200.0, seed=4, start_s=50.0)
    assert np.array_equal(b, 50.0 + a)


def test_seeded_statistics():
    # deterministic given the seeds: the bounds cannot flake
    g = A.gamma(10.0, 3.0, n=200_000, seed=0)
    assert abs(np.diff(g).mean() - 0.1) < 0.005 and abs(_cv(g) - 3.0) < 0.15
    w = A.weibull(10.0, 0.5, n=200_000, seed=0)  # CV sqrt(G(5) / G(3)^2 - 1) = sqrt(5)
    assert abs(np.diff(w).mean() - 0.1) < 0.005 and abs(_cv(w) - math.sqrt(5)) < 0.11
    p = A.poisson(10.0, duration_s=20_000.0, seed=0)
    assert abs(len(p) - 200_000) < 2_000 and abs(_cv(p) - 1.0) < 0.02


def test_a_generator_seed_is_shared():
    rng = _rng(1)
    a = A.poisson(1.0, n=3, seed=rng)
    b = A.poisson(1.0, n=3, seed=rng)
    both = A.poisson(1.0, n=6, seed=1)
    assert np.array_equal(a, both[:3]) and not np.array_equal(a, b)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: A.poisson(0, n=1), "rate_per_s=0"),
    (lambda: A.poisson(float("inf"), n=1), "rate_per_s=inf"),
    (lambda: A.poisson(1.0), "exactly one"),
    (lambda: A.poisson(1.0, n=2, duration_s=1.0), "exactly one"),
    (lambda: A.poisson(1.0, n=-1), "n=-1"),
    (lambda: A.poisson(1.0, duration_s=-1.0), "duration_s=-1.0"),
    (lambda: A.poisson(1.0, n=1, seed=-3), "seed=-3"),
    (lambda: A.poisson(1.0, n=1, seed=1.5), "seed=1.5"),
    (lambda: A.gamma(1.0, 0.0, n=1), "cv=0.0"),
    (lambda: A.weibull(1.0, -2, n=1), "shape=-2"),
])
def test_bad_parameters(call, message):
    with pytest.raises(ValueError, match=message):
        call()


# -- rate curves ---------------------------------------------------------------------------


def test_step_rate_cumulative_inverse_exact():
    c = A.step([10.0, 20.0, 30.0], [1.0, 0.0, 3.0])
    assert c.rate([0, 10, 15, 20, 29.9, 30, 100]).tolist() == [0, 1, 1, 0, 0, 3, 3]
    assert c.cumulative([0, 10, 15, 25, 30, 32]).tolist() == [0, 0, 5, 10, 10, 16]
    assert c.inverse([0.5, 5, 9.99, 10.5, 16]).tolist() == pytest.approx(
        [10.5, 15, 19.99, 30.5 / 3 + 20, 32])


def test_piecewise_linear_inverse_closed_form():
    c = A.piecewise([0.0, 10.0, 20.0], [0.0, 2.0, 2.0])  # ramp 0 -> 2 over 10 s, then flat
    assert c.rate([5.0, 15.0, 50.0]).tolist() == [1.0, 2.0, 2.0]
    assert c.cumulative([5.0, 10.0, 20.0, 25.0]).tolist() == [2.5, 10.0, 30.0, 40.0]
    assert c.inverse([2.5, 10.0, 30.0, 40.0]).tolist() == pytest.approx([5, 10, 20, 25])
    down = A.piecewise([0.0, 10.0], [2.0, 0.0])  # total 10 requests, then nothing
    assert down.inverse([7.5]).tolist() == pytest.approx([5.0])


def test_spike_and_constant():
    s = A.spike(1.0, 10.0, 100.0, 50.0)
    assert s.rate([99.0, 100.0, 149.0, 150.0]).tolist() == [1, 10, 10, 1]
    assert A.spike(1.0, 10.0, 0.0, 5.0).rate([0.0, 5.0]).tolist() == [10, 1]
    assert A.constant(4.0).cumulative([2.5]).tolist() == [10.0]


def test_diurnal_shape_and_inverse():
    d = A.diurnal(10.0, 3.0, period_s=100.0, phase_s=25.0)
    assert d.rate([25.0]).tolist() == pytest.approx([15.0])  # peak m (1 + a), a = 1/2
    assert d.rate([75.0]).tolist() == pytest.approx([5.0])
    assert d.cumulative([100.0, 200.0]).tolist() == pytest.approx([1000.0, 2000.0])
    y = np.linspace(0.0, 5000.0, 1001)
    assert np.allclose(d.cumulative(d.inverse(y)), y, rtol=0, atol=1e-8)


def test_from_constant_curve_equals_poisson():
    # Lambda^-1(u) = u / 2 and exponential(0.5) = 0.5 * exponential(1): bit-identical
    assert np.array_equal(A.from_rate_curve(A.constant(2.0), 50.0, seed=4),
                          A.poisson(2.0, duration_s=50.0, seed=4))


def test_from_rate_curve_follows_the_curve():
    s = A.spike(10.0, 100.0, 100.0, 50.0)
    t = A.from_rate_curve(s, 300.0, seed=0)
    assert (np.diff(t) >= 0).all() and t[0] >= 0 and t[-1] < 300.0
    counts = np.histogram(t, bins=[0, 100, 150, 300])[0]
    assert abs(counts[0] - 1000) < 100 and abs(counts[1] - 5000) < 250
    assert abs(counts[2] - 1500) < 150
    assert np.array_equal(t, A.from_rate_curve(s, 300.0, seed=0))
    late = A.from_rate_curve(s, 100.0, seed=0, start_s=100.0)  # curve time [100, 200)
    assert len(late[late < 50.0]) > 4 * len(late[late >= 50.0])
    bursty = A.from_rate_curve(A.constant(50.0), 2000.0, seed=0, cv=3.0)
    assert abs(_cv(bursty) - 3.0) < 0.3


def test_from_rate_curve_diurnal_and_zero():
    d = A.diurnal(20.0, 4.0, period_s=1000.0, phase_s=250.0)
    t = A.from_rate_curve(d, 1000.0, seed=2)
    peak = ((t >= 125) & (t < 375)).sum()
    trough = ((t >= 625) & (t < 875)).sum()
    assert peak > 2.5 * trough
    assert len(A.from_rate_curve(A.step([0.0], [0.0]), 10.0)) == 0
    assert len(A.from_rate_curve(A.step([0.0, 5.0], [1e-9, 0.0]), 10.0, seed=1)) == 0


@pytest.mark.parametrize(("call", "message"), [
    (lambda: A.step([0.0, 0.0], [1.0, 2.0]), "strictly increasing"),
    (lambda: A.step([0.0], [-1.0]), r"rates\[0\]=-1.0"),
    (lambda: A.step([0.0, 1.0], [1.0]), "same length"),
    (lambda: A.diurnal(10.0, 0.5), "peak_to_trough=0.5"),
    (lambda: A.diurnal(0.0, 2.0), "mean_rate=0.0"),
    (lambda: A.spike(1.0, 2.0, 0.0, 0.0), "duration_s=0.0"),
    (lambda: A.from_rate_curve(object(), 1.0), "not a RateCurve"),
    (lambda: A.from_rate_curve(A.constant(1.0), 1.0, cv=-1), "cv=-1"),
])
def test_bad_curves(call, message):
    with pytest.raises(ValueError, match=message):
        call()
