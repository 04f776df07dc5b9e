"""Datasets: MNIST and Fashion-MNIST from IDX files, the 1-D regression problem, and user data files. May import
core."""

from __future__ import annotations

from typing import Any

from . import datasets as _impl
from .datasets import *  # noqa: F403 - the package is the public path


def __getattr__(name: str) -> Any:
    """Names of :mod:`robustclip.data.datasets` not exported by ``*`` (private helpers, for old callers)."""
    return getattr(_impl, name)
