"""Trace readers: real workload files -> :class:`~workloads.trace.Trace` (or a length table).

Formats (details and sources in each module's docstring):

- ``azure``: Azure LLM inference traces 2023 / 2024, CSV ``TIMESTAMP, ContextTokens,
  GeneratedTokens`` (:func:`read_azure`).
- ``burstgpt``: BurstGPT CSV ``Timestamp, Model, Request tokens, Response tokens, Total
  tokens, Log Type`` (:func:`read_burstgpt`).
- ``mooncake``: Mooncake JSONL ``timestamp`` (ms), ``input_length``, ``output_length``,
  ``hash_ids`` (512-token blocks) (:func:`read_mooncake`).
- ``lengths``: length-only CSV, ``num_prefill_tokens, num_decode_tokens`` (ShareGPT, arXiv,
  BWB) or ``ContextTokens, GeneratedTokens`` (LMSYS) -> :class:`LengthTable`
  (:func:`read_lengths`).
- ``generic``: CSV / JSONL / Parquet with a column ``mapping`` (:func:`read_generic`).

Common behaviour: arrivals are seconds after the first row (``relative=False`` keeps the
file's clock; ``meta["origin"]`` is the first row's time as written); the Trace is named
after the file stem; ``meta`` has ``format``, ``path``, ``rows_read`` and
``skipped_bad_rows``.

- A malformed row (wrong field count, invalid JSON, missing / non-numeric / non-integer /
  negative / zero length, unparseable time, bad ``hash_ids``) raises
  :class:`~workloads.errors.TraceFormatError` naming file, line (1-based physical line as an
  editor shows it: CSV header = line 1, blank lines counted, ``.gz`` = decompressed lines;
  Parquet: row number) and field, quoting the value. ``skip_bad=True`` drops every such row
  instead: ``meta["skipped_bad_rows"]`` counts them, ``meta["first_bad"]`` is the first
  one's message.
- Zero output tokens: a bad row by default; ``zero_output="skip"`` (the BurstGPT default,
  where they are failed requests) drops them, counted in ``meta["zero_output_rows"]``.
- Rows out of time order: an error naming the first such line, even with ``skip_bad``;
  ``sort=True`` sorts (stable) and sets ``meta["sorted"]``. Equal times are fine.
- Empty file, header only, no row left, missing column (the message lists the columns):
  errors. Blank lines are not rows and are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workloads.errors import TraceFormatError
from workloads.readers._common import file_kind, first_record
from workloads.readers.azure import AZURE_COLUMNS, read_azure
from workloads.readers.burstgpt import BURSTGPT_COLUMNS, read_burstgpt
from workloads.readers.generic import GENERIC_FIELDS, read_generic
from workloads.readers.length_table import LENGTH_COLUMNS, LengthTable, read_lengths
from workloads.readers.mooncake import MOONCAKE_KEYS, chain_block_ids, read_mooncake
from workloads.trace import Trace

__all__ = ["AZURE_COLUMNS", "BURSTGPT_COLUMNS", "FORMATS", "GENERIC_FIELDS", "LENGTH_COLUMNS",
           "MOONCAKE_KEYS", "LengthTable", "chain_block_ids", "detect_format", "read_azure",
           "read_burstgpt", "read_generic", "read_lengths", "read_mooncake", "read_trace"]

READERS = {"azure": read_azure, "burstgpt": read_burstgpt, "mooncake": read_mooncake,
           "lengths": read_lengths, "generic": read_generic}
FORMATS = {
    "azure": "CSV with TIMESTAMP, ContextTokens, GeneratedTokens",
    "burstgpt": "CSV with Timestamp, Model, Request tokens, Response tokens, Total tokens, "
                "Log Type",
    "mooncake": "JSONL with timestamp, input_length, output_length, hash_ids",
    "lengths": "CSV with num_prefill_tokens, num_decode_tokens or ContextTokens, "
               "GeneratedTokens (no TIMESTAMP)",
    "generic": "CSV / JSONL / Parquet, needs mapping={'arrival_s': ..., 'prompt_tokens': "
               "..., 'output_tokens': ...}",
}


def _supported() -> str:
    return "; ".join(f"{k} ({v})" for k, v in FORMATS.items())


def detect_format(path: str | Path, *, mapping: Any = None) -> str:
    """The format name of a file, from its extension and its header / first record."""
    path = str(path)
    if mapping is not None:
        return "generic"
    kind = file_kind(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        shown = f"Parquet columns {list(pq.read_schema(path).names)}"
    else:
        first = first_record(path)
        if first is None:
            raise TraceFormatError(path, None, None, "no requests: the file is empty")
        shown = f"first line {first[1][:200]!r}"
        if kind == "jsonl":
            try:
                keys = set(json.loads(first[1]))
            except (json.JSONDecodeError, TypeError):
                keys = set()
            if {"timestamp", "input_length", "output_length"} <= keys:
                return "mooncake"
        else:
            header = {h.strip().strip('"') for h in first[1].split(",")}
            if set(AZURE_COLUMNS) <= header:
                return "azure"
            if {"Timestamp", "Request tokens", "Response tokens"} <= header:
                return "burstgpt"
            if "TIMESTAMP" not in header and any(set(c) <= header for c in LENGTH_COLUMNS):
                return "lengths"
    raise TraceFormatError(path, None, None, f"cannot tell the trace format ({shown}). "
                           f"Supported formats: {_supported()}. Pass format=... (and "
                           "mapping=... for generic)")


def read_trace(path: str | Path, format: str | None = None, *, skip_bad: bool = False,
               **options: Any) -> Trace | LengthTable:
    """Read any supported file; ``format=None`` detects it (see :func:`detect_format`).
    ``options`` go to the format's reader (e.g. ``mapping``, ``sort``, ``model``)."""
    if format is None:
        format = detect_format(path, mapping=options.get("mapping"))
    reader = READERS.get(format)
    if reader is None:
        raise TraceFormatError(str(path), None, None, f"unknown format {format!r}; "
                               f"supported formats: {_supported()}")
    return reader(path, skip_bad=skip_bad, **options)
