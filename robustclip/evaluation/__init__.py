"""Evaluation: a suite run per sample on a model (runner) and the one train -> checkpoint -> evaluate path
(pipeline). May import everything above gate, sweeps and reports."""

from __future__ import annotations

from typing import Any

from . import runner as _impl
from .runner import *  # noqa: F403 - the package is the public path


def __getattr__(name: str) -> Any:
    """Names of :mod:`robustclip.evaluation.runner` not exported by ``*`` (private helpers, for old callers)."""
    return getattr(_impl, name)
