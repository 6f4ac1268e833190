"""Run files of ``sagellm compare``: one Parquet file per run, and summaries from them.

``<out>/runs/<name>.parquet`` holds the run's per-request records (columns
:attr:`RequestRecord.FIELDS`, a fixed schema) and, in the Parquet schema metadata under
``sagellm.compare``, a JSON object: ``version``, ``key`` (the run key), ``rows``,
``params`` (the grid point, see :class:`sagellm.compare_grid.RunSpec`), ``instances`` (the
InstanceSpecs, for cost and utilization) and ``end_s`` (simulated time at the end).

A file is written under a temporary name and renamed into place, so a file with the final
name is complete unless damaged afterwards; :func:`run_meta` checks the footer, the key
and the row count, and anything unreadable counts as missing (the run is redone).

Figures come from :func:`control_plane.summary_core.summarize_columns`, the one summary
implementation: :func:`summary_columns` only turns the records table into its columns.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from control_plane.records import STATUSES, RequestRecord
from control_plane.summary_core import Summary, SummaryColumns, summarize_columns
from control_plane.types import SLO, InstanceSpec
from sagellm.results import records_frame

__all__ = ["META_KEY", "RUNS_DIR", "SCHEMA", "VERSION", "encode_run", "read_run", "run_meta",
           "summarize_run", "summary_columns", "summary_row", "write_atomic"]

RUNS_DIR = "runs"
META_KEY = b"sagellm.compare"
VERSION = 1
_STR = ("request_id", "tenant", "instance_id", "status", "reject_cause", "reject_detail")
_INT = ("priority", "prompt_tokens", "output_tokens", "attempts", "preemptions",
        "cached_prompt_tokens")
SCHEMA = pa.schema([(f, pa.string() if f in _STR else pa.int64() if f in _INT
                     else pa.float64()) for f in RequestRecord.FIELDS])
_SLO_COLS = ("slo_ttft_s", "slo_tpot_s", "slo_e2e_s")


def encode_run(records: list[RequestRecord], meta: dict[str, Any]) -> bytes:
    """The Parquet file of one run, as bytes (workers return these; the parent writes)."""
    df = records_frame(records)
    table = pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False)
    meta = {**meta, "version": VERSION, "rows": len(df)}
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True)})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file next to ``path``, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def run_meta(path: Path, key: str | None = None) -> dict[str, Any] | None:
    """The run's metadata, or None when the file is missing, unreadable, of another
    version or key, or holds fewer rows than it should (then the run is redone)."""
    try:
        f = pq.ParquetFile(path)
        raw = (f.schema_arrow.metadata or {}).get(META_KEY)
        meta = json.loads(raw) if raw else None
        rows = f.metadata.num_rows
    except (OSError, ValueError, pa.ArrowException):
        return None
    if not isinstance(meta, dict) or meta.get("version") != VERSION or meta.get(
            "rows") != rows or (key is not None and meta.get("key") != key):
        return None
    return meta


def read_run(path: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Records and metadata of a complete run file (ValueError naming the file if not)."""
    meta = run_meta(path)
    if meta is None:
        raise ValueError(f"{path}: not a complete sagellm compare run file")
    return pq.read_table(path).to_pandas(), meta


