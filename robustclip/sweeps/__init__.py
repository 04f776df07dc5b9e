"""Sweeps: the plan, its records on disk, the driver, one run, locks (claims) and the engines that compute runs. May
import evaluation and below."""

from __future__ import annotations

from typing import Any

from . import driver as _driver
from . import planning as _planning
from . import records as _records
from .driver import *  # noqa: F403 - the package is the public path
from .planning import *  # noqa: F403
from .records import *  # noqa: F403


def __getattr__(name: str) -> Any:
    """Names of the plan, records and driver modules not exported by ``*`` (private helpers, for old callers)."""
    for mod in (_planning, _records, _driver):
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
