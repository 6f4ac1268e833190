"""ServeGen descriptors -> request streams, on tiny descriptor files written by the tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from workloads.errors import TraceFormatError
from workloads.lengths import Fixed, LengthModel
from workloads.servegen import (
    aggregate_rate_curve,
    read_client_windows,
    read_length_pmf,
    servegen_trace,
)

WINDOWS = """\
category,model,client_id,window_start_s,rate_rps,iat_cv,iat_dist,iat_param1,iat_param2
language,m-x,0,0,0.05,1.4,Gamma,0.5,2.0
language,m-x,0,600,0.1,2.2,Weibull,0.7,3.0
language,m-x,3,0,0.01,1.0,Gamma,1.0,100.0
language,m-other,0,0,5.0,1.0,Gamma,1.0,0.2
language,m-x,5,1200,0.0001,1.0,Gamma,1.0,1.0
"""
PMF = """\
category,model,window_start_s,field,value,prob
language,m-x,0,input_tokens,10.0,0.5
language,m-x,0,input_tokens,20.0,0.5
language,m-x,0,output_tokens,3.0,0.25
language,m-x,0,output_tokens,5.0,0.75
language,m-other,0,input_tokens,1.0,1.0
"""
MM_PMF = """\
category,model,window_start_s,field,value,prob
multimodal,mm-x,0,text_tokens,100,1.0
multimodal,mm-x,0,image_count,0,0.5
multimodal,mm-x,0,image_count,2,0.5
multimodal,mm-x,0,image_tokens,7,1.0
multimodal,mm-x,0,audio_count,0,1.0
multimodal,mm-x,0,audio_tokens,0,1.0
multimodal,mm-x,0,output_tokens,0,0.5
multimodal,mm-x,0,output_tokens,9,0.5
multimodal,mm-x,0,reason_ratio,0.5,1.0
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def files(tmp_path):
    return write(tmp_path, "w.csv", WINDOWS), write(tmp_path, "p.csv", PMF)


def test_read_client_windows(files):
    w = read_client_windows(files[0], "m-x")
    assert len(w) == 4 and w.model == "m-x"
    assert w.client_id.tolist() == [0, 0, 3, 5]
    assert w.window_start_s.tolist() == [0, 600, 0, 1200]
    assert w.iat_dist.tolist() == ["Gamma", "Weibull", "Gamma", "Gamma"]
    assert w.line.tolist() == [2, 3, 4, 6]


def test_exact_counts_per_window_bounds_and_tenants(files):
    w = read_client_windows(files[0], "m-x")
    p = read_length_pmf(files[1], "m-x")
    t = servegen_trace(w, p, seed=1, duration_s=1200)
    # round(rate * 600): 30 and 60 for client 0, 6 for client 3, 0.06 -> 0 for client 5
    tenants = t.tenant.tolist()
    a = t.arrival_s
    c0 = t.tenant == "client-0"
    assert len(t) == 96 and tenants.count("client-3") == 6 and set(tenants) == {
        "client-0", "client-3"}
    assert ((a[c0] > 0) & (a[c0] < 600)).sum() == 30
    assert ((a[c0] > 600) & (a[c0] < 1200)).sum() == 60
    assert (a[t.tenant == "client-3"] < 600).all()
    assert (np.diff(a) >= 0).all()
    assert set(t.prompt_tokens.tolist()) <= {10, 20} and set(t.output_tokens.tolist()) <= {3, 5}
    assert t.meta["model"] == "m-x" and t.meta["windows"] == 3 and t.meta["clients"] == 2
    again = servegen_trace(w, p, seed=1, duration_s=1200)
    assert np.array_equal(again.arrival_s, a) and np.array_equal(again.tenant, t.tenant)
    assert np.array_equal(again.prompt_tokens, t.prompt_tokens)
    assert not np.array_equal(servegen_trace(w, p, seed=2, duration_s=1200).arrival_s, a)


def test_rate_scale_window_slice_and_clients(files):
    w = read_client_windows(files[0], "m-x")
    p = read_length_pmf(files[1], "m-x")
    assert len(servegen_trace(w, p, rate_scale=2.0, duration_s=1200)) == 192
    late = servegen_trace(w, p, start_s=600, duration_s=600, seed=3)
    assert len(late) == 60 and set(late.tenant.tolist()) == {"client-0"}
    assert late.arrival_s.min() > 0 and late.arrival_s.max() < 600  # rebased to start_s
    only = servegen_trace(w, p, clients=[3], duration_s=1200)
    assert len(only) == 6 and set(only.tenant.tolist()) == {"client-3"}
    with pytest.raises(ValueError, match=r"clients: \[9\]"):
        servegen_trace(w, p, clients=[9])
    # a LengthModel instead of the PMFs (e.g. ServeGen arrivals, ShareGPT lengths)
    fixed = servegen_trace(w, LengthModel(Fixed(7), Fixed(8)), duration_s=1200)
    assert set(fixed.prompt_tokens.tolist()) == {7} and len(fixed) == 96


