"""Checkpoints: the safetensors format with metadata inside, and loading any weights file a user hands us (foreign).
May import core, data, models."""

from __future__ import annotations

from typing import Any

from . import format as _impl
from .format import *  # noqa: F403 - the package is the public path


def __getattr__(name: str) -> Any:
    """Names of :mod:`robustclip.checkpoints.format` not exported by ``*`` (private helpers, for old callers)."""
    return getattr(_impl, name)
