"""Attacks: the suite language (TOML), the attack-kind registry and our own attacks. May import core."""

from __future__ import annotations

from typing import Any

from . import suites as _impl
from .suites import *  # noqa: F403 - the package is the public path


def __getattr__(name: str) -> Any:
    """Names of :mod:`robustclip.attacks.suites` not exported by ``*`` (private helpers, for old callers)."""
    return getattr(_impl, name)
