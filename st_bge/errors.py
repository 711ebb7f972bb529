"""Errors a user can cause, each carrying one message that says where the problem is.

Everything raised here reaches the user as a single line from `st-bge` or `recipes/*.py` (no stack trace),
and always before training starts, so a bad file never costs a half-finished run.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from os import PathLike


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest of `known` to a misspelt key or column, else an empty string."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class StBgeError(Exception):
    """Base class for problems in the user's input (recipes, data files, paths)."""


class ConfigError(StBgeError):
    """A recipe or command-line flag that cannot be used as given."""


class DataError(StBgeError):
    """A data file (or Hub dataset) that cannot be turned into training or evaluation data.

    Args:
        source: The file, folder or Hub id the problem was found in.
        message: What is wrong, in the user's terms.
        line: 1-based line (jsonl, tsv, csv) or row (json, parquet, Hub) number, if the problem is in one record.
        field: The field (column) at fault, if any.
    """

    def __init__(
        self, source: str | PathLike, message: str, *, line: int | None = None, field: str | None = None
    ) -> None:
        self.source = str(source)
        self.line = line
        self.field = field
        where = self.source
        if line is not None:
            where += f", line {line}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {message}")


class HubError(StBgeError):
    """A Hub request that failed (no access, no connection, a rejected commit), said in one line."""
