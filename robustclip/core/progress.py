"""Progress that behaves in CI: a live bar on a terminal, a plain line every ~30 s in a log, one place to decide.

Every progress bar of robustclip comes from :func:`bar`. When the caller wants it (``enabled``) and
``TQDM_DISABLE`` is unset (or ``0``/``false``/``no``/empty), it is a live tqdm bar if stderr is a terminal. Piped
into a CI log, where a bar would write a ``\\r`` frame per update, it prints nothing for the first
:data:`LOG_INTERVAL` seconds, then one plain line (``desc: 3/8 ... elapsed<remaining``) every
:data:`LOG_INTERVAL` seconds and a last one when it ends. :func:`write` prints a line without breaking a live bar;
:func:`note` prints a one-line remark on stderr (settings, an estimated time) when progress is on; :func:`resolve`
turns the Python API's ``progress=None`` into "on when stderr is a terminal".
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm

__all__ = ["LOG_INTERVAL", "bar", "enabled_here", "note", "resolve", "write"]

_FALSE = ("", "0", "false", "no", "off")
LOG_INTERVAL = 30.0
"""Seconds between two plain progress lines in a log (and before the first)."""


def _disabled_by_env() -> bool:
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in _FALSE


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream is not None and stream.isatty())
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def resolve(progress: bool | None) -> bool:
    """``progress`` as asked; None (the Python API's default) means on exactly when stderr is a terminal."""
    return _is_tty(sys.stderr) if progress is None else bool(progress)


def enabled_here(enabled: bool = True) -> bool:
    """True when a bar asked for with ``enabled`` would be drawn live here (see the module docstring)."""
    if not enabled or _disabled_by_env():
        return False
    return _is_tty(sys.stderr)


class _Lines:
    """A file for tqdm that turns its carriage-return frames into whole lines, at most one per :data:`LOG_INTERVAL`
    seconds (a refresh in between is held back); the last frame is written when the bar closes, if the bar lived
    at least that long. Empty frames are dropped."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.start = self.last = time.monotonic()
        self.pending = self.written = ""

    def write(self, text: str) -> int:
        parts = [p.strip() for p in text.replace("\r", "\n").split("\n") if p.strip()]
        now = time.monotonic()
        if parts:
            self.pending = parts[-1]
            if now - self.last >= LOG_INTERVAL:
                self._emit(now)
        elif "\n" in text and self.pending and now - self.start >= LOG_INTERVAL:  # the bar closes
            self._emit(now)
        return len(text)

    def _emit(self, now: float) -> None:
        if self.pending != self.written:  # a close repeats the last frame: one line is enough
            self.stream.write(self.pending + "\n")
            self.written = self.pending
        self.pending = ""
        self.last = now

    def flush(self) -> None:
        with contextlib.suppress(AttributeError, ValueError):
            self.stream.flush()


def bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **kw: Any) -> tqdm:
    """A ``tqdm`` bar over ``iterable`` (or with ``total=``): live on a terminal, plain lines in a log (see the
    module docstring), nothing when not ``enabled`` or with ``TQDM_DISABLE``.

    Keyword arguments go to ``tqdm``; a ``disable`` among them is combined with the decision (either turns it off).
    """
    off = bool(kw.pop("disable", False)) or not enabled or _disabled_by_env()
    if off or enabled_here(enabled):
        return tqdm(iterable, disable=off, **kw)
    stream = kw.pop("file", None) or sys.stderr
    for key in ("leave", "mininterval", "maxinterval", "dynamic_ncols", "ncols", "ascii"):
        kw.pop(key, None)
    kw.setdefault("bar_format", "{desc}: {n_fmt}/{total_fmt} done, {elapsed} elapsed, ~{remaining} left{postfix}")
    kw.pop("delay", None)
    return tqdm(iterable, file=_Lines(stream), mininterval=LOG_INTERVAL, maxinterval=LOG_INTERVAL, leave=True,
                ascii=True, ncols=100, **kw)


def note(msg: str, *, enabled: bool = True) -> None:
    """Print one remark (a setting, an estimated time) on stderr, above any live bar; nothing when not ``enabled``
    or with ``TQDM_DISABLE``."""
    if enabled and not _disabled_by_env():
        tqdm.write(msg, file=sys.stderr)


def write(msg: str) -> None:
    """Print ``msg`` on stdout, above any live bar."""
    tqdm.write(msg)
