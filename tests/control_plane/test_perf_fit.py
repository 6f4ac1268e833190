"""The committed fitted coefficients: provenance, plausibility, and the predictor's error
against Vidur's operator profiles as recorded in the JSON (always checked), recomputed
from the profiles themselves when they are present (``../shared/profiles`` of the repo or
``$SAGELLM_PROFILES``). The H200 family is fitted on the project's own measured profiles
(``control_plane/perf/data/gpu_profiles/h200``), which are committed: its fit and errors
are recomputed here always."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from control_plane.perf import load_coefficients
from control_plane.perf.coefficients import BUILTIN_COEFFICIENTS
from sagellm.perf_fit import error_bound

ROOT = Path(__file__).resolve().parents[2]
PROFILES = Path(os.environ.get("SAGELLM_PROFILES", ROOT.parent / "shared" / "profiles"))
HAVE_PROFILES = (PROFILES / "vidur").is_dir()
RAW = json.loads(BUILTIN_COEFFICIENTS.read_text())


def test_provenance():
    assert "microsoft/vidur commit 7d47513363ec447a741ac5e47241580b47724fbf" in RAW["source"]
    assert "live/op_profile.py" in RAW["source"] and "gpu_profiles" in RAW["source"]
    assert "MIT License" in RAW["source"] and "data/profiling" in RAW["source"]
    dt.date.fromisoformat(RAW["fit_date"])
    assert RAW["train_models"] == ["Llama-2-7b-hf", "Llama-2-70b-hf"]


def test_coefficients_are_plausible():
    c = load_coefficients()
    assert set(c.families) == {"h100", "a100", "h200"}
    for fam in c.families.values():
        assert 0.3 < fam.gemm.eff_compute <= 1.0 and 0.3 < fam.gemm.eff_mem <= 1.0
        # smooth_p: the p-norm joining compute and memory time (p -> inf: the bare roofline's
        # max); fitted 1.3 on Vidur's eager A100 timings, 3.5 and 4.9 on the project's
        # CUDA-graph H200 and H100 ones (no launch gaps: a sharper knee)
        assert 1e-6 < fam.gemm.launch_s < 2e-5 and 1.0 <= fam.gemm.smooth_p < 8
        assert all(1e-7 < e.launch_s < 2e-5 for e in fam.elementwise.values())
        for kind in ("nvlink", "pcie"):
            for lc in fam.all_reduce[kind].values():
                assert 1e-6 < lc.alpha_s < 1e-4 and 0.2 < lc.eff <= 1.0
        assert fam.send_recv["inter_node"].bytes_per_s > 1e9
    # Hopper's NVLink 4 moves more bytes per second than Ampere's NVLink 3
    h, a = c.families["h100"].all_reduce["nvlink"][8], c.families["a100"].all_reduce["nvlink"][8]
    assert h.eff * 450e9 > a.eff * 300e9
    # the GPUs profiled with the project's tooling have fitted attention kernels, the A100
    # (Vidur's profiles only, which lack attention) has none; the H200's collectives are
    # the H100's
    assert c.families["a100"].attention is None
    for fam in ("h100", "h200"):
        at = c.families[fam].attention
        assert 0.3 < at.prefill_eff_compute <= 1.0 and 0.5 < at.decode_eff_mem <= 1.0
        assert 1e-6 < at.prefill_launch_s < 2e-5 and 1e-6 < at.decode_launch_s < 2e-5
    # the H200 moves KV at a higher rate than the H100 (4.8 against 3.35 TB/s nominal)
    h100, h200 = c.families["h100"].attention, c.families["h200"].attention
    assert h200.decode_eff_mem * 4.8 > h100.decode_eff_mem * 3.35
    assert c.families["h200"].all_reduce == c.families["h100"].all_reduce
    assert RAW["families"]["h200"]["network_from"] == "h100"


def test_recorded_errors_are_below_thresholds():
    rows = RAW["errors"]
    groups = {(r["gpu"], r["coeffs"], r["group"], r["split"]) for r in rows}
    for gpu in ("h100", "a100", "h200"):
        for group in ("layer_sum", "gemm", "elementwise"):
            assert {(gpu, gpu, group, "train"), (gpu, gpu, group, "held_out")} <= groups
    for gpu in ("h100", "h200"):
        for group in ("attn_prefill", "attn_decode", "attn_kv_cache_save", "layer"):
            assert {(gpu, gpu, group, "train"), (gpu, gpu, group, "held_out")} <= groups
    own = [r for r in rows if r["coeffs"] == r["gpu"]]
    bad = [r for r in own if r["median"] > error_bound(r["gpu"], r["group"])[0]
           or r["p90"] > error_bound(r["gpu"], r["group"])[1]]
    assert not bad, bad
    held = [r for r in rows if r["split"] == "held_out"]
    assert {m for r in held for m in r["models"]} == {
        "Meta-Llama-3-8B", "Meta-Llama-3-70B", "CodeLlama-34b-Instruct-hf",
        "Qwen3-30B-A3B"}  # the last: MoE groups, fitted on Mixtral-8x7B


def test_h200_own_fit_beats_the_borrowed_h100_coefficients():
    """Before it was profiled, the H200 was priced with the H100's coefficients; on the
    measured H200 whole layers and op sums its own fit must be closer."""
    by = {(r["gpu"], r["coeffs"], r["group"], r["split"]): r for r in RAW["errors"]}
    for group in ("layer", "layer_sum"):
        for split in ("train", "held_out"):
            own, borrowed = by[("h200", "h200", group, split)], by[("h200", "h100", group, split)]
            assert own["median"] < borrowed["median"], (group, split)


def test_measured_h200_and_h100_fits_and_errors_reproduce():
    """Refit the H200 and H100 families from the committed profiles (no Vidur files needed)
    and recompute their errors: both match the JSON."""
    from control_plane.perf.hardware import get_gpu
    from sagellm.perf_fit import TRAIN_MODELS, fit_compute, load_mlp
    from sagellm.perf_fit_measured import MEASURED_PROFILES, fit_attention, layer_errors, load_kind

    mlp = load_mlp(ROOT / "no-vidur-profiles-here")  # the measured files alone
    assert sorted(m[0] for m in mlp) == ["h100"] * 5 + ["h200"] * 5
    for fam in ("h100", "h200"):
        train = [(spec, d) for g, name, spec, d in mlp if g == fam and name in TRAIN_MODELS]
        compute = fit_compute(get_gpu(fam), train)
        for k, v in compute["gemm"].items():
            assert v == pytest.approx(RAW["families"][fam]["gemm"][k], rel=1e-3)
        frames = [d for g, name, d in load_kind(MEASURED_PROFILES, "attention")
                  if g == fam and name in TRAIN_MODELS]
        att = fit_attention(frames, fam, RAW["attention_causal_factor"])
        for kind in ("prefill", "decode"):
            for k, v in att["attention"][kind].items():
                assert v == pytest.approx(RAW["families"][fam]["attention"][kind][k], rel=1e-3)
    recomputed = layer_errors(load_coefficients(), load_kind(MEASURED_PROFILES, "layer"),
                              TRAIN_MODELS)
    recorded = {(r["gpu"], r["coeffs"], r["group"], r["split"]): r for r in RAW["errors"]}
    assert {r["gpu"] for r in recomputed} == {"h100", "h200"}
    for r in recomputed:
        rec = recorded[(r["gpu"], r["gpu"], "layer", r["split"])]
        assert r["median"] == pytest.approx(rec["median"], rel=1e-3)


@pytest.mark.skipif(not HAVE_PROFILES, reason=f"Vidur profiles not found at {PROFILES} "
                    "(set SAGELLM_PROFILES); the JSON-recorded errors are checked above")
def test_errors_and_fit_reproduce_from_profiles():
    from sagellm.perf_fit import evaluate, fit, load_mlp, load_net

    recomputed = evaluate(load_coefficients(), load_mlp(PROFILES), load_net(PROFILES))
    key = lambda r: (r["gpu"], r["coeffs"], r["group"], r["split"])  # noqa: E731
    recorded = {key(r): r for r in RAW["errors"]}
    assert {key(r) for r in recomputed} == set(recorded)
    for r in recomputed:
        for stat in ("median", "p90", "max"):
            assert r[stat] == pytest.approx(recorded[key(r)][stat], rel=1e-3, abs=1e-5)
    refit = fit(PROFILES)
    for name, fam in refit["families"].items():
        for k, v in fam["gemm"].items():
            assert v == pytest.approx(RAW["families"][name]["gemm"][k], rel=1e-3)


def test_fit_without_vidurs_profiles_keeps_their_families(tmp_path):
    """On a GPU machine with only its own measurements (no ../shared/profiles), the fit
    must not fail: the Vidur-fitted families are kept as committed, the measured ones
    refitted; here that reproduces the committed file."""
    from sagellm.perf_fit import main

    out = tmp_path / "coeffs.json"
    assert main(["--profiles", str(tmp_path / "no-such-folder"), "--out", str(out)]) == 0
    refit = json.loads(out.read_text())
    assert refit["families"] == RAW["families"]
    assert sorted(map(json.dumps, refit["errors"])) == sorted(map(json.dumps, RAW["errors"]))
    with pytest.raises(FileNotFoundError, match="no measured <gpu>/mlp"):
        main(["--profiles", str(tmp_path / "none"), "--measured", str(tmp_path / "none"),
              "--out", str(out)])


def test_folders_that_are_not_fitted_are_named(tmp_path):
    """A measured folder named after no built-in GPU is not fitted, and perf_fit says so
    (silently dropping a user's profiles would look like a successful fit)."""
    from sagellm.perf_fit_measured import measured_families, skipped_folders

    (tmp_path / "h200").mkdir()
    (tmp_path / "h200" / "mlp__h200__x__y.csv.gz").write_bytes(b"")
    (tmp_path / "rtx-4090").mkdir()
    (tmp_path / "rtx-4090" / "mlp__rtx-4090__x__y.csv.gz").write_bytes(b"")
    (tmp_path / "notes").mkdir()  # no profiles in it: not worth a word
    assert measured_families(tmp_path) == ["h200"]
    assert [name for name, _ in skipped_folders(tmp_path)] == ["rtx-4090"]
    assert "add its GPUSpec" in skipped_folders(tmp_path)[0][1]


def test_moe_fit_reproduces_and_beats_dense_matmul_coefficients():
    """The grouped expert matmuls (``moe_gemm``) refit from the committed MoE profiles
    match the JSON; priced with them the held-out model's MoE block is several times
    closer to the measurement than priced with the dense matmul coefficients, which is why
    they exist; the H100 borrows them and says so."""
    import dataclasses

    from sagellm.perf_fit_measured import MEASURED_PROFILES, load_kind
    from sagellm.perf_fit_moe import MOE_TRAIN_MODELS, fit_moe_gemm, moe_errors

    rows = load_kind(MEASURED_PROFILES, "moe")
    assert sorted((g, name) for g, name, _ in rows) == [
        ("h200", "Mixtral-8x7B-v0.1"), ("h200", "Qwen3-30B-A3B")]
    fitted = fit_moe_gemm([d for _, name, d in rows if name in MOE_TRAIN_MODELS], "h200")
    for k, v in fitted.items():
        assert v == pytest.approx(RAW["families"]["h200"]["moe_gemm"][k], rel=1e-3)
    assert RAW["families"]["h100"]["moe_gemm"] == RAW["families"]["h200"]["moe_gemm"]
    assert RAW["families"]["h100"]["moe_from"] == "h200"
    assert "moe_gemm" not in RAW["families"]["a100"]

    coeffs = load_coefficients()
    own = {(e["group"], e["split"]): e for e in moe_errors(coeffs, rows)}
    recorded = {(r["group"], r["split"]): r for r in RAW["errors"]
                if r["gpu"] == "h200" and r["group"].startswith("moe_")}
    assert set(own) == set(recorded) == {(g, s) for g in ("moe_gemm", "moe_experts")
                                         for s in ("train", "held_out")}
    for key, e in own.items():
        assert e["median"] == pytest.approx(recorded[key]["median"], rel=1e-3)
    fams = dict(coeffs.families)
    fams["h200"] = dataclasses.replace(fams["h200"], moe_gemm=None)
    dense = {(e["group"], e["split"]): e
             for e in moe_errors(dataclasses.replace(coeffs, families=fams), rows)}
    for key in own:
        assert own[key]["median"] < dense[key]["median"] / 2, key
    # the dense coefficients price MoE experts too fast: that bias is what the fit removes
    assert dense[("moe_experts", "held_out")]["bias"] < -0.25
    assert abs(own[("moe_experts", "held_out")]["bias"]) < 0.05
