"""Regularisers: the protocol (base), the registry (one entry per method), and each method: weight, clip (with
ClipPenalty in penalty), adversarial and TRADES, lipmargin (certified training), the hybrids. May import core, bounds
and the λ schedule (robustclip.training.schedule)."""

from __future__ import annotations

from typing import Any

from . import clip as _clip
from . import hybrid as _hybrid
from . import registry as _impl
from .registry import *  # noqa: F403 - the package is the public path


def __getattr__(name: str) -> Any:
    """Names of :mod:`robustclip.training.regularizers.registry` (and of its clip and hybrid modules) not exported by
    ``*`` (private helpers, for old callers)."""
    for mod in (_impl, _clip, _hybrid):
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
