"""Where the public workload traces are, for examples and notebooks.

The public traces (Azure 2023, Mooncake, ServeGen, length tables; described in their own
README) are data, not part of the repository: they sit in ``shared/traces`` next to the
clone (``<clone>/../shared/traces``). They are read where they are, never copied in.
``$SAGELLM_TRACES`` names another folder.

:func:`find_trace` looks one up by file name and says what it found; a missing file is
not an error: the caller falls back to a synthetic workload and the lookup's text says so
(``str(lookup)``), so a notebook run on a machine without the traces is explicit about it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from workloads.readers import LengthTable, read_trace
from workloads.trace import Trace

__all__ = ["TRACES_ENV", "TraceLookup", "default_traces_dir", "find_trace"]

TRACES_ENV = "SAGELLM_TRACES"


def default_traces_dir() -> Path:
    """``$SAGELLM_TRACES`` if set, else ``shared/traces`` beside the repository."""
    env = os.environ.get(TRACES_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parent.parent.parent / "shared" / "traces"


@dataclass(frozen=True, slots=True)
class TraceLookup:
    """The result of :func:`find_trace`: ``path`` is None when the file is absent."""

    name: str
    directory: Path
    path: Path | None

    @property
    def found(self) -> bool:
        return self.path is not None

    @property
    def trace(self) -> str | None:
        """The path as text, or None (``WorkloadChoice(trace=None)``: the synthetic mix)."""
        return None if self.path is None else str(self.path)

    def read(self) -> Trace | LengthTable | None:
        """The file read by format (:func:`workloads.read_trace`), or None when absent."""
        return None if self.path is None else read_trace(self.path)

    def lengths(self, prompt_tokens: int = 1024, output_tokens: int = 256) -> LengthTable:
        """The file's (prompt, output) token lengths, or when it is absent one request of
        ``prompt_tokens`` / ``output_tokens`` (the planner's fixed-length default)."""
        data = self.read()
        if data is None:
            return LengthTable(np.array([prompt_tokens], dtype=np.int64),
                               np.array([output_tokens], dtype=np.int64),
                               name=f"fixed lengths {prompt_tokens}/{output_tokens}")
        return LengthTable(data.prompt_tokens, data.output_tokens, name=data.name)

    def __str__(self) -> str:
        if self.path is not None:
            return f"trace: {self.path}"
        return (f"trace {self.name!r} not found in {self.directory} (set ${TRACES_ENV} to "
                "the folder of the public traces): using a synthetic workload instead")


def find_trace(name: str, directory: str | Path | None = None) -> TraceLookup:
    """Look up the trace file ``name`` in ``directory`` (default: :func:`default_traces_dir`).
    An absolute ``name`` is used as it is."""
    d = Path(directory) if directory is not None else default_traces_dir()
    p = Path(name) if Path(name).is_absolute() else d / name
    return TraceLookup(name, d, p if p.is_file() else None)
