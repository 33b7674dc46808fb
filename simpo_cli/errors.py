"""User-facing errors: one readable line, exit code 2, no traceback (``SIMPO_DEBUG=1`` shows it)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix (bad config, bad data, missing file). Printed as one line."""

    exit_code = 2
    # False: the command's fresh run directory is removed (no half-written outputs). True for
    # failures mid-training whose checkpoints/metrics are worth keeping.
    keep_outputs = False


class ConfigError(UserError):
    """Every problem found in a composed config, reported at once."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid config: " + "; ".join(problems))


class DataError(UserError):
    """A data problem located by file, record and field."""

    def __init__(self, source: str, record: int | str | None, field: str | None, problem: str):
        self.source, self.record, self.field, self.problem = source, record, field, problem
        where = source
        if record is not None:
            where += f": record {record}"
        if field:
            where += f": field '{field}'"
        super().__init__(f"{where}: {problem}")


class TrainingDiverged(UserError):
    """A non-finite loss or gradient beyond ``trainer.nan_skip_budget``; the run stops before the
    optimizer applies it, so the last checkpoint stays good."""

    exit_code = 3
    keep_outputs = True


class Interrupted(UserError):
    """SIGTERM/SIGINT: a checkpoint was written and the run stopped (exit 128 + signal number)."""

    keep_outputs = True

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
