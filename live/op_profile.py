"""Profile a model's layer operators with PyTorch on this machine's GPU (or CPU).

    python -m live.op_profile --model llama-2-7b --tp 1,2,4,8 --gpu-name h200 --out DIR

Run in an interpreter that has ``torch`` (it imports only ``torch``, the standard library
and :mod:`control_plane.perf.models`): on a GPU machine without vLLM this is how the
roofline's coefficients are measured (``sagellm calibrate --ops`` runs it). Writes, per
model, files in the column format of Vidur's public profiles (so ``sagellm.perf_fit``
reads both alike), times in milliseconds per call:

- ``mlp__<gpu>__<org>__<model>.csv``: one row per (``num_tokens``,
  ``num_tensor_parallel_workers``) with ``time_stats.<op>.{min,max,mean,median,std}`` of
  one layer's ops on that GPU's shard: ``emb``, ``input_layernorm``, ``attn_pre_proj``,
  ``attn_rope``, ``attn_post_proj``, ``post_attention_layernorm``, ``mlp_up_proj``,
  ``mlp_act``, ``mlp_down_proj``, ``add``;
- ``attention__<gpu>__<org>__<model>.csv``: one row per attention shape: a prefill of
  ``prefill_chunk_size`` tokens (causal, fresh prompt, ``is_prefill`` 1, op
  ``attn_prefill``) or a decode of ``batch_size`` sequences over ``kv_cache_size`` context
  tokens each (``attn_decode``), plus ``attn_kv_cache_save`` (writing the step's new K and
  V into a cache);
- ``moe__<gpu>__<org>__<model>.csv`` (MoE models, ``--parts moe``): one row per
  (``num_tokens``, ``num_tensor_parallel_workers``) with the MoE block's ops
  (:mod:`live.op_moe`): router, routing, the two grouped expert matmuls, activation,
  combine, and the whole block ``moe``;
- ``layer__<gpu>__<org>__<model>.csv``: one whole decoder layer (the ops above chained,
  attention included) for a batch of ``prefill_tokens`` (one prompt) and ``decode_seqs``
  sequences at ``decode_context`` tokens each: what an iteration is made of, to check the
  iteration-time predictor end to end (a MoE model's layer has its MoE block);
- ``meta.json``: device, torch and CUDA versions, timing method, the command, and a
  measured bf16 matmul rate and device-to-device copy bandwidth.

Kernels are PyTorch's own (cuBLAS matmuls, ``F.rms_norm``, ``F.silu``, flash attention
through ``F.scaled_dot_product_attention``); RoPE and the gated activation are eager
element-wise ops unless ``--fuse`` compiles each into one kernel, as vLLM's own are. A
decode has one query row per sequence with GQA heads folded (``enable_gqa``), so flash
attention splits the context over thread blocks (flash-decoding). Weights are random
bf16. Kernels: :mod:`live.op_kernels`; timing: :mod:`live.op_timer`.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import functools
import json
import sys
import time
import traceback
from pathlib import Path

import torch

from control_plane.perf.models import ModelSpec, get_model
from live.op_kernels import (
    Shard,
    Weights,
    decode_attention,
    fuse_elementwise,
    kv_copies,
    kv_save,
    layer_forward,
    mlp_closures,
    prefill_attention,
    rand,
)
from live.op_moe import MoeShard, MoeWeights, moe_block, moe_closures
from live.op_timer import time_op

__all__ = ["HF_IDS", "main", "profile_attention", "profile_layer", "profile_mlp", "profile_moe"]

HF_IDS = {"llama-2-7b": "meta-llama/Llama-2-7b-hf", "llama-2-70b": "meta-llama/Llama-2-70b-hf",
          "llama-3-8b": "meta-llama/Meta-Llama-3-8B", "llama-3-70b": "meta-llama/Meta-Llama-3-70B",
          "codellama-34b": "codellama/CodeLlama-34b-Instruct-hf", "qwen2.5-7b": "Qwen/Qwen2.5-7B",
          "mixtral-8x7b": "mistralai/Mixtral-8x7B-v0.1", "qwen3-30b-a3b": "Qwen/Qwen3-30B-A3B"}
TOKENS = (1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
PREFILL = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
DECODE_BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256)
DECODE_CONTEXT = (128, 512, 1024, 2048, 4096, 8192)
LAYER_BATCHES = ((0, 1, 512), (0, 8, 512), (0, 32, 1024), (0, 128, 1024), (0, 64, 4096),
                 (0, 256, 2048), (128, 0, 0), (512, 0, 0), (2048, 0, 0), (4096, 0, 0),
                 (256, 32, 1024), (1024, 64, 1024), (2048, 128, 2048))
KV_CAP_BYTES = 8 * 2**30
PARTS = ("mlp", "attention", "layer", "moe")


def _row(stats_by_op: dict[str, dict[str, float]]) -> dict[str, float]:
    return {f"time_stats.{op}.{k}": v for op, st in stats_by_op.items() for k, v in st.items()}


def profile_mlp(model: ModelSpec, tps, tokens, device, dtype, reps: int, inner: int,
                deadline: float) -> list[dict]:
    rows = []
    for tp in tps:
        w = Weights(Shard(model, tp), device, dtype, inner, seed=tp)
        for t in tokens:
            if time.monotonic() > deadline:
                return rows
            st = {op: time_op(fns, device, reps, inner).stats()
                  for op, fns in mlp_closures(w, t).items()}
            rows.append({"n_head": model.heads, "n_kv_head": model.kv_heads, "n_embd": model.hidden,
                         "n_expanded_embd": model.intermediate, "vocab_size": model.vocab,
                         "use_gated_mlp": True, "num_tokens": t,
                         "num_tensor_parallel_workers": tp} | _row(st))
        del w
    return rows


def profile_moe(model: ModelSpec, tps, tokens, device, dtype, reps: int, inner: int,
                deadline: float) -> list[dict]:
    """The MoE block's ops (:data:`live.op_moe.MOE_OPS`) per (tokens, tp); a dense model
    has none."""
    rows = []
    if not model.is_moe:
        return rows
    for tp in tps:
        w = MoeWeights(MoeShard(model, tp), device, dtype, inner, seed=100 + tp)
        for t in tokens:
            if time.monotonic() > deadline:
                return rows
            timings = {op: time_op(fns, device, reps, inner)
                       for op, fns in moe_closures(w, t).items()}
            rows.append({"model": model.name, "n_embd": model.hidden,
                         "n_expanded_embd": model.intermediate, "n_experts": model.n_experts,
                         "experts_per_token": model.experts_per_token, "num_tokens": t,
                         "num_tensor_parallel_workers": tp,
                         "cuda_graph": all(x.graph for x in timings.values())}
                        | _row({op: x.stats() for op, x in timings.items()}))
        del w
    return rows


def profile_attention(model: ModelSpec, tps, prefill, batches, contexts, device, dtype,
                      reps: int, inner: int, deadline: float) -> list[dict]:
    rows = []
    gen = torch.Generator(device=device).manual_seed(7)
    for tp in tps:
        s = Shard(model, tp)
        base = {"n_embd": model.hidden, "n_q_head": model.heads, "n_kv_head": model.kv_heads,
                "num_tensor_parallel_workers": tp}
        for c in prefill:
            if time.monotonic() > deadline:
                return rows
            q = rand(gen, dtype, 1, s.hq, c, s.d)
            k, v = rand(gen, dtype, 1, s.kvg, c, s.d), rand(gen, dtype, 1, s.kvg, c, s.d)
            fn = functools.partial(prefill_attention, q, k, v)
            st = {"attn_prefill": time_op([fn], device, reps, inner).stats(),
                  "attn_kv_cache_save": time_op([kv_save(s, c, dtype, gen)], device,
                                                reps, inner).stats()}
            rows.append(base | {"batch_size": 1, "prefill_chunk_size": c, "kv_cache_size": 0,
                                "is_prefill": 1} | _row(st))
        for b in batches:
            for L in contexts:
                if time.monotonic() > deadline:
                    return rows
                if s.kv_bytes(b * L, dtype) > KV_CAP_BYTES:
                    continue
                q = rand(gen, dtype, b, s.hq, 1, s.d)
                fns = [lambda q=q, k=k, v=v: decode_attention(q, k, v)
                       for k, v in kv_copies(s, b, L, dtype, inner, gen)]
                st = {"attn_decode": time_op(fns, device, reps, inner).stats(),
                      "attn_kv_cache_save": time_op([kv_save(s, b, dtype, gen)],
                                                    device, reps, inner).stats()}
                rows.append(base | {"batch_size": b, "prefill_chunk_size": 0, "kv_cache_size": L,
                                    "is_prefill": 0} | _row(st))
                del fns
    return rows


def profile_layer(model: ModelSpec, tps, batches, device, dtype, reps: int, inner: int,
                  deadline: float) -> list[dict]:
    rows = []
    gen = torch.Generator(device=device).manual_seed(11)
    for tp in tps:
        s = Shard(model, tp)
        mlp = None
        if model.is_moe:  # the MoE block in place of the dense MLP
            mw = MoeWeights(MoeShard(model, tp), device, dtype, 1, seed=200 + tp)
            mlp = functools.partial(moe_block, gate=mw.gate, w13=mw.experts[0][0],
                                    w2=mw.experts[0][1], k=model.experts_per_token)
        for p, seqs, ctx in batches:
            if time.monotonic() > deadline:
                return rows
            fn = layer_forward(s, p, seqs, ctx, dtype, gen, mlp)
            st = {"layer": time_op([fn], device, reps, inner).stats()}
            rows.append({"model": model.name, "num_tensor_parallel_workers": tp,
                         "prefill_tokens": p, "decode_seqs": seqs, "decode_context": ctx}
                        | _row(st))
            del fn
    return rows


def write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        fields = list(dict.fromkeys(k for row in rows for k in row))
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)


def _device_facts(device: torch.device, dtype) -> dict:
    facts: dict = {"torch": torch.__version__, "device_type": device.type}
    if device.type != "cuda":
        return facts
    p = torch.cuda.get_device_properties(device)
    facts |= {"device_name": p.name, "cuda": torch.version.cuda,
              "multiprocessors": p.multi_processor_count, "memory_bytes": p.total_memory}
    n = 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device,
                                                                      dtype=dtype)
    ms = time_op([lambda: a @ b], device, reps=5, inner=5).stats()["median"]
    facts["matmul_bf16_flops_per_s"] = 2 * n ** 3 / (ms * 1e-3)
    src = torch.empty(2**30, device=device, dtype=torch.uint8)
    dst = torch.empty_like(src)
    ms = time_op([lambda: dst.copy_(src)], device, reps=5, inner=5).stats()["median"]
    facts["copy_bytes_per_s"] = 2 * src.numel() / (ms * 1e-3)  # bytes read + written
    torch.cuda.empty_cache()
    facts["flash_attention"] = _flash_support(device, dtype)
    return facts


def _flash_support(device: torch.device, dtype) -> dict[str, bool]:
    """Whether flash attention itself runs the decode and the GQA prefill shapes (else
    PyTorch picks a slower kernel for them)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    gen = torch.Generator(device=device).manual_seed(0)
    cases = {"decode_gqa": lambda: decode_attention(
                 rand(gen, dtype, 2, 32, 1, 128), rand(gen, dtype, 2, 8, 256, 128),
                 rand(gen, dtype, 2, 8, 256, 128)),
             "prefill_gqa": lambda: prefill_attention(
                 rand(gen, dtype, 1, 32, 256, 128), rand(gen, dtype, 1, 8, 256, 128),
                 rand(gen, dtype, 1, 8, 256, 128))}
    out = {}
    for name, fn in cases.items():
        try:
            with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
                fn()
            out[name] = True
        except RuntimeError:
            out[name] = False
    return out


