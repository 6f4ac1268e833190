"""Trace readers on small files of every format: exact columns, detection, options."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from control_plane.prefix import ROOT_HASH
from workloads.errors import TraceFormatError
from workloads.readers import (
    LengthTable,
    chain_block_ids,
    detect_format,
    read_azure,
    read_burstgpt,
    read_generic,
    read_trace,
)
from workloads.trace import Trace

AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:03.9799600,4808,10
2023-11-16 18:17:04.0319600,3180,8
2023-11-16 18:17:04.0781489,110,27
2023-11-16 18:18:04.0781489,7437,1899
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    data = text.encode()
    path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize("name", ["azure_code.csv", "azure_code.csv.gz"])
def test_azure_real_header_and_7_digit_timestamps(tmp_path, name):
    tr = read_trace(write(tmp_path, name, AZURE))
    assert isinstance(tr, Trace) and tr.name == "azure_code"
    assert tr.arrival_s.tolist() == [0.0, 0.052, 0.0981889, 60.0981889]
    assert tr.prompt_tokens.tolist() == [4808, 3180, 110, 7437]
    assert tr.output_tokens.tolist() == [10, 8, 27, 1899]
    assert tr.meta["format"] == "azure" and tr.meta["skipped_bad_rows"] == 0
    assert tr.meta["origin"] == "2023-11-16 18:17:03.9799600"
    assert [r.request_id for r in tr.requests()][:2] == ["azure_code-0", "azure_code-1"]


def test_azure_numeric_seconds_and_absolute_times(tmp_path):
    p = write(tmp_path, "week.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
              "100.5,10,1\n100.5,20,2\n103.25,30,3\n")
    assert read_azure(p).arrival_s.tolist() == [0.0, 0.0, 2.75]
    assert read_azure(p, relative=False).arrival_s.tolist() == [100.5, 100.5, 103.25]
    p = write(tmp_path, "dt.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n"
              "1970-01-01 00:00:10.5000000,1,1\n1970-01-01 00:00:11,1,1\n")
    assert read_azure(p, relative=False).arrival_s.tolist() == [10.5, 11.0]


def test_azure_extra_columns_blank_lines_crlf(tmp_path):
    p = write(tmp_path, "mm.csv", "TIMESTAMP,NumImages,ContextTokens,GeneratedTokens\r\n\r\n"
              "2025-01-01 00:00:00.0000000,2,100,5\r\n\r\n"
              "2025-01-01 00:00:01.2500000,0,200,6\r\n")
    tr = read_trace(p)
    assert tr.arrival_s.tolist() == [0.0, 1.25]
    assert tr.prompt_tokens.tolist() == [100, 200]


BURST = """Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type
5.0,ChatGPT,100,20,120,Conversation log
5.5,GPT-4,200,0,200,Conversation log
6.0,ChatGPT,300,30,330,API log
7.25,GPT-4,400,40,440,Conversation log
8.0,ChatGPT,50,0,50,API log
"""


def test_burstgpt_zero_output_rows_skipped_and_counted(tmp_path):
    tr = read_trace(write(tmp_path, "BurstGPT_1.csv", BURST))
    assert tr.arrival_s.tolist() == [0.0, 1.0, 2.25]
    assert tr.prompt_tokens.tolist() == [100, 300, 400]
    assert tr.meta["zero_output_rows"] == 2 and tr.meta["skipped_bad_rows"] == 0
    assert tr.meta["origin"] == 5.0 and tr.tenant is None


def test_burstgpt_filters_and_tenant(tmp_path):
    p = write(tmp_path, "b.csv", BURST)
    tr = read_burstgpt(p, log_type="Conversation log", tenant_from_model=True)
    assert tr.prompt_tokens.tolist() == [100, 400]
    assert tr.tenant.tolist() == ["ChatGPT", "GPT-4"]
    assert tr.meta["filtered_rows"] == 2 and tr.meta["zero_output_rows"] == 1
    tr = read_burstgpt(p, model=["ChatGPT"], relative=False)
    assert tr.arrival_s.tolist() == [5.0, 6.0]
    assert tr.meta["zero_output_rows"] == 1 and tr.meta["filtered_rows"] == 2
    with pytest.raises(TraceFormatError, match=r"no requests left of 5 rows \("):
        read_burstgpt(p, model="Claude")
    with pytest.raises(TraceFormatError, match=r"b.csv:3: Response tokens: must be >= 1, got 0"):
        read_burstgpt(p, zero_output="error")


def mooncake_text() -> str:
    recs = [
        {"timestamp": 0, "input_length": 1024, "output_length": 5, "hash_ids": [0, 1]},
        {"timestamp": 0, "input_length": 1600, "output_length": 6, "hash_ids": [0, 1, 2, 3]},
        {"timestamp": 1500, "input_length": 1025, "output_length": 7, "hash_ids": [0, 4, 2]},
        {"timestamp": 3000, "input_length": 1, "output_length": 8, "hash_ids": [1]},
    ]
    return "".join(json.dumps(r) + "\n" for r in recs)


@pytest.mark.parametrize("name", ["conv.jsonl", "conv.jsonl.gz"])
def test_mooncake_chained_prefix_hashes(tmp_path, name):
    tr = read_trace(write(tmp_path, name, mooncake_text()))
    assert tr.name == "conv" and tr.block_size == 512
    assert tr.arrival_s.tolist() == [0.0, 0.0, 1.5, 3.0]
    assert tr.prompt_tokens.tolist() == [1024, 1600, 1025, 1]
    assert tr.output_tokens.tolist() == [5, 6, 7, 8]
    a, b, c, d = tr.prefix_hashes
    h0 = hash((ROOT_HASH, 0))
    assert a == (h0, hash((h0, 1))) and a == chain_block_ids([0, 1])
    assert b[:2] == a and len(b) == 4                 # shared leading blocks: equal hashes
    assert c[0] == a[0] and c[1] != a[1]              # differs from block 1 on ...
    assert c[2] != b[2]                               # ... even where the ids agree again
    assert d[0] not in (a[1], b[1])                   # same id, different prefix
    assert next(iter(tr.requests())).prefix_hashes == a


def test_generic_csv_milliseconds_with_optional_columns(tmp_path):
    p = write(tmp_path, "gen.csv", "ts,in,out,prio,who,sess,ttft,id\n"
              "1000,10,1,0,alice,s1,0.5,a\n1250,20,2,4,bob,,,b\n2000,30,3,2,alice,s1,1,c\n")
    m = {"arrival_s": "ts", "prompt_tokens": "in", "output_tokens": "out",
         "priority": "prio", "tenant": "who", "session_id": "sess", "slo_ttft_s": "ttft",
         "request_id": "id"}
    tr = read_trace(p, mapping=m, time_unit="ms")
    assert tr.arrival_s.tolist() == [0.0, 0.25, 1.0]
    assert tr.priority.tolist() == [0, 4, 2]
    assert tr.tenant.tolist() == ["alice", "bob", "alice"]
    assert tr.session_id.tolist() == ["s1", None, "s1"]
    assert np.array_equal(tr.slo_ttft_s, [0.5, np.nan, 1.0], equal_nan=True)
    reqs = list(tr.requests())
    assert [r.request_id for r in reqs] == ["a", "b", "c"]
    assert reqs[1].slo is None and reqs[0].slo.ttft_s == 0.5


def test_generic_csv_with_an_empty_optional_last_column(tmp_path):
    p = write(tmp_path, "g.csv", "ts,in,out,sess\n0.5,1,1,\n1.5,2,2,\n")
    tr = read_generic(p, {"arrival_s": "ts", "prompt_tokens": "in", "output_tokens": "out",
                          "session_id": "sess"})
    assert tr.arrival_s.tolist() == [0.0, 1.0] and tr.session_id.tolist() == [None, None]


def test_generic_jsonl_datetime(tmp_path):
    text = ('{"t": "2024-05-01T12:00:00.5", "p": 3, "o": 4}\n\n'
            '{"t": "2024-05-01T12:00:02+00:00", "p": "5", "o": 6.0}\n')
    p = write(tmp_path, "g.jsonl.gz", text)
    tr = read_generic(p, {"arrival_s": "t", "prompt_tokens": "p", "output_tokens": "o"},
                      time_unit="datetime")
    assert tr.arrival_s.tolist() == [0.0, 1.5]
    assert tr.prompt_tokens.tolist() == [3, 5] and tr.output_tokens.tolist() == [4, 6]
    assert tr.meta["origin"] == "2024-05-01T12:00:00.5"


def test_generic_parquet(tmp_path):
    p = tmp_path / "g.parquet"
    pd.DataFrame({"when": pd.to_datetime(["2024-01-01 00:00:00", "2024-01-01 00:00:03"]),
                  "n_in": [7, 8], "n_out": [1, 2], "s": [10.0, 13.5]}).to_parquet(p)
    m = {"arrival_s": "when", "prompt_tokens": "n_in", "output_tokens": "n_out"}
    assert read_trace(p, mapping=m, time_unit="datetime").arrival_s.tolist() == [0.0, 3.0]
    tr = read_trace(p, mapping=m | {"arrival_s": "s"}, relative=False)
    assert tr.arrival_s.tolist() == [10.0, 13.5] and tr.meta["file_kind"] == "parquet"


def test_generic_mapping_arguments():
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['colour'\]"):
        read_generic("x.csv", {"arrival_s": "a", "prompt_tokens": "b", "output_tokens": "c",
                               "colour": "d"})
    with pytest.raises(ValueError, match=r"required field\(s\) \['output_tokens'\]"):
        read_generic("x.csv", {"arrival_s": "a", "prompt_tokens": "b"})
    with pytest.raises(ValueError, match="time_unit='h'"):
        read_generic("x.csv", {"arrival_s": "a", "prompt_tokens": "b", "output_tokens": "c"},
                     time_unit="h")


SHAREGPT = "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n" \
           "74,918,992,0.08\n290,905,1195,0.32\n10,5,15,2.0\n"


def test_length_tables(tmp_path):
    t = read_trace(write(tmp_path, "sharegpt.csv.gz", SHAREGPT))
    assert isinstance(t, LengthTable) and t.name == "sharegpt" and len(t) == 3
    assert t.prompt_tokens.tolist() == [74, 290, 10]
    assert t.output_tokens.tolist() == [918, 905, 5]
    lm = read_trace(write(tmp_path, "lmsys.csv", "ContextTokens,GeneratedTokens\n156,67\n"))
    assert (lm.prompt_tokens.tolist(), lm.output_tokens.tolist()) == ([156], [67])
    tr = t.with_arrivals(np.array([0.0, 1.0, 2.0, 3.0, 4.0]), name="mix")
    assert tr.name == "mix" and tr.prompt_tokens.tolist() == [74, 290, 10, 74, 290]
    assert tr.meta["cycled"] is True and tr.meta["lengths"] == "sharegpt"
    assert t.with_arrivals(np.array([0.5])).output_tokens.tolist() == [918]


def test_length_table_sample_is_seeded():
    t = LengthTable(np.arange(1, 101), np.arange(101, 201), "t")
    a, b, c = t.sample(50, seed=3), t.sample(50, seed=3), t.sample(50, seed=4)
    assert a.prompt_tokens.tolist() == b.prompt_tokens.tolist() != c.prompt_tokens.tolist()
    assert (a.output_tokens - a.prompt_tokens == 100).all()  # rows stay paired
    rng = np.random.Generator(np.random.PCG64(3))
    assert a.prompt_tokens.tolist() == (rng.integers(0, 100, 50) + 1).tolist()
    perm = t.sample(100, seed=1, replace=False)
    assert sorted(perm.prompt_tokens.tolist()) == list(range(1, 101))
    assert a.meta["sampled"] == {"n": 50, "seed": 3, "replace": True}
    with pytest.raises(ValueError, match="n=101"):
        t.sample(101, replace=False)
    with pytest.raises(ValueError, match="must be >= 1"):
        LengthTable(np.array([0]), np.array([1]))


def test_detection(tmp_path):
    assert detect_format(write(tmp_path, "a.csv", AZURE)) == "azure"
    assert detect_format(write(tmp_path, "b.csv", BURST)) == "burstgpt"
    assert detect_format(write(tmp_path, "m.jsonl", mooncake_text())) == "mooncake"
    assert detect_format(write(tmp_path, "m.dat", mooncake_text())) == "mooncake"
    assert detect_format(write(tmp_path, "s.csv.gz", SHAREGPT)) == "lengths"
    assert detect_format(write(tmp_path, "x.csv", "a,b\n1,2\n"), mapping={}) == "generic"


def test_unknown_format_lists_formats_and_header(tmp_path):
    p = write(tmp_path, "x.csv", "when,prompt,out\n1,2,3\n")
    with pytest.raises(TraceFormatError) as e:
        read_trace(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: cannot tell the trace format (first line 'when,prompt,out')")
    for name in ("azure (", "burstgpt (", "mooncake (", "lengths (", "generic ("):
        assert name in msg
    with pytest.raises(TraceFormatError, match="unknown format 'sharegpt'; supported"):
        read_trace(p, format="sharegpt")
