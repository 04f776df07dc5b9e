"""Progress bars that behave in CI: off without a terminal, off with ``TQDM_DISABLE``, one place to decide.

Every progress bar of robustclip comes from :func:`bar`. It is drawn only when the caller wants it
(``enabled``), ``TQDM_DISABLE`` is unset (or ``0``/``false``/``no``/empty), and stderr is a terminal: piped into
a CI log, a bar would write a ``\\r`` frame per update. :func:`write` prints a line without breaking a live bar.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["bar", "enabled_here", "write"]

_FALSE = ("", "0", "false", "no", "off")


def enabled_here(enabled: bool = True) -> bool:
    """True when a bar asked for with ``enabled`` would actually be drawn here (see the module docstring)."""
    if not enabled or os.environ.get("TQDM_DISABLE", "").strip().lower() not in _FALSE:
        return False
    stream = sys.stderr
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kw: Any) -> tqdm:
    """A ``tqdm`` bar over ``iterable`` (or with ``total=``), disabled unless :func:`enabled_here` says so.

    Keyword arguments go to ``tqdm``; a ``disable`` among them is combined with the decision (either turns it off).
    """
    disable = bool(kw.pop("disable", False)) or not enabled_here(enabled)
    return tqdm(iterable, disable=disable, **kw)


def write(msg: str) -> None:
    """Print ``msg`` on stdout, above any live bar."""
    tqdm.write(msg)