def gpu_family(device: torch.device) -> str:
    """``h100``, ``h200``, ``a100``, ... from the device's name; ``cpu`` on a CPU."""
    if device.type != "cuda":
        return "cpu"
    return family_of(torch.cuda.get_device_name(device))


def family_of(device_name: str) -> str:
    """The built-in GPU name for a CUDA device name (``NVIDIA H200`` -> ``h200``); PCIe and
    NVL variants, whose memory bandwidth differs from the SXM part's spec, and unknown GPUs
    keep their full name (``nvidia-h100-pcie``), which ``sagellm.perf_fit`` does not fit
    until a GPUSpec of that name exists."""
    name = device_name.lower()
    full = "-".join("".join(c if c.isalnum() else " " for c in name).split())
    if "pcie" in name or "nvl" in name:
        return full
    for known in ("h200", "h100", "a100", "l40s"):
        if known in name:
            return known
    return full


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", required=True,
                    help="built-in model name or a Hugging Face config.json (repeatable)")
    ap.add_argument("--tp", default="1,2,4,8", help="tensor-parallel shards to profile")
    ap.add_argument("--gpu-name", default="auto",
                    help="GPU name in the file names (default: from the device, e.g. h200)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tokens", default=",".join(map(str, TOKENS)))
    ap.add_argument("--prefill", default=",".join(map(str, PREFILL)))
    ap.add_argument("--decode-batch", default=",".join(map(str, DECODE_BATCH)))
    ap.add_argument("--decode-context", default=",".join(map(str, DECODE_CONTEXT)))
    ap.add_argument("--layer-tp", default="1", help="shards of the whole-layer check")
    ap.add_argument("--parts", default="mlp,attention,layer",
                    help="what to measure: any of mlp, attention, layer, moe (MoE models)")
    ap.add_argument("--fuse", action="store_true",
                    help="torch.compile RoPE and the gated activation into fused kernels")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--inner", type=int, default=10)
    ap.add_argument("--budget-s", type=float, default=1e9,
                    help="stop starting new measurements after this many seconds")
    args = ap.parse_args(argv)
    device, dtype = torch.device(args.device), torch.bfloat16
    if args.gpu_name == "auto":
        args.gpu_name = gpu_family(device)
    if args.fuse:
        fuse_elementwise()
    start = time.monotonic()
    deadline = start + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    tps = _ints(args.tp)
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    bad = [p for p in wanted if p not in PARTS]
    if bad or not wanted:
        ap.error(f"--parts {args.parts!r}: expected a comma-separated subset of "
                 f"{', '.join(PARTS)}")
    meta = {"command": " ".join([Path(sys.executable).name, "-m", "live.op_profile",
                                 *(argv if argv is not None else sys.argv[1:])]),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "gpu_name": args.gpu_name, "dtype": "bfloat16", "reps": args.reps,
            "inner": args.inner, "units": "milliseconds per call",
            "elementwise": "rope and gated activation fused by torch.compile" if args.fuse
                           else "rope and gated activation as eager PyTorch ops",
            "moe_kernels": "torch._grouped_mm for the expert matmuls" if "moe" in wanted
                           else None,
            "timing": "CUDA graph of `inner` calls rotating weight copies > 256 MiB, "
                      "CUDA events per replay" if device.type == "cuda"
                      else "perf_counter over `inner` calls",
            "device": _device_facts(device, dtype), "files": {}, "errors": [],
            "complete": True}
    for name in args.model:
        model = get_model(name)
        hf = HF_IDS.get(model.name, f"sagellm/{model.name}")
        stem = f"{args.gpu_name}__{hf.replace('/', '__')}"
        runs = {"mlp": lambda m=model: profile_mlp(m, tps, _ints(args.tokens), device, dtype,
                                                   args.reps, args.inner, deadline),
                "attention": lambda m=model: profile_attention(
                    m, tps, _ints(args.prefill), _ints(args.decode_batch),
                    _ints(args.decode_context), device, dtype, args.reps, args.inner, deadline),
                "moe": lambda m=model: profile_moe(m, tps, _ints(args.tokens), device, dtype,
                                                   args.reps, args.inner, deadline),
                "layer": lambda m=model: profile_layer(m, _ints(args.layer_tp), LAYER_BATCHES,
                                                       device, dtype, args.reps, args.inner,
                                                       deadline)}
        parts = [(k, runs[k]) for k in wanted]
        for kind, run in parts:
            t0 = time.monotonic()
            try:
                rows = run()
            except Exception as exc:  # keep the other parts' rows; the error goes in meta
                traceback.print_exc()
                meta["errors"].append(f"{model.name} {kind}: {type(exc).__name__}: {exc}")
                meta["complete"] = False
                rows = []
            if time.monotonic() > deadline:
                meta["complete"] = False
            if rows:
                path = args.out / f"{kind}__{stem}.csv"
                write_csv(path, rows)
                meta["files"][path.name] = len(rows)
            print(f"{model.name} {kind}: {len(rows)} rows in {time.monotonic() - t0:.1f} s",
                  flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
    meta["wall_s"] = round(time.monotonic() - start, 1)
    (args.out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(json.dumps(meta["device"]), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
