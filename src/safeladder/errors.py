"""Errors that users see. Each one names the place (file, line, field) where it can."""

from __future__ import annotations


class SafeLadderError(Exception):
    """Base class for errors caused by user input or environment, shown without a traceback."""


class ConfigError(SafeLadderError):
    """A configuration file or value is invalid."""


class DataError(SafeLadderError):
    """A data row is invalid. The message names `file:line: field: problem`."""

    def __init__(self, path: str, line: int | None, field: str | None, problem: str):
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = self.path if line is None else f"{self.path}:{line}"
        what = f"{field}: {problem}" if field else problem
        super().__init__(f"{where}: {what}")
