"""Profile format extensions (extra columns, per-request overheads, built-in profiles) and
the held-out fit report of calibration."""

from __future__ import annotations

import numpy as np
import pytest

from control_plane.errors import ConfigError
from control_plane.perf import FittedPredictor, ProfileTable, read_profile, write_profile
from control_plane.perf.calibration import center, holdout_fit, rel_errors, subset
from control_plane.perf.profile import PROFILES_DIR, builtin_profiles, resolve_profile

TRUE = (0.002, 1e-5, 3e-9, 2e-4, 2e-7)


def table(noise: float = 0.0, meta: dict | None = None) -> ProfileTable:
    rows = [(p, p * p, 1, 40) for p in (16, 64, 256, 1024, 2047)]
    rows += [(0, 0, b, b * (c + 8)) for b in (1, 2, 4, 8) for c in (16, 256, 1024)]
    f = np.array(rows, float)
    y = TRUE[0] + f @ np.array(TRUE[1:])
    y = y * (1 + noise * np.cos(np.arange(len(y))))
    kinds = tuple("prefill" if r[0] else "decode" for r in rows)
    return ProfileTable("llama-tiny", "cpu", 1, 1, f, y, dict(meta or {}),
                        {"kind": kinds, "split": tuple("holdout" if i % 3 == 1 else "train"
                                                       for i in range(len(rows)))})


def test_extra_columns_and_overheads_round_trip(tmp_path):
    meta = {"request_ttft_overhead_s": "0.004", "request_e2e_overhead_s": "0.011",
            "api_server_ttft_s": "0.003", "hardware": "AMD EPYC, core 0"}
    path = tmp_path / "p.csv"
    write_profile(path, table(meta=meta))
    header = next(ln for ln in path.read_text().splitlines() if not ln.startswith("#"))
    assert header == ("prefill_tokens,prefill_attention,decode_seqs,decode_context,"
                      "iteration_s,kind,split")
    t = read_profile(path)
    assert t.extra["kind"][:2] == ("prefill", "prefill") and t.extra["kind"][-1] == "decode"
    assert t.meta["hardware"] == "AMD EPYC, core 0"
    fp = FittedPredictor.from_table(t)
    assert (fp.request_ttft_overhead_s, fp.request_e2e_overhead_s) == (0.004, 0.011)
    assert fp.intercept_s == pytest.approx(TRUE[0], rel=1e-6)
    assert FittedPredictor.from_file(path) == fp


def test_old_profiles_read_unchanged(tmp_path):
    # a v1 file without the new metadata or columns: overheads 0, no extra columns
    p = tmp_path / "old.csv"
    p.write_text("# sagellm iteration profile v1\n# model: llama-3-8b\n# gpu: h100\n# tp: 1\n"
                 "# pp: 1\nprefill_tokens,decode_seqs,iteration_s\n512,0,0.04\n0,64,0.014\n")
    t = read_profile(p)
    assert t.extra == {}
    fp = FittedPredictor.from_table(t)
    assert (fp.request_ttft_overhead_s, fp.request_e2e_overhead_s) == (0.0, 0.0)


def test_bad_overhead_metadata_is_named(tmp_path):
    p = tmp_path / "bad.csv"
    write_profile(p, table(meta={"request_ttft_overhead_s": "-1"}))
    with pytest.raises(ConfigError, match="request_ttft_overhead_s='-1'"):
        FittedPredictor.from_file(p)


def test_resolve_profile_paths_and_builtin_names(tmp_path):
    p = tmp_path / "mine.csv"
    write_profile(p, table())
    assert resolve_profile(p) == p
    for name in builtin_profiles():
        assert resolve_profile(name) == PROFILES_DIR / f"{name}.csv"
        assert resolve_profile(f"{name}.csv") == PROFILES_DIR / f"{name}.csv"
    with pytest.raises(ConfigError, match=r"'nope': no such file, nor a built-in profile"):
        resolve_profile("nope")


def test_builtin_profiles_load():
    names = builtin_profiles()
    assert {"vllm-cpu-llama-tiny", "vllm-cpu-llama-small"} <= set(names)
    for name in names:
        t = read_profile(resolve_profile(name))
        fp = FittedPredictor.from_table(t)
        assert fp.intercept_s > 0 and fp.request_ttft_overhead_s > 0
        for key in ("cpu_model", "engine", "date", "fit_holdout_rel_err_median"):
            assert t.meta.get(key), f"{name}: metadata {key} missing"


def test_holdout_fit_exact_and_noisy():
    t = table()
    hold = np.array([s == "holdout" for s in t.extra["split"]])
    rep = holdout_fit(t, hold)
    assert rep.train_rows == int((~hold).sum()) and rep.holdout_rows == int(hold.sum())
    assert rep.holdout_err_max < 1e-6 and len(rep.holdout_errors) == rep.holdout_rows
    assert rep.train.rows == rep.train_rows and rep.full.rows == len(hold)
    noisy = holdout_fit(table(noise=0.05), hold)
    assert 0 < noisy.holdout_err_median <= noisy.holdout_err_max < 0.2
    assert any("held-out" in line for line in noisy.lines())
    none = holdout_fit(t, np.zeros(len(hold), bool))
    assert none.holdout_rows == 0 and none.train is none.full


def test_subset_and_rel_errors_keep_rows_aligned():
    t = table(noise=0.1)
    mask = np.array([k == "decode" for k in t.extra["kind"]])
    s = subset(t, mask)
    assert set(s.extra["kind"]) == {"decode"} and len(s.iteration_s) == int(mask.sum())
    fp = FittedPredictor.from_table(t)
    assert rel_errors(fp, s) == pytest.approx(rel_errors(fp, t)[mask])


def test_center_is_a_low_quantile_and_spread():
    assert center([0.01]) == (0.01, 0.0)
    value, spread = center([0.010, 0.030, 0.011])     # halfway between the two fastest
    assert value == pytest.approx(0.0105) and spread == pytest.approx(0.02 / 0.011)
    assert center([0.010, 0.030, 0.011], q=0.5)[0] == 0.011
    with pytest.raises(ValueError):
        center([])
    with pytest.raises(ValueError, match="q=2"):
        center([1.0], q=2)
