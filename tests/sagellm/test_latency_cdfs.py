"""sagellm.latency_cdfs: per-request latencies as the summaries define them, CDF figures."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from sagellm.latency_cdfs import cdf_figure, latencies


def _records() -> pd.DataFrame:
    # (arrival, dispatch, first token, finish, outputs, status, router, load)
    rows = [
        (0.0, 0.5, 1.0, 3.0, 5, "ok", "a", 1.0),
        (1.0, 1.0, 1.5, 1.5, 1, "ok", "a", 1.0),
        (2.0, None, None, None, 0, "rejected", "a", 1.0),
        (0.0, 0.0, 0.2, 2.2, 11, "ok", "b", 1.0),
        (0.0, 0.0, 0.4, 1.4, 3, "ok", "b", 2.0),
    ]
    return pd.DataFrame(rows, columns=["arrival_s", "dispatch_s", "first_token_s", "finish_s",
                                       "output_tokens", "status", "router", "load"])


def test_latencies_of_completed_requests():
    lat = latencies(_records())
    assert len(lat) == 4  # the rejected one is left out
    first = lat.iloc[0]
    assert (first.ttft_s, first.e2e_s, first.queue_s) == (1.0, 3.0, 0.5)
    assert first.tpot_s == pytest.approx(0.5)  # 2 s over 4 tokens after the first
    assert math.isnan(lat.iloc[1].tpot_s)  # one output token: no TPOT
    assert lat.iloc[2].tpot_s == pytest.approx(0.2)
    assert list(lat["router"]) == ["a", "a", "b", "b"]


def test_latencies_name_missing_columns():
    with pytest.raises(ValueError, match="first_token_s"):
        latencies(_records().drop(columns=["first_token_s"]))


def test_cdf_figure_has_a_panel_per_group_and_metric_and_a_line_per_series():
    fig = cdf_figure(_records(), by="router", panels="load", metrics=("ttft_s", "e2e_s"),
                     title="t")
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert len(axes) == 4  # 2 loads x 2 metrics
    assert [len(ax.get_lines()) for ax in axes] == [2, 2, 1, 1]
    assert axes[0].get_title() == "load 1"
    # the CDF of router a's TTFT (1.0 and 0.5 s) ends at 1
    line = axes[0].get_lines()[0]
    np.testing.assert_allclose(line.get_xdata(), [0.5, 1.0])
    np.testing.assert_allclose(line.get_ydata(), [0.5, 1.0])


def test_log_axes_only_for_values_spanning_more_than_a_decade():
    lat = pd.DataFrame({"router": ["a", "a", "b"], "ttft_s": [0.01, 1.0, 0.5],
                        "e2e_s": [1.4, 3.0, 2.0]})
    ttft, e2e = cdf_figure(lat, by="router", metrics=("ttft_s", "e2e_s")).axes
    assert ttft.get_xscale() == "log"  # a factor of 100
    assert e2e.get_xscale() == "linear"  # a factor of 2


def test_cdf_figure_without_panels_and_with_linear_axes():
    fig = cdf_figure(latencies(_records()), by=["router"], metrics=("tpot_s",), logx=False)
    (ax,) = fig.axes
    assert ax.get_xscale() == "linear"
    assert len(ax.get_lines()) == 2


def test_cdf_figure_rejects_unknown_metrics_and_columns():
    with pytest.raises(ValueError, match="metrics"):
        cdf_figure(_records(), by="router", metrics=("latency",))
    with pytest.raises(ValueError, match="no column 'policy'"):
        cdf_figure(_records(), by="policy")
