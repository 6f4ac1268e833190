"""Profile tables: format, fitted predictor, lookup replacing the roofline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from control_plane.errors import ConfigError
from control_plane.perf import (
    Batch,
    FittedPredictor,
    ParallelConfig,
    ProfileTable,
    RooflinePredictor,
    find_profile,
    predictor_for,
    read_profile,
    write_profile,
)

TRUE = (0.004, 6e-5, 1e-10, 2e-5, 3e-8)  # intercept, prefill tok, attn pair, seq, ctx token


def table(model="llama-3-8b", gpu="h100", tp=1, pp=1, coef=TRUE, noise=0.0) -> ProfileTable:
    rows = []
    for p in (0, 128, 512, 2048):
        for s in (0, 1, 16, 128):
            for ctx in ((0,) if s == 0 else (300, 2000)):
                if p or s:
                    rows.append((p, p * (p + 256), s, s * ctx))
    f = np.array(rows, float)
    y = coef[0] + f @ np.array(coef[1:])
    y = y * (1 + noise * np.cos(np.arange(len(y))))  # deterministic "noise"
    return ProfileTable(model, gpu, tp, pp, f, y, {"source": "synthetic test"})


def test_round_trip_and_exact_fit(tmp_path):
    path = tmp_path / "p.csv"
    write_profile(path, table())
    t = read_profile(path)
    assert (t.model, t.gpu, t.tp, t.pp) == ("llama-3-8b", "h100", 1, 1)
    assert t.meta["source"] == "synthetic test" and len(t.iteration_s) == 27
    fp = FittedPredictor.from_table(t)
    got = (fp.intercept_s, fp.per_prefill_token_s, fp.per_attention_pair_s,
           fp.per_decode_seq_s, fp.per_context_token_s)
    assert got == pytest.approx(TRUE, rel=1e-6)
    assert fp.fit_rel_err_max < 1e-9 and fp.rows == 27


def test_fit_is_non_negative_and_relative():
    # a feature that *reduces* time in the data gets 0, not a negative coefficient
    fp = FittedPredictor.from_table(table(coef=(0.004, 6e-5, -2e-9, 2e-5, 3e-8), noise=0.01))
    assert min(fp.intercept_s, fp.per_prefill_token_s, fp.per_attention_pair_s,
               fp.per_decode_seq_s, fp.per_context_token_s) >= 0
    assert fp.per_attention_pair_s == 0.0
    assert fp.fit_rel_err_median < 0.1


def test_fitted_decode_run_equals_sum():
    fp = FittedPredictor.from_table(table(noise=0.05))
    s = math.fsum(fp.iteration_s(Batch(decode_seqs=12, decode_context=4000 + 12 * i))
                  for i in range(300))
    assert fp.decode_run_s(12, 4000, 300) == pytest.approx(s, rel=1e-9)
    assert fp.iteration_s(Batch()) == 0.0


def test_read_errors_name_file_and_line(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("# model: llama-3-8b\n# gpu: h100\n# tp: 1\n"
                 "prefill_tokens,decode_seqs,iteration_s\n1,0,0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.csv: missing metadata line '# pp: \.\.\.'"):
        read_profile(p)
    p.write_text("# model: llama-3-8b\n# gpu: h100\n# tp: 1\n# pp: 1\n"
                 "prefill_tokens,decode_seqs,iteration_s\n1,0,0.1\n2,x,0.2\n")
    with pytest.raises(ConfigError, match=r"bad\.csv:7: bad row"):
        read_profile(p)
    p.write_text("# model: llama-3-8b\n# gpu: h100\n# tp: 1\n# pp: 1\nprefill_tokens,t\n")
    with pytest.raises(ConfigError, match=r"bad\.csv:5: missing column 'decode_seqs'"):
        read_profile(p)
    p.write_text("# model: llama-3-8b\n# gpu: h100\n# tp: 1\n# pp: 1\n"
                 "prefill_tokens,decode_seqs,iteration_s\n5,0,0\n")
    with pytest.raises(ConfigError, match=r"bad\.csv:6: values must be >= 0"):
        read_profile(p)


def test_profile_replaces_roofline_only_where_it_exists(tmp_path):
    write_profile(tmp_path / "a.csv", table(model="Meta-Llama-3-8B", gpu="H100-SXM", tp=2))
    (tmp_path / "sub").mkdir()
    write_profile(tmp_path / "sub" / "b.csv", table(model="qwen2.5-7b", gpu="a100"))
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")  # no metadata: ignored
    tp2 = ParallelConfig(tp=2)
    assert find_profile("llama-3-8b", "h100", tp2, tmp_path) == tmp_path / "a.csv"
    p = predictor_for("llama-3-8b", "h100", tp2, profiles_dir=tmp_path)
    assert isinstance(p, FittedPredictor) and p.tp == 2
    assert p.intercept_s == pytest.approx(TRUE[0])
    assert isinstance(predictor_for("qwen2.5-7b", "a100", profiles_dir=tmp_path), FittedPredictor)
    for args in (("llama-3-8b", "h100", ParallelConfig()), ("llama-3-8b", "h200", tp2)):
        assert isinstance(predictor_for(*args, profiles_dir=tmp_path), RooflinePredictor)
    assert isinstance(predictor_for("llama-3-8b", "h100"), RooflinePredictor)
    write_profile(tmp_path / "c.csv", table(tp=2))
    with pytest.raises(ConfigError, match="several profiles match"):
        find_profile("llama-3-8b", "h100", tp2, tmp_path)
