"""Training: the trainer, its λ schedule, and the regularisers. May import core, data, models, checkpoints, bounds
(for Lipschitz probes), attacks (the image view adversarial training attacks other inputs through)."""

from __future__ import annotations

from typing import Any

from . import trainer as _impl
from .trainer import *  # noqa: F403 - the package is the public path


def __getattr__(name: str) -> Any:
    """Names of :mod:`robustclip.training.trainer` not exported by ``*`` (private helpers, for old callers)."""
    return getattr(_impl, name)
