"""Models built from plain, JSON-serialisable specs. May import core."""

from __future__ import annotations

from typing import Any

from . import specs as _impl
from .specs import *  # noqa: F403 - the package is the public path


def __getattr__(name: str) -> Any:
    """Names of :mod:`robustclip.models.specs` not exported by ``*`` (private helpers, for old callers)."""
    return getattr(_impl, name)
