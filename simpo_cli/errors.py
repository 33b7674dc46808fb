"""User-facing errors: one readable line, exit code 2, no traceback (``SIMPO_DEBUG=1`` shows it)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad config, bad data, missing file). Printed as one line."""

    exit_code = 2


class ConfigError(UserError):
    """Every problem found in a composed config, reported at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid config: " + "; ".join(problems))


class DataError(UserError):
    """A data problem located by file, record and field."""

    def __init__(self, source: str, record: int | str | None, field: str | None, problem: str):
        where = source
        if record is not None:
            where += f": record {record}"
        if field:
            where += f": field '{field}'"
        super().__init__(f"{where}: {problem}")
