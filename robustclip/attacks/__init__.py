"""Attacks: the suite language (TOML, ``suites``), the attack-kind registry (``kinds``), our own attacks (``custom``),
finding suites by name (``library``) and any input shape (``shapes``). May import core."""

from __future__ import annotations

from typing import Any

from . import custom as _custom
from . import kinds as _kinds
from . import library as _library
from . import suites as _impl
from .suites import *  # noqa: F403 - the package is the public path


def __getattr__(name: str) -> Any:
    """Names of :mod:`robustclip.attacks.suites` (and of its kinds, library and custom modules) not exported by
    ``*`` (private helpers, for old callers)."""
    for mod in (_impl, _kinds, _library, _custom):
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
