"""Transformer model specs (decoder-only, Llama-style: RMSNorm, RoPE, GQA, gated MLP, MoE).

Shapes come from each model's Hugging Face ``config.json`` (meta-llama/Meta-Llama-3-8B,
Meta-Llama-3-70B, Llama-2-7b-hf, Llama-2-70b-hf, codellama/CodeLlama-34b-hf,
Qwen/Qwen2.5-7B, mistralai/Mixtral-8x7B-v0.1); :func:`from_hf_config` reads any such file.

Parameter count (biases, e.g. Qwen's QKV bias, are ignored: < 0.01 %)::

    attention  = hidden * (heads + 2 kv_heads) * head_dim + heads * head_dim * hidden
    mlp        = 3 * hidden * intermediate                        (gate, up, down)
    per layer  = attention + n_experts * mlp + hidden * n_experts (router, MoE only)
                 + 2 * hidden                                     (two RMSNorms)
    params     = layers * per layer + vocab * hidden * (1 if tied else 2) + hidden

Active parameters replace ``n_experts`` by ``experts_per_token``. Forward FLOPs per token:
``2 * (active params - embedding table)`` for the matmuls plus ``4 * layers * heads *
head_dim * context`` for attention (QK^T and PV, 2 FLOPs per multiply-add).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from control_plane.errors import ConfigError, ValidationError

__all__ = ["MODELS", "ModelSpec", "from_hf_config", "get_model"]


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Shapes of one model. ``intermediate`` is the MLP width of one expert;
    ``dtype_bytes`` the bytes per weight and per KV element (2 = bf16/fp16)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    n_experts: int = 1
    experts_per_token: int = 1
    dtype_bytes: int = 2
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        for f in ("layers", "hidden", "heads", "kv_heads", "head_dim", "intermediate",
                  "vocab", "n_experts", "experts_per_token", "dtype_bytes"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValidationError("ModelSpec", f, v, "must be an integer >= 1")
        if self.heads % self.kv_heads:
            raise ValidationError("ModelSpec", "kv_heads", self.kv_heads,
                                  f"must divide heads={self.heads}")
        if self.experts_per_token > self.n_experts:
            raise ValidationError("ModelSpec", "experts_per_token", self.experts_per_token,
                                  f"must be <= n_experts={self.n_experts}")

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 1

    @property
    def attention_params_per_layer(self) -> int:
        d = self.head_dim
        return self.hidden * (self.heads + 2 * self.kv_heads) * d + self.heads * d * self.hidden

    @property
    def expert_params(self) -> int:
        """Parameters of one expert's gated MLP (the dense MLP when not MoE)."""
        return 3 * self.hidden * self.intermediate

    @property
    def embedding_params(self) -> int:
        """Input embedding plus LM head (shared when tied)."""
        return self.vocab * self.hidden * (1 if self.tie_embeddings else 2)

    def _params(self, experts: int) -> int:
        router = self.hidden * self.n_experts if self.is_moe else 0
        per_layer = (self.attention_params_per_layer + experts * self.expert_params
                     + router + 2 * self.hidden)
        return self.layers * per_layer + self.embedding_params + self.hidden

    @property
    def params(self) -> int:
        return self._params(self.n_experts)

    @property
    def active_params(self) -> int:
        """Parameters used per token (MoE: ``experts_per_token`` experts)."""
        return self._params(self.experts_per_token)

    @property
    def weight_bytes(self) -> int:
        return self.params * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes per token, all layers: 2 (K, V) * layers * kv_heads * head_dim * dtype."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    def flops_per_token(self, context: int = 0) -> float:
        """Forward FLOPs for one token attending over ``context`` tokens."""
        matmul = 2.0 * (self.active_params - self.vocab * self.hidden)
        return matmul + 4.0 * self.layers * self.heads * self.head_dim * context


