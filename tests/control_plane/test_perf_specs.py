"""GPU and model specs, Hugging Face config parsing, parallel configs and memory."""

from __future__ import annotations

import json

import pytest

from control_plane.errors import ConfigError, ValidationError
from control_plane.perf import (
    GPUS,
    MODELS,
    ParallelConfig,
    check_parallel,
    from_hf_config,
    get_gpu,
    get_model,
    kv_capacity_tokens,
    weights_bytes_per_gpu,
)


def test_gpu_registry_and_aliases():
    assert set(GPUS) == {"h100", "h200", "a100", "l40s"}
    assert get_gpu("H100") is get_gpu("h100-sxm") is GPUS["h100"]
    assert get_gpu("A100-80GB") is GPUS["a100"]
    assert GPUS["h100"].bf16_flops == 989.5e12 and GPUS["h200"].hbm_bytes_per_s == 4.8e12
    assert not GPUS["l40s"].has_nvlink and GPUS["h100"].has_nvlink
    assert GPUS["h200"].memory_bytes > GPUS["h100"].memory_bytes
    with pytest.raises(ConfigError, match=r"unknown GPU 'b200'.*a100, h100, h200, l40s"):
        get_gpu("b200")


# (name, total params, active params), published figures to about 0.5 %
@pytest.mark.parametrize(("name", "total", "active"), [
    ("llama-3-8b", 8.03e9, 8.03e9),
    ("llama-3-70b", 70.6e9, 70.6e9),
    ("mixtral-8x7b", 46.7e9, 12.9e9),
    # the model card's "3.3B activated" is truncated: attention 0.91B + 8 experts 1.81B +
    # embedding and LM head 0.62B per token
    ("qwen3-30b-a3b", 30.5e9, 3.35e9),
    ("qwen2.5-7b", 7.62e9, 7.62e9),
    ("llama-2-7b", 6.74e9, 6.74e9),
    ("llama-2-70b", 68.98e9, 68.98e9),
    ("codellama-34b", 33.74e9, 33.74e9),
])
def test_parameter_counts(name, total, active):
    m = MODELS[name]
    assert m.params == pytest.approx(total, rel=5e-3)
    assert m.active_params == pytest.approx(active, rel=5e-3)


def test_derived_model_figures():
    m = get_model("meta-llama/Meta-Llama-3-8B")
    assert m.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2 == 131072
    assert m.weight_bytes == 2 * m.params
    assert m.flops_per_token(0) == pytest.approx(2 * (m.params - m.vocab * m.hidden))
    assert m.flops_per_token(1000) - m.flops_per_token(0) == 4 * 32 * 32 * 128 * 1000
    assert MODELS["mixtral-8x7b"].is_moe and not m.is_moe
    with pytest.raises(ConfigError, match=r"unknown model 'gpt-5'.*llama-3-8b"):
        get_model("gpt-5")


LLAMA3_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "intermediate_size": 14336,
    "num_attention_heads": 32, "num_hidden_layers": 32, "num_key_value_heads": 8,
    "vocab_size": 128256, "torch_dtype": "bfloat16", "tie_word_embeddings": False,
}


def test_from_hf_config_matches_builtin(tmp_path):
    m = from_hf_config(LLAMA3_8B_CONFIG, name="llama-3-8b")
    assert m == MODELS["llama-3-8b"]
    folder = tmp_path / "Meta-Llama-3-8B"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(LLAMA3_8B_CONFIG))
    from_file = from_hf_config(folder)
    assert from_file.name == "Meta-Llama-3-8B" and from_file.params == m.params
    assert get_model(str(folder / "config.json")).params == m.params


def test_from_hf_config_moe_and_nested():
    mixtral = {**LLAMA3_8B_CONFIG, "vocab_size": 32000, "num_local_experts": 8,
               "num_experts_per_tok": 2, "architectures": ["MixtralForCausalLM"]}
    m = from_hf_config(mixtral, name="mixtral-8x7b")
    assert m == MODELS["mixtral-8x7b"]
    # Qwen-MoE configs give the expert width as moe_intermediate_size; their
    # intermediate_size is a dense MLP's, which these models do not have
    qwen3 = {"num_hidden_layers": 48, "hidden_size": 2048, "num_attention_heads": 32,
             "num_key_value_heads": 4, "head_dim": 128, "intermediate_size": 6144,
             "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
             "vocab_size": 151936, "torch_dtype": "bfloat16"}
    assert from_hf_config(qwen3, name="qwen3-30b-a3b") == MODELS["qwen3-30b-a3b"]
    nested = from_hf_config({"text_config": LLAMA3_8B_CONFIG, "head_dim": 128}, name="vlm")
    assert nested.params == MODELS["llama-3-8b"].params
    assert from_hf_config({**LLAMA3_8B_CONFIG, "torch_dtype": "float32"}).dtype_bytes == 4


