"""OpenAI request bodies: validation, the control plane's estimates, and what is forwarded.

Validation covers what the gateway must understand; every other field goes to the engine
untouched (vLLM validates the rest). A bad body raises :class:`BodyError` naming the field.

Estimates (no tokenizer in the gateway):

- prompt tokens: a prompt given as token ids counts exactly; text counts
  ``ceil(characters / chars_per_token)`` (default 4 characters per token, the usual
  figure for English with BPE tokenizers), and a chat adds 4 tokens per message for the
  template. A client that knows the count sends ``x-prompt-tokens`` instead.
- output tokens: ``x-output-tokens`` when given; the cap is the body's ``max_tokens``
  (chat: ``max_completion_tokens`` first), else ``default_max_tokens`` (only for the
  estimate; nothing is added to the body); ``n`` > 1 and batched prompts are not
  multiplied in. Records carry the engine's real counts.
- prefix hashes for prefix-aware routing: token-id prompts use
  :func:`control_plane.prefix.block_hashes`; text is cut into blocks of
  ``prefix_block_chars`` characters (default 64, about 16 tokens), each hashed with the
  previous block's hash, so equal hashes mean equal text up to that block. Python's string
  hash is salted per process: the hashes index this gateway's own routing state only.

Forwarded body: the client's bytes, with at most two fields appended before the closing
brace (JSON parsers keep the last of duplicate keys): ``priority`` when the gateway passes
priorities down to vLLM, and ``stream_options`` with ``include_usage: true`` for streams
(so token counts come from usage; the usage chunk is hidden from a client that did not
ask for it). No re-serialisation of the client's JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from control_plane.prefix import block_hashes

__all__ = ["CHAT", "COMPLETIONS", "BodyError", "ParsedBody", "parse_body", "prompt_size"]

COMPLETIONS = "completions"
CHAT = "chat"
_MESSAGE_OVERHEAD_TOKENS = 4


class BodyError(ValueError):
    """An invalid API request body; ``param`` names the field (None: the whole body)."""

    def __init__(self, param: str | None, message: str) -> None:
        self.param = param
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class ParsedBody:
    """What the gateway needs from a request body, and the bytes to forward."""

    kind: str  # COMPLETIONS or CHAT
    model: str
    stream: bool
    prompt_tokens: int  # estimate (or exact for token-id prompts)
    max_tokens: int | None  # the client's cap, None when absent
    prefix_hashes: tuple[int, ...]
    forward: bytes  # the body sent to the engine
    hide_usage: bool  # the client did not ask for the usage chunk (the gateway did)


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _text_hashes(text: str, block_chars: int, max_blocks: int) -> tuple[int, ...]:
    n = min(len(text) // block_chars, max_blocks)
    h = 0x5A6E_11F0_C0DE_0002
    out = []
    for i in range(n):
        h = hash((h, text[i * block_chars:(i + 1) * block_chars]))
        out.append(h)
    return tuple(out)


def _content_text(content: object, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = []
        for k, part in enumerate(content):
            if not isinstance(part, dict):
                raise BodyError(f"{where}[{k}]", f"{where}[{k}] must be an object")
            text = part.get("text")
            if isinstance(text, str):
                parts.append(text)
        return "".join(parts)
    raise BodyError(where, f"{where} must be a string, a list of content parts or null")


def _max_tokens(body: dict, names: tuple[str, ...]) -> int | None:
    for name in names:
        v = body.get(name)
        if v is None:
            continue
        if not _is_int(v) or v < 1:
            raise BodyError(name, f"{name} must be an integer >= 1, got {v!r}")
        return v
    return None


def parse_body(raw: bytes, kind: str, *, chars_per_token: float = 4.0,
               prefix_block_chars: int = 64, max_prefix_blocks: int = 512,
               priority: int | None = None) -> ParsedBody:
    """Validate ``raw`` (an OpenAI completions or chat completions body) and prepare the
    bytes to forward; ``priority`` not None is passed down to vLLM in the body."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BodyError(None, f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BodyError(None, f"request body must be a JSON object, got "
                        f"{type(body).__name__}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BodyError("model", "model is required (a non-empty string)" if model is None
                        else f"model must be a non-empty string, got {model!r}")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise BodyError("stream", f"stream must be a boolean, got {stream!r}")
    opts = body.get("stream_options")
    if opts is not None and not isinstance(opts, dict):
        raise BodyError("stream_options", f"stream_options must be an object, got {opts!r}")
    n = body.get("n")
    if n is not None and (not _is_int(n) or n < 1):
        raise BodyError("n", f"n must be an integer >= 1, got {n!r}")

    if kind == COMPLETIONS:
        prompt_tokens, hashes = prompt_size(body.get("prompt"), chars_per_token,
                                            prefix_block_chars, max_prefix_blocks)
        max_tokens = _max_tokens(body, ("max_tokens",))
    elif kind == CHAT:
        prompt_tokens, hashes = _messages(body.get("messages"), chars_per_token,
                                          prefix_block_chars, max_prefix_blocks)
        max_tokens = _max_tokens(body, ("max_completion_tokens", "max_tokens"))
    else:
        raise ValueError(f"unknown request kind {kind!r}")

    extra = []
    if priority is not None:
        extra.append(f'"priority":{int(priority)}')
    hide_usage = False
    if stream and not (opts and opts.get("include_usage") is True):
        hide_usage = True
        merged = dict(opts or {})
        merged["include_usage"] = True
        extra.append('"stream_options":' + json.dumps(merged, separators=(",", ":")))
    forward = raw
    if extra:
        end = raw.rstrip()
        if end.endswith(b"}") and len(body):
            forward = end[:-1] + b"," + ",".join(extra).encode() + b"}"
        else:  # an encoding other than UTF-8: re-serialise
            if priority is not None:
                body["priority"] = int(priority)
            if hide_usage:
                body["stream_options"] = merged
            forward = json.dumps(body).encode()
    return ParsedBody(kind, model, stream, prompt_tokens, max_tokens, hashes, forward,
                      hide_usage)


