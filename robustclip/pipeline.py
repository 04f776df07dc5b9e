"""Deprecated path: ``robustclip.pipeline`` moved to ``robustclip.evaluation.pipeline``; this alias warns and will be
removed."""

from __future__ import annotations

import warnings
from typing import Any

from .evaluation import pipeline as _new
from .evaluation.pipeline import *  # noqa: F403

warnings.warn(f"{__name__} is deprecated: import robustclip.evaluation.pipeline",
              DeprecationWarning, stacklevel=2)


def __getattr__(name: str) -> Any:
    return getattr(_new, name)
