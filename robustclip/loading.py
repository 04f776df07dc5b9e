"""Deprecated path: ``robustclip.loading`` moved to ``robustclip.checkpoints.foreign``; this alias warns and will be
removed."""

from __future__ import annotations

import warnings
from typing import Any

from .checkpoints import foreign as _new
from .checkpoints.foreign import *  # noqa: F403

warnings.warn(f"{__name__} is deprecated: import robustclip.checkpoints.foreign",
              DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:
    return getattr(_new, name)
