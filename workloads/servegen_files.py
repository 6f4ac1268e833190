"""Reading ServeGen-derived descriptor files (CSV or gzip CSV) with file/line/field errors, and
the per-6-hour length PMFs (:class:`LengthPmfs`). Used by :mod:`workloads.servegen`.

Line numbers are physical lines of the decompressed CSV (header = line 1); blank lines are
counted and skipped.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workloads._params import Seed, as_rng
from workloads.errors import TraceFormatError
from workloads.lengths import Pmf

__all__ = ["PMF_WINDOW_S", "WINDOW_S", "LengthPmfs", "plain", "read_length_pmf", "read_table"]

WINDOW_S = 600.0  # ServeGen arrival descriptor window (s)
PMF_WINDOW_S = 21600.0  # ServeGen length PMF window (6 h)
_PMF_COLUMNS = ("category", "model", "window_start_s", "field", "value", "prob")
_MODALITIES = ("image", "audio", "video")  # <m>_count items of <m>_tokens each


def plain(value: Any) -> Any:
    """A numpy / pandas scalar as the plain Python value (for messages)."""
    return value.item() if hasattr(value, "item") else value


def read_table(path: str | Path, columns: Sequence[str], model: str, category: str | None,
               numeric: Sequence[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of ``model`` (and ``category``): numeric columns as finite float64, plus
    each row's line number."""
    path = str(path)
    text = [c for c in columns if c not in numeric]
    try:
        df = pd.read_csv(path, dtype=dict.fromkeys(text, str), skip_blank_lines=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, EOFError,
            gzip.BadGzipFile) as e:
        raise TraceFormatError(path, None, None, f"not a readable CSV: {e}") from e
    for c in columns:
        if c not in df.columns:
            raise TraceFormatError(path, 1, c, f"missing column (header: {list(df.columns)})")
    sel = (df["model"] == model).fillna(False).to_numpy(bool)
    if category is not None:
        sel &= (df["category"] == category).fillna(False).to_numpy(bool)
    if not sel.any():
        models = sorted({str(m) for m in df["model"].dropna().unique()})
        what = f"model {model!r}" + (f" in category {category!r}" if category else "")
        raise TraceFormatError(path, None, "model", f"no rows for {what}; models: {models}")
    lines = np.flatnonzero(sel) + 2
    sub = df.loc[sel, list(columns)].reset_index(drop=True)
    for c in numeric:
        v = pd.to_numeric(sub[c], errors="coerce").to_numpy(np.float64)
        bad = ~np.isfinite(v)
        if bad.any():
            i = int(np.argmax(bad))
            raise TraceFormatError(path, int(lines[i]), c,
                                   f"{plain(sub[c].iloc[i])!r}: missing or not a finite number")
        sub[c] = v
    for c in text:
        bad = sub[c].isna().to_numpy(bool) | (sub[c].astype(str).str.strip() == "").to_numpy()
        if bad.any():
            raise TraceFormatError(path, int(lines[int(np.argmax(bad))]), c, "missing value")
    return sub, lines


@dataclass(frozen=True, eq=False)
class LengthPmfs:
    """Length PMFs of one model per 6-hour window: ``pmfs[j][field]`` for the window starting
    at ``window_start_s[j]`` (sorted).

    A request's prompt is ``input_tokens`` (or ``text_tokens`` for multimodal models) plus,
    per modality ``m`` in image / audio / video with both PMFs, the sum of ``m_count`` draws
    of ``m_tokens`` (tokens per item); its output is ``output_tokens`` (for deepseek-r1 this
    includes the reasoning; ``reason_ratio`` is not used). Other fields are listed in
    ``ignored_fields``. Zero lengths (ServeGen has a few 0-token outputs) become 1, counted
    in the sample's info.
    """

    path: str
    model: str
    window_start_s: np.ndarray
    pmfs: tuple[dict[str, Pmf], ...]
    window_s: float = PMF_WINDOW_S
    ignored_fields: tuple[str, ...] = field(default=())

    def window_index(self, t: np.ndarray) -> np.ndarray:
        """Index of the window holding each time ``t`` (s); ValueError if none does."""
        t = np.asarray(t, dtype=np.float64)
        j = np.searchsorted(self.window_start_s, t, side="right") - 1
        ok = (j >= 0) & (t < self.window_start_s[np.maximum(j, 0)] + self.window_s)
        if not ok.all():
            bad = float(t[np.argmax(~ok)])
            raise ValueError(f"t={bad!r} s: no length PMF window of {self.window_s:g} s covers "
                             f"it in {self.path} (model {self.model!r}, windows start at "
                             f"{self.window_start_s[:4].tolist()}...)")
        return j

    def sample(self, t: np.ndarray, rng: Seed) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """``(prompt, output, info)`` for requests at times ``t``; windows in order, and per
        window: prompt base, modality counts and items, output."""
        rng = as_rng(rng)
        j = self.window_index(t)
        prompt = np.zeros(len(j), dtype=np.int64)
        output = np.zeros(len(j), dtype=np.int64)
        for w in np.unique(j).tolist():
            rows = np.flatnonzero(j == w)
            k = len(rows)
            pmf = self.pmfs[w]
            p = (pmf["input_tokens"] if "input_tokens" in pmf else pmf["text_tokens"]).sample(
                k, rng).copy()
            for m in _MODALITIES:
                if f"{m}_count" in pmf and f"{m}_tokens" in pmf:
                    counts = pmf[f"{m}_count"].sample(k, rng)
                    items = pmf[f"{m}_tokens"].sample(int(counts.sum()), rng)
                    csum = np.concatenate([[0], np.cumsum(items)])
                    ends = np.cumsum(counts)
                    p += csum[ends] - csum[ends - counts]
            prompt[rows] = p
            output[rows] = pmf["output_tokens"].sample(k, rng)
        info = {"clamped_prompt_rows": int((prompt < 1).sum()),
                "clamped_output_rows": int((output < 1).sum()),
                "ignored_fields": list(self.ignored_fields)}
        return np.maximum(prompt, 1), np.maximum(output, 1), info


