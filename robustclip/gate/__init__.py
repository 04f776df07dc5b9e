"""The CI gate behind robustclip check: baselines, comparison beyond noise, output. May import evaluation and
below."""

from __future__ import annotations

from typing import Any

from . import check as _impl
from .check import *  # noqa: F403 - the package is the public path


def __getattr__(name: str) -> Any:
    """Names of :mod:`robustclip.gate.check` not exported by ``*`` (private helpers, for old callers)."""
    return getattr(_impl, name)