def prompt_size(prompt: object, cpt: float, block: int, max_blocks: int
                ) -> tuple[int, tuple[int, ...]]:
    """(prompt tokens, prefix hashes) of a completions ``prompt`` as :func:`parse_body`
    sizes it (text: ``cpt`` characters a token, hashed per ``block`` characters; token ids
    per 16; at most ``max_blocks`` blocks); BodyError naming ``prompt``."""
    if prompt is None:
        raise BodyError("prompt", "prompt is required")
    if isinstance(prompt, str):
        if not prompt:
            raise BodyError("prompt", "prompt must not be empty")
        return max(1, math.ceil(len(prompt) / cpt)), _text_hashes(prompt, block, max_blocks)
    if isinstance(prompt, list) and prompt:
        first = prompt[0]
        if _is_int(first):
            if not all(_is_int(t) for t in prompt):
                raise BodyError("prompt", "prompt must be a string, a list of strings, a list "
                                "of token ids or a list of token-id lists")
            return len(prompt), block_hashes(prompt[: max_blocks * 16])
        if all(isinstance(p, str) for p in prompt):
            total = sum(math.ceil(len(p) / cpt) for p in prompt)
            return max(1, total), _text_hashes(prompt[0], block, max_blocks)
        if all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in prompt):
            return sum(len(p) for p in prompt), block_hashes(first[: max_blocks * 16])
    raise BodyError("prompt", "prompt must be a non-empty string, a list of strings, a list "
                    "of token ids or a list of token-id lists")


def _messages(messages: object, cpt: float, block: int, max_blocks: int
              ) -> tuple[int, tuple[int, ...]]:
    if messages is None:
        raise BodyError("messages", "messages is required")
    if not isinstance(messages, list) or not messages:
        raise BodyError("messages", "messages must be a non-empty list of messages")
    texts = []
    for k, m in enumerate(messages):
        where = f"messages[{k}]"
        if not isinstance(m, dict):
            raise BodyError(where, f"{where} must be an object")
        role = m.get("role")
        if not isinstance(role, str) or not role:
            raise BodyError(f"{where}.role", f"{where}.role must be a non-empty string")
        texts.append(role)
        texts.append("\x1e")
        texts.append(_content_text(m.get("content"), f"{where}.content"))
        texts.append("\x1f")
    text = "".join(texts)
    chars = len(text) - 2 * len(messages)  # less the separators
    tokens = math.ceil(chars / cpt) + _MESSAGE_OVERHEAD_TOKENS * len(messages)
    return max(1, tokens), _text_hashes(text, block, max_blocks)