def read_length_pmf(path: str | Path, model: str, category: str | None = None) -> LengthPmfs:
    """Per-6-hour length PMFs of ``model`` from a ``servegen_length_pmf.csv[.gz]``-style file.

    Errors (TraceFormatError with file, line, field): missing column, non-numeric value,
    ``prob`` outside [0, 1], a negative or non-integer token / count ``value``, a
    (window, field) whose probabilities do not sum to 1 within 1e-3 (line of its first row),
    a window without ``output_tokens`` or without ``input_tokens`` / ``text_tokens``.
    """
    df, lines = read_table(path, _PMF_COLUMNS, model, category,
                           numeric=("window_start_s", "value", "prob"))
    path = str(path)
    ws = df["window_start_s"].to_numpy()
    value = df["value"].to_numpy()
    prob = df["prob"].to_numpy()
    fields = df["field"].astype(str).str.strip().to_numpy(dtype=str)
    used = np.char.endswith(fields, "_tokens") | np.char.endswith(fields, "_count")
    for mask, name, why in (
            (ws < 0, "window_start_s", "must be >= 0"),
            ((prob < 0) | (prob > 1), "prob", "must be in [0, 1]"),
            (used & ((value < 0) | (value != np.rint(value))), "value",
             "a token count must be an integer >= 0")):
        if mask.any():
            i = int(np.argmax(mask))
            shown = plain(df[name].iloc[i])
            raise TraceFormatError(path, int(lines[i]), name, f"{shown!r}: {why}")
    order = np.lexsort((np.arange(len(ws)), fields, ws))  # by window, field, then line
    ws, fields, value, prob, lines, used = (a[order] for a in (ws, fields, value, prob, lines,
                                                                 used))
    new = np.ones(len(ws), dtype=bool)
    new[1:] = (ws[1:] != ws[:-1]) | (fields[1:] != fields[:-1])
    starts = np.flatnonzero(new)
    sums = np.add.reduceat(prob, starts)
    bad = np.abs(sums - 1.0) > 1e-3
    if bad.any():
        g = int(np.argmax(bad))
        i = starts[g]
        raise TraceFormatError(path, int(lines[i]), "prob",
                               f"window_start_s={ws[i]:g} field={fields[i]}: probabilities "
                               f"sum to {sums[g]:.6g}, must be 1 (within 1e-3)")
    windows = np.unique(ws)
    pmfs: list[dict[str, Pmf]] = [{} for _ in windows]
    ignored: set[str] = set()
    ends = np.append(starts[1:], len(ws))
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        if not used[a]:
            ignored.add(str(fields[a]))
            continue
        w = int(np.searchsorted(windows, ws[a]))
        pmfs[w][str(fields[a])] = Pmf(value[a:b], prob[a:b])
    for w, d in zip(windows.tolist(), pmfs, strict=True):
        for need in ("output_tokens", "input_tokens|text_tokens"):
            if not any(f in d for f in need.split("|")):
                raise TraceFormatError(path, None, "field",
                                       f"window_start_s={w:g}: no {need.replace('|', ' or ')} "
                                       "PMF")
    windows.flags.writeable = False
    return LengthPmfs(path, model, windows, tuple(pmfs), ignored_fields=tuple(sorted(ignored)))
