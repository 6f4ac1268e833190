"""Writing simulation results: per-request records, per-instance series, summaries.

Layout under the output folder, one set per run (``<policy>__<router>``):
``<run>.records.parquet|csv`` (one row per request, columns ``RequestRecord.FIELDS``),
``<run>.series.parquet|csv`` (one row per instance per scrape: instance_id, time_s, up,
cp_queued, cp_inflight, running, waiting, kv_usage) and ``summary.json`` with every run's
summary.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from control_plane.metrics import Summary
from control_plane.records import RequestRecord
from sim import SimResult

__all__ = ["FORMATS", "records_frame", "write_run", "write_summaries"]

FORMATS = ("parquet", "csv")


def records_frame(records: Iterable[RequestRecord]) -> pd.DataFrame:
    """One row per record, the columns of ``RequestRecord.FIELDS`` (also when empty)."""
    return pd.DataFrame([r.to_dict() for r in records], columns=list(RequestRecord.FIELDS))


def _write(df: pd.DataFrame, path: Path, fmt: str) -> Path:
    if fmt == "parquet":
        out = path.with_suffix(path.suffix + ".parquet")
        df.to_parquet(out, index=False)
    else:
        out = path.with_suffix(path.suffix + ".csv")
        df.to_csv(out, index=False)
    return out


def write_run(out_dir: Path, name: str, result: SimResult, fmt: str = "parquet") -> list[Path]:
    """Write one run's records and series; returns the files written."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: must be one of {FORMATS}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    records = result.records
    if records:
        written.append(_write(records_frame(records), out_dir / f"{name}.records", fmt))
    if result.series:
        frames = []
        for iid, s in result.series.items():
            cols = {f.name: getattr(s, f.name) for f in dataclasses.fields(s)}
            frame = pd.DataFrame(cols)
            frame.insert(0, "instance_id", iid)
            frames.append(frame)
        written.append(_write(pd.concat(frames, ignore_index=True),
                              out_dir / f"{name}.series", fmt))
    return written


def write_summaries(out_dir: Path, summaries: Mapping[str, Summary]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "summary.json"
    path.write_text(json.dumps({k: v.to_dict() for k, v in summaries.items()}, indent=2))
    return path
