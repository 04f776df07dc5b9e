"""Running a user's code fenced: importing a factory module and calling the factory end in one line, not an exit.

``--model MODULE:CALLABLE`` imports the user's module (this runs its code) and calls the factory. Whatever that
code does is contained here:

* ``SystemExit`` (``sys.exit(0)``, argparse's ``--help`` run on import), ``KeyboardInterrupt`` raised by the code
  and any ``Exception`` become one :class:`~robustclip.errors.RobustclipError` (exit status 2), e.g.
  ``importing mypkg.nets raised SystemExit(0)``: a factory that exits can never make ``check`` pass;
* anything it prints goes to stderr (both ``sys.stdout`` and file descriptor 1 are pointed there while it runs),
  so ``check --json`` keeps a clean JSON stdout.

``os._exit()`` (and a crash of the interpreter) cannot be caught in-process: the process ends at once with the
status the code chose, and nothing is written. A CI job must therefore fail when the verdict file (``--junit-xml``
or ``--json`` output) is missing, as ``examples/github-actions.yml`` does; a vanished process never reads as a pass.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

from ..errors import RobustclipError

T = TypeVar("T")


def describe(exc: BaseException) -> str:
    """``SystemExit(0)``, ``ValueError('bad width')``: the exception's type and first line, for one-line errors."""
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r})"
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}({first!r})" if first else type(exc).__name__


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Send what is printed (Python's ``sys.stdout`` and, where it is a real file, descriptor 1) to stderr."""
    saved_fd = None
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
    try:
        out_fd, err_fd = sys.__stdout__.fileno(), sys.__stderr__.fileno()  # type: ignore[union-attr]
        saved_fd = os.dup(out_fd)
        os.dup2(err_fd, out_fd)
    except (AttributeError, OSError, ValueError):  # no real descriptors (e.g. captured streams): Python level only
        saved_fd = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        if saved_fd is not None:
            os.dup2(saved_fd, sys.__stdout__.fileno())  # type: ignore[union-attr]
            os.close(saved_fd)


def fenced(action: str, fn: Callable[[], T], *, fix: str) -> T:
    """``fn()`` with its prints on stderr; ``SystemExit``, ``KeyboardInterrupt`` and any exception it raises become
    one :class:`RobustclipError`, ``"<action> raised <exception> -- <fix>"``."""
    try:
        with stdout_to_stderr():
            return fn()
    except RobustclipError:
        raise
    except (Exception, SystemExit, KeyboardInterrupt) as exc:
        raise RobustclipError(f"{action} raised {describe(exc)}", fix) from None

