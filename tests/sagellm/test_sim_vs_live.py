"""sagellm.sim_vs_live: fidelity results folders, the emulated fallback, quantile tables."""

from __future__ import annotations

import pandas as pd
import pytest

import sagellm.sim_vs_live as svl
from control_plane.perf.profile import PROFILES_DIR
from control_plane.records import RequestRecord
from sagellm.emulated_fidelity import SIM
from sagellm.sim_vs_live import fidelity_records, quantile_table, read_fidelity_folder


def _records(n: int, ttft_s: float, **labels) -> pd.DataFrame:
    recs = [RequestRecord(request_id=f"r{i}", arrival_s=float(i), prompt_tokens=10, output_tokens=3,
                          instance_id="a", dispatch_s=float(i), first_token_s=i + ttft_s,
                          finish_s=i + ttft_s + 1.0) for i in range(n)]
    df = pd.DataFrame([r.to_dict() for r in recs], columns=list(RequestRecord.FIELDS))
    for k, (name, value) in enumerate(labels.items()):
        df.insert(k, name, value)
    return df


def test_absent_or_empty_folders_have_no_results(tmp_path):
    assert read_fidelity_folder(tmp_path / "absent") is None
    pd.DataFrame({"x": [1]}).to_csv(tmp_path / "summary.csv", index=False)  # not records
    # the engines' profiles kept with a fidelity run (metadata lines, then a table)
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "engine-0.csv").write_text(
        (PROFILES_DIR / "vllm-cpu-llama-small-pinned.csv").read_text())
    assert read_fidelity_folder(tmp_path) is None


def test_labels_come_from_columns_or_the_path(tmp_path):
    (tmp_path / "load=0.5").mkdir()
    _records(3, 0.1).to_parquet(tmp_path / "load=0.5" / "router=rr__source=sim.parquet")
    _records(3, 0.2, source="live", load=0.5, router="rr").to_csv(tmp_path / "live.csv",
                                                                 index=False)
    df = read_fidelity_folder(tmp_path)
    assert list(df.columns[:3]) == ["source", "load", "router"]
    assert df.groupby(["source", "load", "router"]).size().to_dict() == {
        ("live", 0.5, "rr"): 3, ("sim", 0.5, "rr"): 3}


def test_reads_the_layout_the_fidelity_benchmark_writes(tmp_path):
    from sagellm.fidelity import write_records

    recs = [RequestRecord(request_id="a", arrival_s=0.0, prompt_tokens=5, output_tokens=2,
                          instance_id="e", dispatch_s=0.0, first_token_s=0.1, finish_s=0.3)]
    for source in ("sim", "live"):
        write_records(tmp_path, 0.8, "least_loaded", source, recs)
    (tmp_path / "fidelity_cdfs.png").write_bytes(b"")  # other files are left alone
    (tmp_path / "train").mkdir()     # the contention fit's training replay, no labels
    _records(2, 0.1).to_parquet(tmp_path / "train" / "source=live.parquet")
    df = read_fidelity_folder(tmp_path)
    assert sorted(df[["source", "load", "router"]].itertuples(index=False, name=None)) == [
        ("live", 0.8, "least_loaded"), ("sim", 0.8, "least_loaded")]


def test_records_without_labels_are_an_error_naming_the_file(tmp_path):
    _records(2, 0.1).to_parquet(tmp_path / "run.parquet")
    with pytest.raises(ValueError, match=r"run\.parquet.*'source'"):
        read_fidelity_folder(tmp_path)


def test_quantile_table_puts_sources_side_by_side():
    df = pd.concat([_records(4, 0.1, source=SIM, load=1.0, router="rr"),
                    _records(4, 0.2, source="live", load=1.0, router="rr")])
    t = quantile_table(df, quantiles=(0.5,), metrics=("ttft_s", "e2e_s"))
    assert list(t.columns) == [SIM, "live", "diff_live"]
    assert list(t.index) == [(1.0, "rr", "ttft_s", 0.5), (1.0, "rr", "e2e_s", 0.5)]
    assert t[SIM].tolist() == pytest.approx([0.1, 1.1])
    assert t["live"].tolist() == pytest.approx([0.2, 1.2])
    assert t["diff_live"].tolist() == pytest.approx([1.0, 0.1 / 1.1])
    # a second simulated replay (sim-2) is listed with the simulated side, not diffed
    t2 = quantile_table(pd.concat([df, _records(4, 0.3, source="sim-2", load=1.0, router="rr")]),
                        quantiles=(0.5,), metrics=("ttft_s",))
    assert list(t2.columns) == [SIM, "sim-2", "live", "diff_live"]


def test_fidelity_records_prefers_real_results(tmp_path, monkeypatch):
    monkeypatch.setattr(svl, "compare_emulated", lambda *a, **k: pytest.fail("emulated"))
    _records(2, 0.1, source="live", load=1.0, router="rr").to_parquet(tmp_path / "a.parquet")
    records, runs, note = fidelity_records(tmp_path)
    assert len(records) == 2 and runs is None
    assert note.startswith(f"fidelity results from {tmp_path}")


def test_fidelity_records_falls_back_to_emulated_engines_and_says_so(tmp_path, monkeypatch):
    calls = []

    def fake(trace, **kw):
        calls.append((len(trace), kw))
        return _records(2, 0.1, source=SIM, load=0.5, router="rr"), pd.DataFrame([{}])

    monkeypatch.setattr(svl, "compare_emulated", fake)
    records, runs, note = fidelity_records(tmp_path / "none", requests=30, loads=(0.4,),
                                           routers=("rr",))
    assert calls == [(30, {"loads": (0.4,), "routers": ("rr",)})]
    assert "no fidelity results" in note and "EMULATED" in note and "not real vLLM" in note
    assert len(records) == 2 and runs is not None
