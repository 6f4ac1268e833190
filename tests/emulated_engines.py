"""``sagellm emulate`` engines in a process of their own, for tests that drive the project's
tools (the fidelity report, the calibration) over HTTP against engines whose iteration-time
profile is known."""

from __future__ import annotations

import contextlib
import itertools
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import numpy as np

from control_plane.perf.base import Batch
from control_plane.perf.profile import FittedPredictor, read_profile, resolve_profile

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
        # whatever it prints from now on is read too: a full pipe would block the engines
        threading.Thread(target=lines.extend, args=(proc.stdout,), daemon=True).start()
        yield urls
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)


def builtin_predictor(profile: str) -> FittedPredictor:
    """The predictor of a built-in profile (what emulated engines serving it run)."""
    return FittedPredictor.from_table(read_profile(resolve_profile(profile)))


def max_error(fitted: FittedPredictor, truth: FittedPredictor) -> float:
    """The largest |fitted / truth - 1| of the iteration time over a grid of 57 batches
    (prefills of 0-2048 tokens, 0-16 decoding sequences of 16-1024 tokens of context)."""
    errors = []
    for prompt, seqs, ctx in itertools.product((0, 16, 256, 1024, 2048), (0, 1, 4, 16),
                                               (16, 512, 1024)):
        if prompt or seqs:
            b = Batch(prefill_tokens=prompt, prefill_attention=prompt * prompt,
                      decode_seqs=seqs, decode_context=seqs * ctx)
            errors.append(fitted.iteration_s(b) / truth.iteration_s(b) - 1)
    return float(np.max(np.abs(errors)))
