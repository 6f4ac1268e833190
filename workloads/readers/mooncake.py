"""Mooncake traces (kvcache-ai/Mooncake, FAST'25 release): JSON Lines with prefix blocks.

Format (``.jsonl`` or ``.jsonl.gz``, one JSON object per line, sorted by time):

- ``timestamp``: arrival in milliseconds from the trace start (integer). Timestamps are
  quantized (about 3 s in the conversation trace), so equal values are normal.
- ``input_length``: prompt tokens. ``output_length``: output tokens.
- ``hash_ids``: remapped ids of the prompt's 512-token blocks, one per block, so
  ``len(hash_ids) == ceil(input_length / 512)`` (the last block can be partial). Equal
  leading ids between requests mean a shared, reusable KV prefix.

The ids are turned into prefix-chained hashes, as ``control_plane.prefix`` chains token
blocks: ``h_0 = hash((ROOT_HASH, id_0))``, ``h_i = hash((h_{i-1}, id_i))``, so each hash
identifies the whole prefix up to its block (hashes of int tuples are the same in every
process). ``block_size`` is 512 and, unlike ``control_plane.prefix.block_hashes``, the last
(possibly partial) block has a hash too, as in the trace. Requests carry no session ids.
Arrivals are seconds after the first row (``relative=True``) or ``timestamp / 1000``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from control_plane.prefix import ROOT_HASH
from workloads.readers._checks import Checks, finish, int_column, time_column
from workloads.readers._common import read_jsonl_rows, trace_name
from workloads.trace import Trace

__all__ = ["MOONCAKE_BLOCK_SIZE", "MOONCAKE_KEYS", "chain_block_ids", "read_mooncake"]

MOONCAKE_BLOCK_SIZE = 512
MOONCAKE_KEYS = ("timestamp", "input_length", "output_length", "hash_ids")


def chain_block_ids(ids: list[int], parent: int = ROOT_HASH) -> tuple[int, ...]:
    """Prefix-chained hashes of a request's block ids (see the module docstring)."""
    out = []
    h = parent
    for x in ids:
        h = hash((h, x))
        out.append(h)
    return tuple(out)


def read_mooncake(path: str | Path, *, skip_bad: bool = False, sort: bool = False,
                  relative: bool = True, zero_output: str = "error") -> Trace:
    """Read a Mooncake JSONL trace into a Trace with chained ``prefix_hashes``."""
    rows = read_jsonl_rows(path, MOONCAKE_KEYS, needed=MOONCAKE_KEYS)
    chk = Checks(rows, skip_bad)
    t, divisor = time_column(chk, "timestamp", "ms", relative=relative)
    prompt = int_column(chk, "input_length")
    output = int_column(chk, "output_length", zero_output=zero_output)
    bs = MOONCAKE_BLOCK_SIZE
    hashes = np.empty(rows.n, dtype=object)
    problems: dict[int, str] = {}
    for i, ids in enumerate(rows.columns["hash_ids"].tolist()):
        if ids is None:
            problems[i] = "missing value"
        elif not isinstance(ids, list) or not all(type(x) is int for x in ids):
            problems[i] = f"expected a list of integers, got {_short(ids)}"
        else:
            want = -(-int(prompt[i]) // bs)
            if len(ids) != want and not chk.bad[i]:
                problems[i] = (f"has {len(ids)} block ids, expected ceil(input_length "
                               f"{int(prompt[i])} / {bs}) = {want}")
            else:
                hashes[i] = chain_block_ids(ids)
    if problems:
        mask = np.zeros(rows.n, dtype=bool)
        mask[list(problems)] = True
        chk.flag("hash_ids", mask, problems.__getitem__)
    meta = {"format": "mooncake", "path": str(path)}
    return finish(chk, t, divisor, "timestamp",
                  {"prompt_tokens": prompt, "output_tokens": output, "prefix_hashes": hashes},
                  name=trace_name(path), sort=sort, relative=relative, meta=meta,
                  origin=lambda i: rows.columns["timestamp"].iloc[i], block_size=bs)


def _short(v: object) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:60] + "..."
