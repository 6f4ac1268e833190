"""Azure LLM inference traces (AzurePublicDataset): 2023 (Splitwise) and 2024 (DynamoLLM).

Format (CSV with a header, one request per row, sorted by time):

- ``TIMESTAMP``: arrival, naive wall-clock datetime with 7 fractional digits, e.g.
  ``2023-11-16 18:17:03.9799600`` (kept to the 100 ns digit); any ISO 8601 datetime is
  accepted, and so is a plain number of seconds.
- ``ContextTokens``: prompt (input) tokens. ``GeneratedTokens``: output tokens.
- Other columns (e.g. ``NumImages`` of the 2025 multimodal trace) are ignored.

The 2023 files (``AzureLLMInferenceTrace_code.csv``, 8,819 rows; ``..._conv.csv``, 19,366
rows) and the 2024 week-long files share this header. Arrivals are seconds after the first
row (``relative=True``; ``meta["origin"]`` is that row's TIMESTAMP as written), or seconds
since the Unix epoch / as written with ``relative=False`` (naive datetimes are read as UTC).

Zero lengths: the 2023 files have no row with 0 context or generated tokens; a request
must have at least one of each, so such a row is a bad row (an error, or dropped and counted
with ``skip_bad``). ``zero_output="skip"`` instead drops rows with 0 generated tokens and
counts them in ``meta["zero_output_rows"]`` (as the BurstGPT reader does by default).
"""

from __future__ import annotations

from pathlib import Path

from workloads.readers._checks import Checks, finish, int_column, time_column
from workloads.readers._common import fast_then_careful, trace_name
from workloads.readers._csv import read_csv_rows
from workloads.trace import Trace

__all__ = ["AZURE_COLUMNS", "read_azure"]

AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def read_azure(path: str | Path, *, skip_bad: bool = False, sort: bool = False,
               relative: bool = True, zero_output: str = "error") -> Trace:
    """Read an Azure LLM inference trace CSV (2023 or 2024 layout) into a Trace."""
    return fast_then_careful(lambda careful: _read(path, careful, skip_bad, sort, relative,
                                                   zero_output))


def _read(path: str | Path, careful: bool, skip_bad: bool, sort: bool, relative: bool,
          zero_output: str) -> Trace:
    rows = read_csv_rows(path, AZURE_COLUMNS, careful=careful)
    chk = Checks(rows, skip_bad)
    t, divisor = time_column(chk, "TIMESTAMP", "auto", relative=relative)
    prompt = int_column(chk, "ContextTokens")
    output = int_column(chk, "GeneratedTokens", zero_output=zero_output)
    ts = rows.columns["TIMESTAMP"]
    meta = {"format": "azure", "path": str(path)}
    return finish(chk, t, divisor, "TIMESTAMP",
                  {"prompt_tokens": prompt, "output_tokens": output},
                  name=trace_name(path), sort=sort, relative=relative, meta=meta,
                  origin=lambda i: ts.iloc[i] if isinstance(ts.iloc[i], str)
                  else float(ts.iloc[i]))