def test_from_hf_config_errors_name_key_and_file(tmp_path):
    bad = dict(LLAMA3_8B_CONFIG)
    del bad["intermediate_size"]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"config\.json: missing key 'intermediate_size'"):
        from_hf_config(path)
    with pytest.raises(ConfigError, match="cannot read"):
        from_hf_config(tmp_path / "nope.json")
    with pytest.raises(ConfigError, match="torch_dtype 'int3'"):
        from_hf_config({**LLAMA3_8B_CONFIG, "torch_dtype": "int3"})
    with pytest.raises(ConfigError, match="kv_heads"):
        from_hf_config({**LLAMA3_8B_CONFIG, "num_key_value_heads": 5})


def test_parallel_config_validation():
    p = ParallelConfig(tp=4, pp=2, dp=3)
    assert p.gpus_per_replica == 8 and p.total_gpus == 24 and str(p) == "tp4-pp2-dp3"
    for kw, field in [({"tp": 0}, "tp"), ({"pp": 1.5}, "pp"), ({"dp": True}, "dp"),
                      ({"tp": 2, "ep": 4}, "ep")]:
        with pytest.raises(ValidationError, match=f"ParallelConfig.{field}"):
            ParallelConfig(**kw)
    ParallelConfig(tp=2, dp=2, ep=4)  # EP over TP and DP ranks


def test_check_parallel_model_rules():
    check_parallel(MODELS["llama-3-70b"], ParallelConfig(tp=8))
    check_parallel(MODELS["llama-3-8b"], ParallelConfig(tp=16, dp=1))  # kv heads replicated
    with pytest.raises(ValidationError, match="28 attention heads"):
        check_parallel(MODELS["qwen2.5-7b"], ParallelConfig(tp=8))
    with pytest.raises(ValidationError, match="not a MoE"):
        check_parallel(MODELS["llama-3-8b"], ParallelConfig(tp=2, ep=2))
    with pytest.raises(ValidationError, match="80 layers"):
        check_parallel(MODELS["llama-3-70b"], ParallelConfig(pp=81))


def test_llama3_70b_does_not_fit_one_80gb_gpu():
    m, h100 = MODELS["llama-3-70b"], GPUS["h100"]
    with pytest.raises(ValueError, match=r"weights 141\.1 GB \+ reserve 2\.0 GB > 80 GB x 0\.9"):
        kv_capacity_tokens(m, h100, ParallelConfig())
    assert kv_capacity_tokens(m, h100, ParallelConfig(tp=4)) > 0
    assert kv_capacity_tokens(m, GPUS["h200"], ParallelConfig(tp=2)) > 0


def test_memory_figures():
    m, h100 = MODELS["llama-3-8b"], GPUS["h100"]
    assert weights_bytes_per_gpu(m, ParallelConfig()) == m.weight_bytes
    w2 = weights_bytes_per_gpu(m, ParallelConfig(tp=2))
    assert w2 == pytest.approx(m.weight_bytes / 2, rel=1e-3)
    # PP: the fullest stage holds half the layers and one of the two vocab tables
    wp = weights_bytes_per_gpu(m, ParallelConfig(pp=2))
    table = m.vocab * m.hidden * m.dtype_bytes
    assert wp == pytest.approx((m.weight_bytes - 2 * table) / 2 + table, rel=1e-6)
    cap = kv_capacity_tokens(m, h100, ParallelConfig())
    expected = (80e9 * 0.9 - m.weight_bytes - 2e9) // m.kv_bytes_per_token
    assert cap == expected
    # TP 2 halves per-GPU KV bytes per token and frees weight memory: > 2x the tokens
    assert kv_capacity_tokens(m, h100, ParallelConfig(tp=2)) > 2 * cap
    mix = MODELS["mixtral-8x7b"]
    assert weights_bytes_per_gpu(mix, ParallelConfig(tp=2, ep=2)) == pytest.approx(
        weights_bytes_per_gpu(mix, ParallelConfig(tp=2)), rel=1e-3)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        kv_capacity_tokens(m, h100, ParallelConfig(), gpu_memory_utilization=1.5)
