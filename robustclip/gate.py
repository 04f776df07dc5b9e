"""Robustness regression checks (``robustclip check``): placeholder until the CI layer lands."""

from __future__ import annotations

import argparse
from typing import Any


def add_command(sub: Any, fmt: Any) -> None:
    """Register ``check``."""


def cmd_check(args: argparse.Namespace) -> int:  # pragma: no cover
    raise NotImplementedError
