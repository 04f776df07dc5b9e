"""Subcommands added by later layers (sweep, report, check, demo)."""

from __future__ import annotations

import argparse
from typing import Any, Callable

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def add_commands(sub: Any, fmt: Any) -> None:
    """Register the commands of the later layers on the subparser ``sub``."""
