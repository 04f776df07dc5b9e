"""Deprecated path: ``robustclip.lipschitz`` moved to ``robustclip.bounds.lipschitz``; this alias warns and will be
removed."""

from __future__ import annotations

import warnings
from typing import Any

from .bounds import lipschitz as _new
from .bounds.lipschitz import *  # noqa: F403

warnings.warn(f"{__name__} is deprecated: import robustclip.bounds.lipschitz",
              DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:
    return getattr(_new, name)
