"""Shared validators for input as it enters: numbers (finite, in range), input files (regular, bounded) and outputs.

Every entry point (suite files, checkpoint headers, data files, CLI flags, training configs) checks its values with
these helpers, so a NaN, an Inf, a string where a number belongs, a FIFO, ``/dev/zero`` or a folder given as an output
ends in one :class:`~robustclip.errors.RobustclipError` (the problem and the fix) before any work is done.

>>> number(0.5, "eps", lo=0, lo_open=True)
0.5
>>> number(float("nan"), "eps")
Traceback (most recent call last):
...
robustclip.errors.RobustclipError: eps must be a finite number, got nan -- give a finite number
"""

from __future__ import annotations

import math
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import RobustclipError

MAX_SEED = 2**32 - 1
"""Largest seed accepted anywhere (numpy and torch both take it; offsets added per batch stay far from 2**63)."""


def number(value: Any, what: str, *, integer: bool = False, lo: float | None = None, hi: float | None = None,
           lo_open: bool = False, hi_open: bool = False, fix: str | None = None,
           error: type[RobustclipError] = RobustclipError) -> Any:
    """``value`` if it is a finite number (an ``int`` when ``integer``) within ``[lo, hi]``; else ``error``.

    Booleans and strings are refused (TOML ``"0.1"`` or ``true`` is not a number). ``lo_open``/``hi_open`` exclude
    the ends. Returns the value unchanged (ints stay ints).
    """
    kind = "a whole number" if integer else "a finite number"
    ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise error(f"{what} must be {kind}, got {value!r}", fix or f"give {kind}")
    if not integer and not math.isfinite(value):
        raise error(f"{what} must be a finite number, got {value!r}", fix or "give a finite number")
    too_low = lo is not None and (value < lo or (lo_open and value == lo))
    too_high = hi is not None and (value > hi or (hi_open and value == hi))
    if lo is not None and hi is not None and (too_high or (too_low and lo != 0)):
        span = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
        raise error(f"{what} must lie in {span}, got {value!r}", fix or f"give a value in {span}")
    if too_low:
        assert lo is not None
        if lo == 0:
            wanted = "a positive value" if lo_open else "a non-negative value"
        else:
            wanted = f"a value {'above' if lo_open else 'of at least'} {lo:g}"
        raise error(f"{what} must be {'>' if lo_open else '>='} {lo:g}, got {value!r}", fix or f"give {wanted}")
    if too_high:
        assert hi is not None
        raise error(f"{what} must be {'<' if hi_open else '<='} {hi:g}, got {value!r}",
                    fix or f"give a value {'below' if hi_open else 'of at most'} {hi:g}")
    return value


def seed(value: Any, what: str = "seed", *, error: type[RobustclipError] = RobustclipError) -> int:
    """A seed: a whole number in ``0 .. MAX_SEED``."""
    return int(number(value, what, integer=True, lo=0, hi=MAX_SEED, error=error,
                      fix=f"use a whole number from 0 to {MAX_SEED}"))


def regular_file(path: str | os.PathLike[str], what: str, *, max_bytes: int,
                 error: type[RobustclipError] = RobustclipError) -> int:
    """Check that ``path`` is a regular file of at most ``max_bytes`` bytes, before anything opens it; its size.

    ``os.stat`` follows links but never opens the file, so a FIFO (which would block), a device (``/dev/zero``
    never ends) or a folder is refused without reading a byte.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist", "check the path") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}", "check the path and permissions") from None
    return _check_stat(st, path, what, max_bytes, error)


def _check_stat(st: os.stat_result, path: str | os.PathLike[str], what: str, max_bytes: int,
                error: type[RobustclipError]) -> int:
    if stat.S_ISDIR(st.st_mode):
        raise error(f"{what} {path} is a folder, not a file", "pass the path of a file")
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{what} {path} is not a regular file (a pipe, socket or device)", "pass the path of a file")
    if st.st_size > max_bytes:
        raise error(f"{what} {path} is {st.st_size:,} bytes, more than the {max_bytes:,} allowed",
                    "pass the right file; this one is far too large to be one")
    return int(st.st_size)


def open_file(path: str | os.PathLike[str], what: str, *, max_bytes: int,
              error: type[RobustclipError] = RobustclipError) -> BinaryIO:
    """The one checked opener for everything robustclip reads: ``path`` opened for binary reading, after checking
    *the opened file* (``fstat`` on its descriptor, so a file swapped after a check cannot slip through) is a
    regular file of at most ``max_bytes`` bytes.

    The open itself never blocks: a FIFO (or a link to ``/dev/stdin``) is opened non-blocking and refused, a device
    (``/dev/zero``) or a folder too, each with one line. Links to regular files are followed (datasets are often
    linked in). The caller closes the file (``with open_file(...) as fh``) and must not read past ``max_bytes``.

    >>> try:
    ...     open_file("/dev/zero", "data file", max_bytes=10)
    ... except RobustclipError as exc:
    ...     print(exc.problem)
    data file /dev/zero is not a regular file (a pipe, socket or device)
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist", "check the path") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder, not a file", "pass the path of a file") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}", "check the path and permissions") from None
    try:
        _check_stat(os.fstat(fd), path, what, max_bytes, error)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike[str], what: str, *, max_bytes: int,
               error: type[RobustclipError] = RobustclipError) -> bytes:
    """The bytes of regular file ``path`` (opened with :func:`open_file`), never more than ``max_bytes``."""
    with open_file(path, what, max_bytes=max_bytes, error=error) as fh:
        try:
            raw = fh.read(max_bytes + 1)
        except OSError as exc:
            raise error(f"cannot read {what} {path}: {exc.strerror or exc}", "check the path and permissions") \
                from None
    if len(raw) > max_bytes:  # it grew after the check
        raise error(f"{what} {path} is more than the {max_bytes:,} bytes allowed", "pass the right file")
    return raw


def output_file(path: str | os.PathLike[str], what: str = "--out", *, force: bool = False,
                inputs: tuple[str | os.PathLike[str] | None, ...] = ()) -> Path:
    """Check, before any work, that file ``path`` can be written (see :func:`robustclip.core.outputs.guard_output`)."""
    from .outputs import guard_output

    return guard_output(path, inputs=inputs, force=force, what=what)


def output_dir(path: str | os.PathLike[str], files: tuple[str, ...], what: str = "--out", *,
               force: bool = False, inputs: tuple[str | os.PathLike[str], ...] = ()) -> Path:
    """Check, before any work, that folder ``path`` can take ``files`` (see
    :func:`robustclip.core.outputs.guard_output_dir`). Creates nothing."""
    from .outputs import guard_output_dir

    return guard_output_dir(path, files, inputs=inputs, force=force, what=what)
