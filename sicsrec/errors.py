"""The project's own error for bad input: it names the file, the line and the problem."""

from __future__ import annotations

import os


class DataError(ValueError):
    """Bad input data. ``str(err)`` reads ``file:line: problem (hint)``."""

    def __init__(self, path: str | os.PathLike | None, problem: str, line: int | None = None, hint: str | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        self.problem = problem
        self.hint = hint
        where = self.path or "<input>"
        if line is not None:
            where += f":{line}"
        message = f"{where}: {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class ConfigError(ValueError):
    """A configuration that contradicts itself or the data (e.g. a checkpoint for another catalogue)."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. a non-finite loss); says where, and what to resume from."""
