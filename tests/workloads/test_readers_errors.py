"""Bad input: every problem names file, line and field; skip_bad drops and counts rows."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from workloads.errors import TraceFormatError
from workloads.readers import read_azure, read_generic, read_lengths, read_trace

HEAD = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
T0, T1, T2 = "2023-11-16 18:17:03.9799600", "2023-11-16 18:17:04.0319600", \
    "2023-11-16 18:17:05.0000000"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    data = text.encode()
    path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    return path


def azure(tmp_path: Path, bad_row: str, name: str = "az.csv", before: str = "") -> Path:
    return write(tmp_path, name, f"{HEAD}{T0},10,1\n{before}{bad_row}\n{T2},30,3\n")


def error(path: Path, **kw) -> str:
    with pytest.raises(TraceFormatError) as e:
        read_trace(path, **kw)
    return str(e.value)


@pytest.mark.parametrize(("row", "where"), [
    (f"{T1},abc,2", "ContextTokens: not a number: 'abc'"),
    (f"{T1},12.5,2", "ContextTokens: not an integer: '12.5'"),
    (f"{T1},-3,2", "ContextTokens: must be >= 1, got -3"),
    (f"{T1},0,2", "ContextTokens: must be >= 1, got 0"),
    (f"{T1},,2", "ContextTokens: missing value"),
    (f"{T1},20,", "GeneratedTokens: missing value"),
    (f"{T1},20,0", "GeneratedTokens: must be >= 1, got 0 (zero_output='skip' drops such rows)"),
    (f"{T1},20,1e400", "GeneratedTokens: not a finite number: '1e400'"),
    ("yesterday,20,2", "TIMESTAMP: not a timestamp: 'yesterday' (expected ISO 8601 such as "
                       "'2023-11-16 18:17:03.9799600')"),
    (",20,2", "TIMESTAMP: missing value"),
    (f"{T1},20,2,9", "expected 3 fields as in the header, got 4: "
                     "['2023-11-16 18:17:04.0319600', '20', '2', '9']"),
    (f"{T1},20", "expected 3 fields as in the header, got 2: ['2023-11-16 18:17:04.0319600', "
                 "'20']"),
])
def test_malformed_row_names_file_line_field(tmp_path, row, where):
    p = azure(tmp_path, row)
    assert error(p) == f"{p}:3: {where}"
    tr = read_trace(p, skip_bad=True)
    assert tr.prompt_tokens.tolist() == [10, 30]
    assert tr.meta["skipped_bad_rows"] == 1 and tr.meta["first_bad"] == f"{p}:3: {where}"


def test_line_numbers_count_blank_lines_quoted_newlines_and_gz(tmp_path):
    p = azure(tmp_path, f"{T1},x,2", name="az.csv.gz", before="\n   \n")
    assert error(p) == f"{p}:5: ContextTokens: not a number: 'x'"
    p = write(tmp_path, "q.csv", f'{HEAD}{T0},10,1\n"{T1}\n",20,2\n{T2},-1,3\n')
    assert error(p) == f"{p}:5: ContextTokens: must be >= 1, got -1"


def test_every_row_with_an_extra_field_is_not_taken_as_an_index(tmp_path):
    p = write(tmp_path, "az.csv", f"{HEAD}{T0},10,1,7\n{T1},20,2,7\n")
    assert error(p).startswith(f"{p}:2: expected 3 fields as in the header, got 4")


def test_skip_bad_counts_every_bad_row_and_reports_the_first(tmp_path):
    p = write(tmp_path, "az.csv", f"{HEAD}{T0},10,1\n{T1},x,2\n{T1},5,-1\n,1,1\n{T2},30,3\n")
    tr = read_azure(p, skip_bad=True)
    assert tr.prompt_tokens.tolist() == [10, 30] and tr.arrival_s[-1] == pytest.approx(1.02004)
    assert tr.meta["skipped_bad_rows"] == 3
    assert tr.meta["first_bad"] == f"{p}:3: ContextTokens: not a number: 'x'"
    bad = write(tmp_path, "bad.csv", f"{HEAD}{T0},x,1\n{T1},y,1\n")
    assert error(bad, skip_bad=True) == (f"{bad}: no requests left of 2 rows (skipped_bad_rows=2)"
                                         f"; first bad: {bad}:2: ContextTokens: not a number: 'x'")


def test_zero_output_skip_option(tmp_path):
    p = azure(tmp_path, f"{T1},20,0")
    tr = read_azure(p, zero_output="skip")
    assert tr.output_tokens.tolist() == [1, 3] and tr.meta["zero_output_rows"] == 1
    assert tr.meta["skipped_bad_rows"] == 0
    with pytest.raises(ValueError, match="zero_output='drop'"):
        read_azure(p, zero_output="drop")


@pytest.mark.parametrize(("text", "message"), [
    ("", "no requests: the file is empty"),
    ("\n  \n", "no requests: the file is empty"),
    (HEAD, "no requests: no data rows"),
])
def test_empty_files(tmp_path, text, message):
    p = write(tmp_path, "az.csv", text)
    assert error(p, format="azure") == f"{p}: {message}"


def test_empty_files_other_formats(tmp_path):
    p = write(tmp_path, "m.jsonl.gz", "\n")
    assert error(p, format="mooncake") == f"{p}: no requests: the file is empty"
    p = write(tmp_path, "l.csv", "num_prefill_tokens,num_decode_tokens\n")
    assert error(p) == f"{p}: no requests: no data rows"
    p = write(tmp_path, "x.csv", "")
    assert error(p) == f"{p}: no requests: the file is empty"


def test_unsorted_timestamps(tmp_path):
    p = write(tmp_path, "az.csv", f"{HEAD}{T0},10,1\n\n{T2},30,3\n{T1},20,2\n")
    assert error(p) == (f"{p}:5: TIMESTAMP: '{T1}' is earlier than '{T2}' on line 4: rows "
                        "must be sorted by time (sort=True sorts them)")
    assert error(p, skip_bad=True).startswith(f"{p}:5: TIMESTAMP: ")
    tr = read_azure(p, sort=True)
    assert tr.prompt_tokens.tolist() == [10, 20, 30] and tr.meta["sorted"] is True
    assert tr.arrival_s.tolist() == [0.0, 0.052, 1.02004]


def test_missing_column_lists_the_columns(tmp_path):
    p = write(tmp_path, "az.csv", f"TIMESTAMP,ContextTokens\n{T0},10\n")
    assert error(p, format="azure") == (f"{p}:1: GeneratedTokens: required column is missing;"
                                        " the columns are: 'TIMESTAMP', 'ContextTokens'")
    p = write(tmp_path, "l.csv", "a,num_decode_tokens\n1,2\n")
    with pytest.raises(TraceFormatError, match=r"l.csv:1: num_prefill_tokens: required column"):
        read_lengths(p)


MOON = '{"timestamp": 0, "input_length": 600, "output_length": 5, "hash_ids": [0, 1]}\n'


@pytest.mark.parametrize(("line", "where"), [
    ('{"timestamp": 5, "input_length": 600', "invalid JSON (Expecting ',' delimiter at column "
     "38): '{\"timestamp\": 5, \"input_length\": 600'"),
    ("[1, 2]", "expected a JSON object, got '[1, 2]'"),
    ('{"timestamp": 5, "input_length": 600, "hash_ids": [0, 1]}', "output_length: missing "
     "value"),
    ('{"timestamp": 5, "input_length": 600, "output_length": 2, "hash_ids": [0]}',
     "hash_ids: has 1 block ids, expected ceil(input_length 600 / 512) = 2"),
    ('{"timestamp": 5, "input_length": 600, "output_length": 2, "hash_ids": "0,1"}',
     "hash_ids: expected a list of integers, got '0,1'"),
    ('{"timestamp": 5, "input_length": 600, "output_length": true, "hash_ids": [0, 1]}',
     "output_length: not a number: True"),
    ('{"timestamp": "soon", "input_length": 600, "output_length": 2, "hash_ids": [0, 1]}',
     "timestamp: not a number: 'soon'"),
    ('{"timestamp": 5, "input_length": 600.5, "output_length": 2, "hash_ids": [0, 1]}',
     "input_length: not an integer: 600.5"),
])
def test_mooncake_bad_records(tmp_path, line, where):
    p = write(tmp_path, "m.jsonl", f"{MOON}\n{line}\n{MOON.replace('0,', '9,', 1)}")
    assert error(p) == f"{p}:3: {where}"
    tr = read_trace(p, skip_bad=True)
    assert len(tr) == 2 and tr.meta["skipped_bad_rows"] == 1


def test_mooncake_missing_key_and_unsorted(tmp_path):
    p = write(tmp_path, "m.jsonl", '{"timestamp": 0, "input_length": 1, "output_length": 1}\n')
    assert error(p, format="mooncake") == (f"{p}:1: hash_ids: required key is missing; the "
                                           "first record's keys are: 'timestamp', "
                                           "'input_length', 'output_length'")
    recs = [{"timestamp": t, "input_length": 1, "output_length": 1, "hash_ids": [t]}
            for t in (0, 3000, 3000, 2000)]
    p = write(tmp_path, "u.jsonl", "".join(json.dumps(r) + "\n" for r in recs))
    assert error(p).startswith(f"{p}:4: timestamp: 2000 is earlier than 3000 on line 3")


def test_generic_bad_rows(tmp_path):
    m = {"arrival_s": "t", "prompt_tokens": "p", "output_tokens": "o", "priority": "q",
         "request_id": "id", "tenant": "who"}
    p = write(tmp_path, "g.csv", "t,p,o,q,id,who\n0,1,1,0,a,x\n1,1,1,7,b,x\n")
    with pytest.raises(TraceFormatError, match=r"g.csv:3: q: must be <= 4, got 7"):
        read_generic(p, m)
    p = write(tmp_path, "g.csv", "t,p,o,q,id,who\n0,1,1,0,a,x\n1,1,1,1,a,x\n")
    with pytest.raises(TraceFormatError, match=r"g.csv:3: id: duplicate request id 'a' \(first "
                                               r"on line 2\)"):
        read_generic(p, m)
    p = write(tmp_path, "g.csv", "t,p,o,q,id,who\n0,1,1,0,a,x\n1,1,1,1,b,\n")
    with pytest.raises(TraceFormatError, match=r"g.csv:3: who: missing value"):
        read_generic(p, m)
    p = write(tmp_path, "g.csv", "t,p,o,slo\n0,1,1,0\n")
    with pytest.raises(TraceFormatError, match=r"g.csv:2: slo: must be > 0, got 0"):
        read_generic(p, {"arrival_s": "t", "prompt_tokens": "p", "output_tokens": "o",
                         "slo_e2e_s": "slo"})
    p = write(tmp_path, "g.csv", "t,p,o\n-5,1,1\n")
    with pytest.raises(TraceFormatError, match=r"g.csv:2: t: must be >= 0, got -5"):
        read_generic(p, {"arrival_s": "t", "prompt_tokens": "p", "output_tokens": "o"},
                     relative=False)


def test_parquet_rows_are_numbered_from_one(tmp_path):
    p = tmp_path / "g.parquet"
    pd.DataFrame({"t": [0.0, 1.0, 2.0], "p": [1, -2, 3], "o": [1, 1, 1]}).to_parquet(p)
    m = {"arrival_s": "t", "prompt_tokens": "p", "output_tokens": "o"}
    assert error(p, mapping=m) == f"{p}:2: p: must be >= 1, got -2"
    with pytest.raises(TraceFormatError, match="x: required column is missing"):
        read_generic(p, m | {"output_tokens": "x"})


def test_length_table_bad_rows(tmp_path):
    p = write(tmp_path, "s.csv", "num_prefill_tokens,num_decode_tokens\n5,5\n5,x\n6,0\n")
    assert error(p) == f"{p}:3: num_decode_tokens: not a number: 'x'"
    t = read_trace(p, skip_bad=True, zero_output="skip")
    assert t.prompt_tokens.tolist() == [5]
    assert t.meta["skipped_bad_rows"] == 1 and t.meta["zero_output_rows"] == 1


def test_careful_pass_reads_what_the_fast_pass_reads(tmp_path):
    from workloads.readers._csv import read_csv_rows

    p = write(tmp_path, "az.csv", f"\ufeff{HEAD}{T0},10,1\n\n{T1},20,2\n{T2},30,3\n")
    fast = read_csv_rows(p, ["TIMESTAMP"])
    slow = read_csv_rows(p, ["TIMESTAMP"], careful=True)
    assert fast.header == slow.header == ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
    for col in fast.header:
        assert fast.columns[col].astype(str).tolist() == slow.columns[col].tolist()
    assert [slow.line(i) for i in range(3)] == [2, 4, 5]


def test_python_fallback_gives_the_same_answers(tmp_path, monkeypatch):
    import workloads.readers._csv as csv_mod

    def broken_pandas(*a, **kw):
        raise pd.errors.ParserError("simulated")

    monkeypatch.setattr(csv_mod, "_pandas", broken_pandas)
    p = write(tmp_path, "az.csv", AZ := f"{HEAD}{T0},10,1\n\n{T1},20,2\n{T2},30,3\n")
    assert read_azure(p).arrival_s.tolist() == [0.0, 0.052, 1.02004]
    p = write(tmp_path, "bad.csv", AZ.replace(",20,2", ",20,2,7"))
    assert error(p) == (f"{p}:4: expected 3 fields as in the header, got 4: "
                        f"['{T1}', '20', '2', '7']")
    p = write(tmp_path, "bad.csv", AZ.replace(",30,", ",3.5,"))
    assert error(p) == f"{p}:5: ContextTokens: not an integer: '3.5'"


def test_gzip_is_recognised_by_content(tmp_path):
    p = tmp_path / "trace.csv"
    p.write_bytes(gzip.compress(f"{HEAD}{T0},10,1\n{T1},x,2\n".encode()))
    assert error(p) == f"{p}:3: ContextTokens: not a number: 'x'"
    assert read_trace(p, skip_bad=True).prompt_tokens.tolist() == [10]


def test_leading_blank_lines_crlf_and_pre_epoch_dates(tmp_path):
    p = write(tmp_path, "az.csv", f"\r\n\r\n{HEAD}{T0},1,1\r\n\r\n{T1},x,1\r\n".replace(
        "\n", "\r\n").replace("\r\r", "\r"))
    assert error(p) == f"{p}:6: ContextTokens: not a number: 'x'"
    p = write(tmp_path, "old.csv", f"{HEAD}1969-12-31 23:59:59,1,1\n")
    assert error(p, relative=False) == (f"{p}:2: TIMESTAMP: '1969-12-31 23:59:59' is before "
                                        "1970: arrivals must be >= 0 (relative=True counts "
                                        "from the first row)")
