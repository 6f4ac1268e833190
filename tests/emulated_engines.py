"""``sagellm emulate`` engines in a process of their own, for tests that drive the project's
tools (the fidelity report, the calibration) over HTTP against engines whose iteration-time
profile is known."""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import sys
from collections.abc import Iterator

from control_plane.perf.profile import resolve_profile

BLOCKS, BLOCK = 256, 128


@contextlib.contextmanager
def emulated_engines(profile: str, served: str, instances: int = 1,
                     shared_host: bool = False) -> Iterator[list[str]]:
    """``instances`` emulated engines serving ``served`` with the iteration times of the
    built-in ``profile`` and its engine settings (16 sequences, 4096 tokens a step; KV
    ``BLOCKS`` blocks of ``BLOCK`` tokens; ``shared_host``: slowing each other down by the
    profile's neighbour slowdowns): their URLs; stopped after."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "from sagellm.cli import main; main()", "emulate",
         "--model", "llama-3-8b", "--served-model-name", served,
         "--profile", str(resolve_profile(profile)), "--instances", str(instances),
         "--port", "0", "--max-num-seqs", "16", "--max-num-batched-tokens", "4096",
         "--block-size", str(BLOCK), "--num-gpu-blocks", str(BLOCKS),
         *(["--shared-host"] if shared_host else [])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    urls, lines = [], []
    try:
        while len(urls) < instances:
            line = proc.stdout.readline()
            assert line, "sagellm emulate ended early:\n" + "".join(lines)
            lines.append(line)
            m = re.match(r"engine (http://\S+) ", line)
            if m:
                urls.append(m.group(1))
        yield urls
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
