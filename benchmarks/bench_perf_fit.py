"""Performance-model accuracy against GPU operator profiles (Vidur's and the project's own
H100/H200 ones), the project's profiler against Vidur's, and predictor speed.

Accuracy: relative error |predicted / measured - 1| of the committed coefficients
(``control_plane/perf/data/fitted_coefficients.json``) on every profile row, per GPU and
op group: ``gemm`` (each of a layer's 4 matmuls), ``elementwise`` (norms, RoPE, activation,
residual add), ``layer_sum`` (a layer's 9 non-attention ops summed, what an iteration
adds up), for the models the fit used (``train``: Llama-2-7B/70B) and the ones it did not
(``held_out``: Llama-3-8B/70B on A100, CodeLlama-34B and Llama-3-8B/70B on the H100 and
H200); and per collective, link
and GPU count for all-reduce and send/recv (``in_sample``). Read from the profiles when
present (``--profiles``, default ../shared/profiles of the repo), else the figures the
JSON recorded at fit time are printed (``"from": "recorded"``). The measured profiles
(``control_plane/perf/data/gpu_profiles``) add the attention kernels (``attn_prefill``,
``attn_decode``, ``attn_kv_cache_save``) and whole decoder layers (``layer``, the
predictor's ``layer_s``); ``coeffs`` names the family that priced the GPU (the H200 is also
priced with the H100's coefficients, as before it was profiled).

Profiler check (with Vidur's profiles present): the project's profiler
(``live/op_profile.py``) on an H100 against Vidur's H100 files, same models and shapes:
median over rows of ours / Vidur's per op, for the 4 matmuls summed and the 10 ops summed.

Speed: microseconds per ``iteration_s`` and ``decode_run_s`` call (median of 5 x 20,000
calls), the latter being what the simulator's decode fast-forward pays per run.

    python benchmarks/bench_perf_fit.py [--json] [--check] [--profiles DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from control_plane.perf import Batch, ParallelConfig, RooflinePredictor, load_coefficients  # noqa: E402
from control_plane.perf.coefficients import BUILTIN_COEFFICIENTS  # noqa: E402
from sagellm.perf_fit import error_bound  # noqa: E402

MATMULS = ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj")


def accuracy(profiles: Path) -> tuple[str, list[dict]]:
    if (profiles / "vidur").is_dir():
        from sagellm.perf_fit import evaluate, load_mlp, load_net
        return "profiles", evaluate(load_coefficients(), load_mlp(profiles), load_net(profiles))
    return "recorded", json.loads(BUILTIN_COEFFICIENTS.read_text())["errors"]


def profiler_vs_vidur(profiles: Path) -> dict:
    """ours / Vidur's on the H100 (see the module doc); {} without Vidur's files."""
    import pandas as pd

    from sagellm.perf_fit import LAYER_OPS
    from sagellm.perf_fit_measured import MEASURED_PROFILES
    out = {}
    for ours in sorted((MEASURED_PROFILES / "h100").glob("mlp__*.csv.gz")):
        theirs = profiles / "vidur" / ours.name
        if not theirs.is_file():
            continue
        m = pd.read_csv(ours).merge(pd.read_csv(theirs),
                                    on=["num_tokens", "num_tensor_parallel_workers"],
                                    suffixes=("", "_v"))

        def ratio(ops, m=m):
            a = sum(m[f"time_stats.{op}.median"] for op in ops)
            return round(float((a / sum(m[f"time_stats.{op}.median_v"] for op in ops)).median()), 3)
        out[ours.name.split("__")[-1][: -len(".csv.gz")]] = {
            "rows": len(m), "matmuls": ratio(MATMULS), "all_ops": ratio((*LAYER_OPS, "emb")),
            **{op: ratio((op,)) for op in (*LAYER_OPS, "emb")}}
    return out


def speed() -> dict:
    out = {}
    cases = {"llama-3-8b/h100/tp1": ("llama-3-8b", "h100", ParallelConfig()),
             "llama-3-70b/h100/tp4-pp2": ("llama-3-70b", "h100", ParallelConfig(tp=4, pp=2)),
             "mixtral-8x7b/h100/tp2": ("mixtral-8x7b", "h100", ParallelConfig(tp=2))}
    mixed = Batch(prefill_tokens=512, prefill_attention=512 * 1024, decode_seqs=63,
                  decode_context=63 * 1500)
    for name, (m, g, par) in cases.items():
        p = RooflinePredictor(m, g, par)
        n = 20_000
        it = [timeit.timeit(lambda p=p: p.iteration_s(mixed), number=n) / n for _ in range(5)]
        dr = [timeit.timeit(lambda p=p: p.decode_run_s(64, 64 * 1500, 200), number=n) / n
              for _ in range(5)]
        out[name] = {"iteration_s_us": round(statistics.median(it) * 1e6, 2),
                     "decode_run_s_us": round(statistics.median(dr) * 1e6, 2),
                     "decode_bs1_ms": round(p.iteration_s(Batch(decode_seqs=1,
                                                                decode_context=1000)) * 1e3, 3),
                     "prefill_2048_ms": round(p.iteration_s(
                         Batch(prefill_tokens=2048, prefill_attention=2048 ** 2)) * 1e3, 2)}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--check", action="store_true", help="exit 1 if an error exceeds its bound")
    ap.add_argument("--profiles", type=Path, default=ROOT.parent / "shared" / "profiles")
    args = ap.parse_args()
    source, errors = accuracy(args.profiles)
    failed = [e for e in errors if e.get("coeffs", e["gpu"]) == e["gpu"] and (
              e["median"] > error_bound(e["gpu"], e["group"])[0]
              or e["p90"] > error_bound(e["gpu"], e["group"])[1])]
    check = profiler_vs_vidur(args.profiles) if (args.profiles / "vidur").is_dir() else {}
    result = {"from": source, "errors": errors, "profiler_vs_vidur": check, "speed": speed(),
              "failed": len(failed)}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"relative error vs the operator profiles (from {source})")
        for e in errors:
            print(f"  {e['gpu']:5s} {e.get('coeffs', e['gpu']):5s} {e['group']:24s} "
                  f"{e['split']:9s} n={e['n']:6d}  "
                  f"median {e['median']:.3f}  p90 {e['p90']:.3f}  max {e['max']:.3f}")
        for name, c in check.items():
            print(f"  profiler / Vidur on H100, {name} ({c['rows']} rows): matmuls "
                  f"{c['matmuls']}, all ops {c['all_ops']}")
        for name, s in result["speed"].items():
            print(f"  {name:26s} iteration_s {s['iteration_s_us']:6.2f} us  decode_run_s "
                  f"{s['decode_run_s_us']:6.2f} us  decode bs1 {s['decode_bs1_ms']} ms  "
                  f"prefill 2048 {s['prefill_2048_ms']} ms")
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
