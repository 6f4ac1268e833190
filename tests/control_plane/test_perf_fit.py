"""The committed fitted coefficients: provenance, plausibility, and the predictor's error
against Vidur's operator profiles as recorded in the JSON (always checked), recomputed
from the profiles themselves when they are present (``../shared/profiles`` of the repo or
``$SAGELLM_PROFILES``)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest

from control_plane.perf import load_coefficients
from control_plane.perf.coefficients import BUILTIN_COEFFICIENTS

ROOT = Path(__file__).resolve().parents[2]
PROFILES = Path(os.environ.get("SAGELLM_PROFILES", ROOT.parent / "shared" / "profiles"))
HAVE_PROFILES = (PROFILES / "vidur").is_dir()
RAW = json.loads(BUILTIN_COEFFICIENTS.read_text())

# (median, p90) ceilings of |predicted / measured - 1| per op group
THRESHOLDS = {"layer_sum": (0.10, 0.25), "gemm": (0.15, 0.30), "elementwise": (0.20, 0.35)}
NETWORK = (0.15, 0.35)


def test_provenance():
    assert "microsoft/vidur commit 7d47513363ec447a741ac5e47241580b47724fbf" in RAW["source"]
    assert "MIT License" in RAW["source"] and "data/profiling" in RAW["source"]
    dt.date.fromisoformat(RAW["fit_date"])
    assert RAW["train_models"] == ["Llama-2-7b-hf", "Llama-2-70b-hf"]


def test_coefficients_are_plausible():
    c = load_coefficients()
    assert set(c.families) == {"h100", "a100"}
    for fam in c.families.values():
        assert 0.3 < fam.gemm.eff_compute <= 1.0 and 0.3 < fam.gemm.eff_mem <= 1.0
        assert 1e-6 < fam.gemm.launch_s < 2e-5 and 1.0 <= fam.gemm.smooth_p < 4
        assert all(1e-7 < e.launch_s < 2e-5 for e in fam.elementwise.values())
        for kind in ("nvlink", "pcie"):
            for lc in fam.all_reduce[kind].values():
                assert 1e-6 < lc.alpha_s < 1e-4 and 0.2 < lc.eff <= 1.0
        assert fam.send_recv["inter_node"].bytes_per_s > 1e9
    # Hopper's NVLink 4 moves more bytes per second than Ampere's NVLink 3
    h, a = c.families["h100"].all_reduce["nvlink"][8], c.families["a100"].all_reduce["nvlink"][8]
    assert h.eff * 450e9 > a.eff * 300e9


def test_recorded_errors_are_below_thresholds():
    rows = RAW["errors"]
    groups = {(r["gpu"], r["group"], r["split"]) for r in rows}
    for gpu in ("h100", "a100"):
        for group in THRESHOLDS:
            assert {(gpu, group, "train"), (gpu, group, "held_out")} <= groups
    bad = []
    for r in rows:
        median, p90 = THRESHOLDS.get(r["group"], NETWORK)
        if r["median"] > median or r["p90"] > p90:
            bad.append(r)
    assert not bad, bad
    held = [r for r in rows if r["split"] == "held_out"]
    assert {m for r in held for m in r["models"]} == {
        "Meta-Llama-3-8B", "Meta-Llama-3-70B", "CodeLlama-34b-Instruct-hf"}


@pytest.mark.skipif(not HAVE_PROFILES, reason=f"Vidur profiles not found at {PROFILES} "
                    "(set SAGELLM_PROFILES); the JSON-recorded errors are checked above")
def test_errors_and_fit_reproduce_from_profiles():
    from sagellm.perf_fit import evaluate, fit, load_mlp, load_net

    recomputed = evaluate(load_coefficients(), load_mlp(PROFILES), load_net(PROFILES))
    key = lambda r: (r["gpu"], r["group"], r["split"])  # noqa: E731
    recorded = {key(r): r for r in RAW["errors"]}
    assert {key(r) for r in recomputed} == set(recorded)
    for r in recomputed:
        for stat in ("median", "p90", "max"):
            assert r[stat] == pytest.approx(recorded[key(r)][stat], rel=1e-3, abs=1e-5)
    refit = fit(PROFILES)
    for name, fam in refit["families"].items():
        for k, v in fam["gemm"].items():
            assert v == pytest.approx(RAW["families"][name]["gemm"][k], rel=1e-3)
