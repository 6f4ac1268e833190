"""Errors for bad workload input: they name the file, the line and the field."""

from __future__ import annotations

__all__ = ["TraceFormatError"]


class TraceFormatError(ValueError):
    """A trace file (or row) is malformed. ``path``, ``line`` (1-based, as an editor shows
    it; None for whole-file problems) and ``field`` say where."""

    def __init__(self, path: str, line: int | None, field: str | None, message: str) -> None:
        self.path = str(path)
        self.line = line
        self.field = field
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"{field}: " if field else ""
        super().__init__(f"{where}: {what}{message}")
