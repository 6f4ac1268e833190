"""Trace reader throughput and memory (issue 3 targets: >= 500,000 rows/s, <= 500 MB peak).

Writes a 1,000,000-row Azure-format CSV into a temporary directory (header
``TIMESTAMP,ContextTokens,GeneratedTokens``, timestamps with 7 fractional digits such as
``2023-11-16 18:17:03.9799600``, Poisson arrivals at 28 req/s, lognormal lengths like the
2023 conversation trace; seed fixed, so the file is the same every run), then times
``read_trace`` on it: each run is a fresh subprocess, the time covers the read alone, and
``peak_rss_mb`` is the child's VmHWM (its whole peak resident memory, interpreter and
libraries included; ``import_rss_mb`` is that peak after the imports, before the read).
Figures are medians of ``--repeats`` runs.

Baseline, measured the same way in the same run: ``pandas.read_csv`` of the same file plus
``pandas.to_datetime`` with an explicit format, no validation. ``ratio_vs_pandas`` = reader
time / baseline time. ``bad_row`` times the slow path once: the same file with one bad row
near the end read with ``skip_bad=True`` (every line named, so it re-parses in Python).
``real_files``: rows/s on the public traces in /work/shared/traces when present (info only).

    python benchmarks/bench_workloads.py [--json] [--check] [--rows N] [--repeats K]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_ROWS_PER_S = 500_000
TARGET_PEAK_MB = 500.0
REAL_TRACES = Path("/work/shared/traces")

CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
import pandas as pd
from workloads.readers import read_trace
mode, path = sys.argv[2], sys.argv[3]
imported = hwm()
t0 = time.perf_counter()
if mode == "reader":
    n = len(read_trace(path))
elif mode == "skip_bad":
    tr = read_trace(path, skip_bad=True)
    n = len(tr) + tr.meta["skipped_bad_rows"]
else:
    df = pd.read_csv(path)
    ts = pd.to_datetime(df["TIMESTAMP"], format="%Y-%m-%d %H:%M:%S.%f")
    n = len(df)
wall = time.perf_counter() - t0
print(json.dumps({"rows": n, "wall_s": wall, "peak_rss_mb": hwm(), "import_rss_mb": imported}))
"""


def write_azure_csv(path: Path, rows: int, seed: int = 0) -> None:
    """A deterministic Azure-format trace of ``rows`` requests."""
    rng = np.random.Generator(np.random.PCG64(seed))
    gaps_us = np.maximum(1, rng.exponential(1e6 / 28.0, rows)).astype(np.int64)
    start = np.datetime64("2023-11-16T18:15:46.680590", "us")
    stamps = np.datetime_as_string(start + np.cumsum(gaps_us).astype("timedelta64[us]"))
    prompt = np.clip(rng.lognormal(np.log(1020), 0.9, rows), 1, 14050).astype(np.int64)
    output = np.clip(rng.lognormal(np.log(129), 1.0, rows), 1, 2000).astype(np.int64)
    ts = pd.Series(stamps).str.replace("T", " ", regex=False) + "0"  # 7 fractional digits
    pd.DataFrame({"TIMESTAMP": ts, "ContextTokens": prompt, "GeneratedTokens": output}
                 ).to_csv(path, index=False)


def child(mode: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(ROOT), mode, str(path)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def median_runs(mode: str, path: Path, repeats: int) -> dict:
    runs = [child(mode, path) for _ in range(repeats)]
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def real_files() -> dict:
    from workloads.readers import read_trace

    out = {}
    if not REAL_TRACES.is_dir():
        return out
    for p in sorted(REAL_TRACES.glob("*")):
        if p.name.startswith(("azure", "mooncake")):
            t0 = time.perf_counter()
            n = len(read_trace(p))
            out[p.name] = {"rows": n, "rows_per_s": round(n / (time.perf_counter() - t0))}
    return out


def run(rows: int, repeats: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "azure_1m.csv"
        write_azure_csv(path, rows)
        size_mb = path.stat().st_size / 2**20
        reader = median_runs("reader", path, repeats)
        base = median_runs("pandas", path, repeats)
        lines = path.read_text().splitlines(keepends=True)
        lines[-10] = lines[-10].replace(",", ",x", 1)  # one unparseable timestamp
        path.write_text("".join(lines))
        del lines
        bad = child("skip_bad", path)
    assert reader["rows"] == rows and bad["rows"] == rows
    return {
        "rows": rows, "file_mb": round(size_mb, 1), "repeats": repeats,
        "wall_s": round(reader["wall_s"], 4),
        "rows_per_s": round(rows / reader["wall_s"]),
        "peak_rss_mb": round(reader["peak_rss_mb"], 1),
        "import_rss_mb": round(reader["import_rss_mb"], 1),
        "baseline_pandas_wall_s": round(base["wall_s"], 4),
        "baseline_pandas_peak_rss_mb": round(base["peak_rss_mb"], 1),
        "ratio_vs_pandas": round(reader["wall_s"] / base["wall_s"], 2),
        "bad_row": {"wall_s": round(bad["wall_s"], 3),
                    "rows_per_s": round(rows / bad["wall_s"]),
                    "peak_rss_mb": round(bad["peak_rss_mb"], 1)},
        "real_files": real_files(),
        "targets": {"rows_per_s": TARGET_ROWS_PER_S, "peak_rss_mb": TARGET_PEAK_MB},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--check", action="store_true", help="exit 2 when a target is missed")
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    res = run(args.rows, args.repeats)
    missed = [k for k, ok in (("rows_per_s", res["rows_per_s"] >= TARGET_ROWS_PER_S),
                              ("peak_rss_mb", res["peak_rss_mb"] <= TARGET_PEAK_MB)) if not ok]
    res["missed"] = missed
    if args.json:
        print(json.dumps(res))
    else:
        print(f"read_trace, Azure CSV, {res['rows']:,} rows ({res['file_mb']} MB), median of "
              f"{res['repeats']} fresh processes:")
        print(f"  {res['rows_per_s']:,} rows/s ({res['wall_s']} s), peak RSS "
              f"{res['peak_rss_mb']} MB (after imports {res['import_rss_mb']} MB)")
        print(f"  pandas read_csv + to_datetime baseline: {res['baseline_pandas_wall_s']} s, "
              f"{res['baseline_pandas_peak_rss_mb']} MB; reader/baseline "
              f"{res['ratio_vs_pandas']}x")
        b = res["bad_row"]
        print(f"  one bad row, skip_bad=True (careful path): {b['wall_s']} s, "
              f"{b['rows_per_s']:,} rows/s, peak {b['peak_rss_mb']} MB")
        for name, r in res["real_files"].items():
            print(f"  {name}: {r['rows']:,} rows, {r['rows_per_s']:,} rows/s")
        print(f"  targets >= {TARGET_ROWS_PER_S:,} rows/s, <= {TARGET_PEAK_MB:.0f} MB: "
              + ("missed " + ", ".join(missed) if missed else "met"))
    return 2 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
