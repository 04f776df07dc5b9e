"""User-facing errors: one exception type per kind of bad input, each naming the problem and the fix.

Every problem caused by user input (a missing file, a bad flag, a tampered
checkpoint) is raised as :class:`RobustclipError`. The CLI prints its message
on one line and exits with status 2; no traceback is shown. Programming errors
keep their normal exceptions.
"""

from __future__ import annotations


class RobustclipError(Exception):
    """An error in user input: the message names the problem and the fix."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(f"{problem} -- {fix}" if fix else problem)


class DataError(RobustclipError):
    """Dataset files are missing, corrupt or inconsistent."""


class CheckpointError(RobustclipError):
    """A checkpoint cannot be loaded safely or does not fit its spec."""


class SuiteError(RobustclipError):
    """An attack suite or sweep file is invalid."""


class OutputError(RobustclipError, OSError):
    """An output cannot be written (disk full, permission denied, a bad target). Also an :class:`OSError`, so
    code that retries on I/O errors (a claim's heartbeat) still sees it as one."""