def _codes(values: pd.Series) -> tuple[tuple, np.ndarray]:
    """(distinct values in first-seen order, codes; -1 for None)."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    return tuple(uniques.tolist()), codes.astype(np.intp)


def summary_columns(df: pd.DataFrame) -> SummaryColumns:
    """The :class:`SummaryColumns` of a records table (as :func:`encode_run` writes it)."""
    def floats(c: str) -> np.ndarray:
        return df[c].to_numpy(dtype=float, na_value=np.nan)

    def ints(c: str) -> np.ndarray:
        return df[c].to_numpy(dtype=np.int64)

    slo_keys = [tuple(None if v != v else float(v) for v in row)
                for row in zip(*(floats(c).tolist() for c in _SLO_COLS), strict=True)]
    table: dict[tuple, int] = {}
    slo = np.fromiter((-1 if k == (None, None, None) else table.setdefault(k, len(table))
                       for k in slo_keys), dtype=np.intp, count=len(df))
    status_code = {s: k for k, s in enumerate(STATUSES)}
    tenants, tenant = _codes(df["tenant"])
    ids, inst = _codes(df["instance_id"])
    causes, cause = _codes(df["reject_cause"])
    return SummaryColumns(
        arrival_s=floats("arrival_s"), dispatch_s=floats("dispatch_s"),
        first_token_s=floats("first_token_s"), finish_s=floats("finish_s"),
        prompt_tokens=ints("prompt_tokens"), output_tokens=ints("output_tokens"),
        cached_prompt_tokens=ints("cached_prompt_tokens"), preemptions=ints("preemptions"),
        attempts=ints("attempts"), priority=ints("priority"),
        status=df["status"].map(status_code).to_numpy(dtype=np.int8),
        tenant=tenant, tenant_names=tenants, instance=inst, instance_ids=ids,
        reject_cause=cause, reject_causes=causes, slo=slo,
        slos=tuple(SLO(*k) for k in table), cost_usd=floats("cost_usd"))


def _instances(meta: dict[str, Any]) -> list[InstanceSpec]:
    return [InstanceSpec(**d) for d in meta.get("instances", ())]


def summarize_run(df: pd.DataFrame, meta: dict[str, Any]) -> Summary:
    """The run's :class:`Summary` (what ``SimResult.summary()`` gave for it)."""
    return summarize_columns(summary_columns(df), instances=_instances(meta))


def _subset(cols: SummaryColumns, mask: np.ndarray) -> SummaryColumns:
    arrays = {f.name: getattr(cols, f.name)[mask] for f in dataclasses.fields(cols)
              if isinstance(getattr(cols, f.name), np.ndarray)}
    return dataclasses.replace(cols, **arrays)


def summary_row(df: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any]:
    """One flat row: the run's parameters, its headline figures and, per priority level
    present, SLO attainment and queueing delay (p50 / p99 / mean, from the same core)."""
    cols = summary_columns(df)
    instances = _instances(meta)
    s = summarize_columns(cols, instances=instances)
    params = dict(meta["params"])
    for k in ("policy_spec", "router_spec"):
        params[k] = json.dumps(params.get(k), sort_keys=True)
    row: dict[str, Any] = {**params, "total": s.total, "ok": s.ok, "rejected": s.rejected,
                           "failed": s.failed, "slo_met": s.slo_met,
                           "slo_attainment": s.slo_attainment, "goodput_rps": s.goodput_rps,
                           "goodput_tokens_per_s": s.goodput_tokens_per_s,
                           "throughput_rps": s.throughput_rps,
                           "output_tokens_per_s": s.output_tokens_per_s}
    for name in ("ttft", "tpot", "e2e", "queue_delay"):
        p = getattr(s, f"{name}_s")
        row |= {f"{name}_p50_s": p.p50, f"{name}_p95_s": p.p95, f"{name}_p99_s": p.p99,
                f"{name}_mean_s": p.mean}
    row |= {"cost_per_mtok_usd": (np.nan if s.cost_per_million_tokens_usd is None
                                  else s.cost_per_million_tokens_usd),
            "instance_cost_usd": (np.nan if s.instance_cost_usd is None
                                  else s.instance_cost_usd),
            "prefix_cache_hit_ratio": s.prefix_cache_hit_ratio,
            "preemptions": s.preemptions, "retried": s.retried, "duration_s": s.duration_s}
    for p, att in sorted(s.attainment_by_priority.items()):
        q = summarize_columns(_subset(cols, cols.priority == p), instances=instances)
        row |= {f"attainment_p{p}": att, f"queue_delay_p50_s_p{p}": q.queue_delay_s.p50,
                f"queue_delay_p99_s_p{p}": q.queue_delay_s.p99,
                f"queue_delay_mean_s_p{p}": q.queue_delay_s.mean}
    return row
