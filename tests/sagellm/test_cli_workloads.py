"""sagellm workloads describe: statistics, plot, bad input."""

from __future__ import annotations

import json

from click.testing import CliRunner

from sagellm.cli import main

AZURE = """TIMESTAMP,ContextTokens,GeneratedTokens
2023-11-16 18:17:03.9799600,100,10
2023-11-16 18:17:04.9799600,200,20
2023-11-16 18:17:05.9799600,300,30
2023-11-16 18:17:08.9799600,400,40
"""


def test_describe_azure_json_and_plot(tmp_path):
    path = tmp_path / "az.csv"
    path.write_text(AZURE)
    png = tmp_path / "out" / "az.png"
    result = CliRunner().invoke(main, ["workloads", "describe", str(path), "--json",
                                       "--plot", str(png)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["requests"] == 4 and data["duration_s"] == 5.0
    assert data["prompt_tokens"]["max"] == 400 and data["meta"]["format"] == "azure"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_describe_text(tmp_path):
    path = tmp_path / "az.csv"
    path.write_text(AZURE)
    result = CliRunner().invoke(main, ["workloads", "describe", str(path)])
    assert result.exit_code == 0, result.output
    assert "az: 4 requests" in result.output
    assert "span 5.0 s, rate 0.60 req/s" in result.output


def test_bad_row_names_file_line_field_and_skip_bad_counts(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text(AZURE.replace("300,30", "-3,30"))
    result = CliRunner().invoke(main, ["workloads", "describe", str(path)])
    assert result.exit_code != 0
    assert f"{path}:4: ContextTokens" in result.output
    result = CliRunner().invoke(main, ["workloads", "describe", str(path), "--skip-bad"])
    assert result.exit_code == 0, result.output
    assert "3 requests" in result.output and "skipped_bad_rows: 1" in result.output


def test_generic_mapping_and_bad_map(tmp_path):
    path = tmp_path / "g.csv"
    path.write_text("ts,in,out,who\n0,5,1,a\n1500,6,2,b\n")
    args = ["workloads", "describe", str(path), "--format", "generic", "--map", "arrival_s=ts",
            "--map", "prompt_tokens=in", "--map", "output_tokens=out", "--map", "tenant=who"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "2 requests" in result.output and "tenants: a 1, b 1" in result.output
    result = CliRunner().invoke(main, ["workloads", "describe", str(path), "--map", "oops"])
    assert result.exit_code != 0 and "expected FIELD=COLUMN" in result.output


def test_empty_file_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    result = CliRunner().invoke(main, ["workloads", "describe", str(path)])
    assert result.exit_code != 0 and "empty.csv" in result.output