def test_gzip_files_give_the_same_trace(tmp_path, files):
    wz = write(tmp_path, "w.csv.gz", WINDOWS)
    pz = write(tmp_path, "p.csv.gz", PMF)
    a = servegen_trace(read_client_windows(files[0], "m-x"), read_length_pmf(files[1], "m-x"),
                       seed=5, duration_s=1200)
    b = servegen_trace(read_client_windows(wz, "m-x"), read_length_pmf(pz, "m-x"), seed=5,
                       duration_s=1200)
    assert np.array_equal(a.arrival_s, b.arrival_s)
    assert np.array_equal(a.output_tokens, b.output_tokens)


def test_lengths_outside_the_pmf_windows_are_an_error(files):
    p = read_length_pmf(files[1], "m-x")
    assert p.window_start_s.tolist() == [0.0]
    with pytest.raises(ValueError, match="no length PMF window"):
        p.sample(np.array([21600.0]), 0)


def test_multimodal_prompt_is_text_plus_image_tokens(tmp_path):
    p = read_length_pmf(write(tmp_path, "mm.csv", MM_PMF), "mm-x")
    assert p.ignored_fields == ("reason_ratio",)
    prompt, output, info = p.sample(np.linspace(0, 100, 400), 0)
    assert set(prompt.tolist()) == {100, 114}  # 0 or 2 images of 7 tokens
    assert set(output.tolist()) == {1, 9}  # 0-token outputs become 1 ...
    assert info["clamped_output_rows"] == int((output == 1).sum()) > 0  # ... and are counted


def test_aggregate_rate_curve(tmp_path):
    path = write(tmp_path, "agg.csv", "category,model,window_start_s,total_rate_rps,"
                 "active_clients\nlanguage,m-x,600,2.0,3\nlanguage,m-x,0,1.0,2\n")
    c = aggregate_rate_curve(path, "m-x")
    assert c.rate([0, 599, 600, 1199, 1200]).tolist() == [1, 1, 2, 2, 0]
    assert c.cumulative([1800]).tolist() == [1800.0]


def _bad(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(("name", "text", "line", "field", "message"), [
    ("w.csv", _bad(WINDOWS, "Weibull", "Pareto"), 3, "iat_dist", "Gamma or Weibull"),
    ("w.csv.gz", _bad(WINDOWS, "0,0.01,", "0,-0.01,"), 4, "rate_rps", "must be >= 0"),
    ("w.csv", _bad(WINDOWS, ",iat_param2", ",shape2"), 1, "iat_param2", "missing column"),
    ("w.csv", _bad(WINDOWS, "0.7,3.0", "0.7,abc"), 3, "iat_param2", "not a finite number"),
    ("w.csv", _bad(WINDOWS, "1.0,100.0", "0,100.0"), 4, "iat_param1", "must be > 0"),
    ("w.csv", _bad(WINDOWS, "m-x,3,0,", "m-x,0,0,"), 4, "window_start_s", "duplicate"),
    ("w.csv", WINDOWS + "\n\nlanguage,m-x,7,0,1,1,Gamma,1\n", 9, "iat_param2",
     "missing or not a finite"),
])
def test_bad_window_files(tmp_path, name, text, line, field, message):
    with pytest.raises(TraceFormatError, match=message) as e:
        read_client_windows(write(tmp_path, name, text), "m-x")
    assert (e.value.line, e.value.field) == (line, field)
    assert e.value.path.endswith(name)


@pytest.mark.parametrize(("text", "line", "field", "message"), [
    (_bad(PMF, "5.0,0.75", "5.0,0.5"), 4, "prob", "sum to 0.75"),
    (_bad(PMF, "20.0,0.5", "20.5,0.5"), 3, "value", "integer"),
    (_bad(PMF, "10.0,0.5", "10.0,1.5"), 2, "prob", r"in \[0, 1\]"),
    (_bad(PMF, "category,", "kategory,"), 1, "category", "missing column"),
    (PMF.replace("language,m-x,0,output_tokens,3.0,0.25\nlanguage,m-x,0,output_tokens,5.0,"
                 "0.75\n", ""), None, "field", "no output_tokens"),
])
def test_bad_pmf_files(tmp_path, text, line, field, message):
    with pytest.raises(TraceFormatError, match=message) as e:
        read_length_pmf(write(tmp_path, "p.csv.gz", text), "m-x")
    assert (e.value.line, e.value.field) == (line, field)


def test_unknown_model_and_mismatched_pmfs(files):
    with pytest.raises(TraceFormatError, match=r"no rows for model 'm-y'.*m-other"):
        read_client_windows(files[0], "m-y")
    w = read_client_windows(files[0], "m-other")
    with pytest.raises(ValueError, match="differs"):
        servegen_trace(w, read_length_pmf(files[1], "m-x"))
