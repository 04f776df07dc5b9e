"""Sweeps: the plan, one run, locks (claims) and the engines that compute runs. May import evaluation and below."""

from __future__ import annotations

from typing import Any

from . import planning as _impl
from .planning import *  # noqa: F403 - the package is the public path


def __getattr__(name: str) -> Any:
    """Names of :mod:`robustclip.sweeps.planning` not exported by ``*`` (private helpers, for old callers)."""
    return getattr(_impl, name)
