"""sagellm.trace_files: finding the public traces, and saying so when they are absent."""

from __future__ import annotations

import numpy as np

from sagellm.trace_files import TRACES_ENV, default_traces_dir, find_trace
from tests.sagellm.compare_helpers import write_azure_trace


def test_found_trace_reads_and_gives_its_lengths(tmp_path):
    write_azure_trace(tmp_path / "azure.csv", n=20)
    lookup = find_trace("azure.csv", tmp_path)
    assert lookup.found
    assert lookup.trace == str(tmp_path / "azure.csv")
    assert str(lookup) == f"trace: {tmp_path / 'azure.csv'}"
    trace = lookup.read()
    lengths = lookup.lengths()
    assert len(trace) == len(lengths) == 20
    np.testing.assert_array_equal(lengths.prompt_tokens, trace.prompt_tokens)
    np.testing.assert_array_equal(lengths.output_tokens, trace.output_tokens)


def test_missing_trace_says_so_and_falls_back(tmp_path):
    lookup = find_trace("nope.csv", tmp_path)
    assert not lookup.found
    assert lookup.path is None and lookup.trace is None and lookup.read() is None
    assert "not found" in str(lookup) and "synthetic" in str(lookup)
    assert str(tmp_path) in str(lookup)
    lengths = lookup.lengths(prompt_tokens=100, output_tokens=7)
    assert lengths.prompt_tokens.tolist() == [100] and lengths.output_tokens.tolist() == [7]


def test_a_folder_is_not_a_trace(tmp_path):
    (tmp_path / "sub").mkdir()
    assert not find_trace("sub", tmp_path).found


def test_absolute_names_and_the_default_folder(tmp_path, monkeypatch):
    path = write_azure_trace(tmp_path / "a.csv", n=5)
    assert find_trace(str(path), "/nonexistent").path == path
    monkeypatch.setenv(TRACES_ENV, str(tmp_path))
    assert default_traces_dir() == tmp_path
    assert find_trace("a.csv").path == path
    monkeypatch.delenv(TRACES_ENV)
    assert default_traces_dir().parts[-2:] == ("shared", "traces")
