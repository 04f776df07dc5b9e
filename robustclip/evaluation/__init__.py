"""Evaluation: a suite run per sample on a model (runner, running each attack in attacking, the frame and invariant in
summary, gradient-masking probes in masking, certificates in certification, memory guards in memory) and the one
train -> checkpoint -> evaluate path (pipeline). May import everything above gate, sweeps and reports."""

from __future__ import annotations

from typing import Any

from . import attacking as _attacking
from . import certification as _certification
from . import masking as _masking
from . import memory as _memory
from . import runner as _impl
from . import summary as _summary
from .runner import *  # noqa: F403 - the package is the public path


def __getattr__(name: str) -> Any:
    """Names of :mod:`robustclip.evaluation.runner` (and of the modules it was split into) not exported by ``*``
    (private helpers, for old callers)."""
    for mod in (_impl, _attacking, _summary, _masking, _certification, _memory):
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
