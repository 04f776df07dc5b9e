"""The one exit-code table that every ``robustclip`` command follows.

===  ==========================================================================
0    success: the work ran and found nothing wrong
1    the work ran and found a failure (a regression in ``check``, failed runs
     in a ``sweep``)
2    a usage or input error: a bad flag, a missing or corrupt file, an invalid
     suite or baseline; one line ``robustclip: error: <problem> -- <fix>``
3    an internal error (a bug in robustclip): one line, and the traceback only
     with ``ROBUSTCLIP_DEBUG=1``
130  interrupted (Ctrl-C)
===  ==========================================================================

A crash is never 1: 1 is reserved for results that a CI gate acts on.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit statuses of the command line (see the module docstring)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    INTERNAL = 3
    INTERRUPTED = 130


TABLE: dict[int, str] = {
    ExitCode.OK: "success",
    ExitCode.FAILURE: "the work ran and found a failure (a regression in check, failed runs in a sweep)",
    ExitCode.USAGE: "usage or input error",
    ExitCode.INTERNAL: "internal error (a bug in robustclip)",
    ExitCode.INTERRUPTED: "interrupted",
}


def epilog() -> str:
    """The exit-code table as text for ``--help``."""
    return "exit status:\n" + "\n".join(f"  {int(code):<4d}{text}" for code, text in TABLE.items())
