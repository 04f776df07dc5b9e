"""Evaluation: a suite run per sample on a model (runner, with its certificates and memory guards) and the one
train -> checkpoint -> evaluate path (pipeline). May import everything above gate, sweeps and reports."""

from __future__ import annotations

from typing import Any

from . import certification as _certification
from . import memory as _memory
from . import runner as _impl
from .runner import *  # noqa: F403 - the package is the public path


def __getattr__(name: str) -> Any:
    """Names of :mod:`robustclip.evaluation.runner` (and of its certification and memory modules) not exported by
    ``*`` (private helpers, for old callers)."""
    for mod in (_impl, _certification, _memory):
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
