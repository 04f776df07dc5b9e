"""Reports: tables and figures of a sweep, or of evaluate folders with their paired comparison, as HTML and Markdown.
May import sweeps and below."""

from __future__ import annotations

from typing import Any

from . import pages as _impl
from .pages import *  # noqa: F403 - the package is the public path


def __getattr__(name: str) -> Any:
    """Names of :mod:`robustclip.reports.pages` not exported by ``*`` (private helpers, for old callers)."""
    return getattr(_impl, name)
