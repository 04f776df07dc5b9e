"""Regularisers: the protocol (base), the registry, and each method (weight, CLIP with ClipPenalty, adversarial and
TRADES, the hybrid). May import core and bounds."""

from __future__ import annotations

from typing import Any

from . import registry as _impl
from .registry import *  # noqa: F403 - the package is the public path


def __getattr__(name: str) -> Any:
    """Names of :mod:`robustclip.training.regularizers.registry` not exported by ``*`` (private helpers, for old
    callers)."""
    return getattr(_impl, name)
