"""Helpers for result tables: the one metric-key format, the one row selector, and the one Markdown table writer.

Evaluation frames and sweep tables share the columns ``attack``, ``norm`` (``"L2"``, ``"Linf"`` or ``"none"``)
and ``eps`` (0.0 where there is no ε). Every place that names or picks a row goes through this module, so a
metric is spelled the same in the console, the baseline and the report.

>>> metric_key("worst_case", "L2", 2.0)
'worst_case@L2:2'
>>> metric_key("clean", "none", 0.0)
'clean'
>>> canonical_key("worst_case@L2:1.0")
'worst_case@L2:1'
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd

EPS_MATCH = 1e-9  # ε values are read from TOML and JSON: equal within this are the same grid point


def metric_key(attack: str, norm: str | None, eps: float | None) -> str:
    """The name of one row: ``attack`` alone without a norm, else ``attack@norm:ε``."""
    if norm in (None, "none"):
        return attack
    return f"{attack}@{norm}:{float(eps or 0.0):g}"


def canonical_key(key: str) -> str:
    """A metric key as :func:`metric_key` spells it, however its ε was written: ``"pgd@L2:1.0"``, ``"pgd@L2:1"`` and
    ``"pgd@L2:1e0"`` all become ``"pgd@L2:1"``. A key without ``@`` or whose ε is not a number is returned as given
    (the caller then reports it as unknown)."""
    attack, at, rest = key.partition("@")
    norm, colon, eps = rest.partition(":")
    if not at or not colon:
        return key
    try:
        return metric_key(attack, norm, float(eps))
    except ValueError:
        return key


def row_key(row: dict[str, Any]) -> str:
    """:func:`metric_key` of a row dict with ``attack``, ``norm`` and ``eps``."""
    return metric_key(row["attack"], row.get("norm"), row.get("eps"))


def select(frame: pd.DataFrame, attack: str | None = None, norm: str | None = None,
           eps: float | None = None) -> pd.DataFrame:
    """Rows of ``frame`` with this attack, norm and ε (each ignored when None)."""
    mask = pd.Series(True, index=frame.index)
    if attack is not None:
        mask &= frame.attack == attack
    if norm is not None:
        mask &= frame.norm == norm
    if eps is not None:
        mask &= (frame.eps - eps).abs() < EPS_MATCH
    return frame[mask]


def markdown_table(frame: pd.DataFrame, columns: Sequence[str],
                   cell: Callable[[pd.Series, str], str] | None = None) -> str:
    """A GitHub Markdown table of ``columns``; ``cell(row, column)`` formats a cell (default: ``str``)."""
    if frame.empty:
        return "_(no rows)_"
    fmt = cell or (lambda r, c: "" if r.get(c) is None else str(r.get(c)))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(fmt(r, c) for c in columns) + " |")
    return "\n".join(lines)