MODELS: dict[str, ModelSpec] = {
    m.name: m for m in (
        ModelSpec("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256),
        ModelSpec("llama-3-70b", 80, 8192, 64, 8, 128, 28672, 128256),
        ModelSpec("qwen2.5-7b", 28, 3584, 28, 4, 128, 18944, 152064),
        ModelSpec("mixtral-8x7b", 32, 4096, 32, 8, 128, 14336, 32000, n_experts=8,
                  experts_per_token=2),
        ModelSpec("qwen3-30b-a3b", 48, 2048, 32, 4, 128, 768, 151936, n_experts=128,
                  experts_per_token=8),
        ModelSpec("llama-2-7b", 32, 4096, 32, 32, 128, 11008, 32000),
        ModelSpec("llama-2-70b", 80, 8192, 64, 8, 128, 28672, 32000),
        ModelSpec("codellama-34b", 48, 8192, 64, 8, 128, 22016, 32000),
    )
}

_ALIASES = {
    "meta-llama-3-8b": "llama-3-8b", "meta-llama/meta-llama-3-8b": "llama-3-8b",
    "llama3-8b": "llama-3-8b", "meta-llama/llama-3.1-8b": "llama-3-8b",
    "meta-llama-3-70b": "llama-3-70b", "meta-llama/meta-llama-3-70b": "llama-3-70b",
    "llama3-70b": "llama-3-70b",
    "qwen/qwen2.5-7b": "qwen2.5-7b", "qwen2.5-7b-instruct": "qwen2.5-7b",
    "mistralai/mixtral-8x7b-v0.1": "mixtral-8x7b", "mixtral-8x7b-v0.1": "mixtral-8x7b",
    "qwen/qwen3-30b-a3b": "qwen3-30b-a3b", "qwen3-30b-a3b-instruct-2507": "qwen3-30b-a3b",
    "llama-2-7b-hf": "llama-2-7b", "meta-llama/llama-2-7b-hf": "llama-2-7b",
    "llama-2-70b-hf": "llama-2-70b", "meta-llama/llama-2-70b-hf": "llama-2-70b",
    "codellama-34b-instruct-hf": "codellama-34b", "codellama/codellama-34b-hf": "codellama-34b",
}


def get_model(name: str | ModelSpec) -> ModelSpec:
    """The built-in spec for ``name`` (case-insensitive, common HF ids accepted); a path to
    a ``config.json`` (or its folder) is parsed with :func:`from_hf_config`."""
    if isinstance(name, ModelSpec):
        return name
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key in MODELS:
        return MODELS[key]
    p = Path(str(name))
    if p.suffix == ".json" or p.is_dir():
        return from_hf_config(p)
    raise ConfigError(f"unknown model {name!r}: known models are {', '.join(sorted(MODELS))}"
                      " (or give the path of a Hugging Face config.json)")


_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4,
                "float8_e4m3fn": 1, "int8": 1}


def from_hf_config(config: dict | str | Path, name: str | None = None) -> ModelSpec:
    """A ModelSpec from a Hugging Face ``config.json`` (a dict, a file, or its folder).

    Keys: ``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``,
    ``intermediate_size``, ``vocab_size`` (required); ``num_key_value_heads`` (default:
    heads), ``head_dim`` (default hidden / heads), ``num_local_experts`` or ``num_experts``
    and ``num_experts_per_tok`` (MoE; the expert width is ``moe_intermediate_size`` where the
    config has it, as Qwen-MoE's do, since their ``intermediate_size`` is a dense MLP's; shared
    experts are not modelled), ``torch_dtype`` (default bf16),
    ``tie_word_embeddings``. A multimodal config's ``text_config`` is used when present.
    """
    source = "config dict"
    if not isinstance(config, dict):
        path = Path(config)
        if path.is_dir():
            path = path / "config.json"
        source = str(path)
        try:
            config = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{source}: cannot read a Hugging Face config.json: {exc}") from exc
        if name is None:
            name = path.parent.name or path.stem
    if not isinstance(config, dict):
        raise ConfigError(f"{source}: expected a JSON object")
    if isinstance(config.get("text_config"), dict):
        config = {**config, **config["text_config"]}

    def need(key: str) -> int:
        if key not in config:
            raise ConfigError(f"{source}: missing key {key!r} (Hugging Face config.json)")
        v = config[key]
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{source}: key {key!r} = {v!r}: expected an integer")
        return v

    heads = need("num_attention_heads")
    hidden = need("hidden_size")
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    if dtype not in _DTYPE_BYTES:
        raise ConfigError(f"{source}: torch_dtype {dtype!r} not one of {sorted(_DTYPE_BYTES)}")
    n_experts = config.get("num_local_experts") or config.get("num_experts") or 1
    width = "moe_intermediate_size" if n_experts > 1 and "moe_intermediate_size" in config \
        else "intermediate_size"
    try:
        return ModelSpec(
            name=name or str(config.get("_name_or_path") or config.get("model_type") or "model"),
            layers=need("num_hidden_layers"), hidden=hidden, heads=heads,
            kv_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            intermediate=need(width), vocab=need("vocab_size"),
            n_experts=int(n_experts),
            experts_per_token=int(config.get("num_experts_per_tok") or 1) if n_experts > 1 else 1,
            dtype_bytes=_DTYPE_BYTES[dtype],
            tie_embeddings=bool(config.get("tie_word_embeddings", False)),
        )
    except ValidationError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
