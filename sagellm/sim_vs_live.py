"""Simulated vs live per-request records: where they come from, and how far apart they are.

:func:`fidelity_records` gives one table of per-request records of both sides, labelled by
``source`` (``sim`` or a live source), ``load`` and ``router``:

- from a fidelity results folder (``benchmarks/fidelity.py``: the simulator and real vLLM
  engines behind the gateway, on the same requests; :func:`sagellm.fidelity.write_records`
  writes ``load=<load>/router=<router>/source=<sim|live>.parquet``), read by
  :func:`read_fidelity_folder`;
- when there is none, from a small run that needs no vLLM
  (:func:`sagellm.emulated_fidelity.compare_emulated`: the gateway over emulated engines),
  and its note says so: those are not real-engine results.

:func:`quantile_table` puts the two sides' latency quantiles next to each other with the
live side's relative difference (latencies as :mod:`sagellm.latency_cdfs` defines them).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from control_plane.records import RequestRecord
from sagellm.emulated_fidelity import SIM, compare_emulated, emulated_workload
from sagellm.latency_cdfs import latencies

__all__ = ["LABELS", "fidelity_records", "quantile_table", "read_fidelity_folder"]

LABELS = ("source", "load", "router")
_SUFFIXES = (".parquet", ".csv")


def _labels_from_path(path: Path, root: Path) -> dict[str, str]:
    """``key=value`` parts of the path below ``root`` (folders or ``__``-separated stem
    parts), e.g. ``load=0.5/router=least_loaded/source=live.parquet``."""
    parts = [*path.relative_to(root).parent.parts, *path.stem.split("__")]
    return dict(p.split("=", 1) for p in parts if "=" in p)


def _is_profile(path: Path) -> bool:
    with path.open(encoding="utf-8", errors="replace") as f:
        return f.readline().startswith("# sagellm iteration profile")


def read_fidelity_folder(folder: str | Path) -> pd.DataFrame | None:
    """Every per-request records file (``*.parquet`` / ``*.csv`` with the columns of
    :class:`~control_plane.records.RequestRecord`) under ``folder``, concatenated, with
    ``source``, ``load`` and ``router`` leading: taken from the file's own columns when it
    has them, else from ``key=value`` parts of its path. None when the folder is absent or
    holds no records file; a records file without its labels is an error naming it.
    ``train/`` (the fidelity benchmark's training replay, :mod:`sagellm.contention_fit`) is
    not part of the comparison and is skipped."""
    root = Path(folder)
    if not root.is_dir():
        return None
    frames = []
    for path in sorted(p for p in root.rglob("*") if p.suffix in _SUFFIXES and p.is_file()
                       and p.relative_to(root).parts[0] != "train"):
        if path.suffix == ".csv" and _is_profile(path):
            continue  # an iteration profile kept with the run (benchmarks/fidelity.py)
        df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        if not set(RequestRecord.FIELDS) <= set(df.columns):
            continue  # not a records file (a summary table, say)
        labels = _labels_from_path(path, root)
        for k, name in enumerate(LABELS):
            if name not in df.columns:
                if name not in labels:
                    raise ValueError(f"{path}: records without a {name!r} column or a "
                                     f"'{name}=...' part in the path")
                df.insert(k, name, labels[name])
        frames.append(df)
    if not frames:
        return None
    out = pd.concat(frames, ignore_index=True)
    out["load"] = pd.to_numeric(out["load"])
    return out


def fidelity_records(results_dir: str | Path, *, requests: int = 200,
                     loads: tuple[float, ...] = (0.5,), routers: tuple = ("least_loaded",),
                     seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame | None, str]:
    """(records, per-run info or None, a note saying where they come from): the fidelity
    results in ``results_dir``, or else the emulated comparison of ``requests`` requests
    (:func:`sagellm.emulated_fidelity.emulated_workload`) at ``loads`` (fractions of the
    emulated engines' capacity) with each of ``routers``."""
    real = read_fidelity_folder(results_dir)
    if real is not None:
        sources = ", ".join(sorted(set(real["source"].astype(str))))
        return real, None, (f"fidelity results from {results_dir}: {len(real):,} records "
                            f"({sources})")
    records, runs = compare_emulated(emulated_workload(requests, seed), loads=loads,
                                     routers=routers)
    return records, runs, (
        f"no fidelity results in {results_dir} (benchmarks/fidelity.py writes them; it needs "
        f"vLLM): the live side below is the gateway over EMULATED engines (the simulator's "
        f"engine model in real time), not real vLLM; {len(records):,} records")


def quantile_table(records: pd.DataFrame, *, quantiles: tuple[float, ...] = (0.5, 0.9, 0.99),
                   metrics: tuple[str, ...] = ("ttft_s", "tpot_s", "e2e_s")) -> pd.DataFrame:
    """Per (load, router, metric, quantile): one column per source (the simulated ones,
    ``sim``, ``sim-2``, ..., first) and ``diff_<source>``, each live source's relative
    difference from ``sim``'s."""
    lat = latencies(records)
    q = lat.groupby(["load", "router", "source"])[list(metrics)].quantile(list(quantiles))
    q.index = q.index.set_names("quantile", level=-1)
    table = q.stack().rename_axis(index={None: "metric"}).unstack("source")
    table = table.reorder_levels(["load", "router", "metric", "quantile"]).sort_index()
    table = table.reindex(list(metrics), level="metric")  # in the order asked for
    sims = sorted(c for c in table.columns if str(c).startswith(SIM))
    live = [c for c in table.columns if c not in sims]
    table = table[[*sims, *live]]
    if SIM in table.columns:
        for c in live:
            table[f"diff_{c}"] = (table[c] - table[SIM]) / table[SIM]
    table.columns.name = None
    return table
