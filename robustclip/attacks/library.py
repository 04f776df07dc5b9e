"""The suite library: the built-in suites, the suites shipped with robustclip, and finding a suite by name or path."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ..errors import SuiteError

BUILTIN_SUITES: dict[str, dict[str, Any]] = {
    "demo": {
        "name": "demo",
        "description": "Small suite for the demo: clean, FGSM and PGD-L2 (20 steps) at three radii.",
        "n": 500, "batch_size": 500, "seed": 0,
        "eps": {"L2": [0.5, 1.0, 2.0]},
        "headline": {"norm": "L2", "eps": 2.0},
        "attack": [
            {"type": "clean"},
            {"type": "noise", "sigma": 0.3},
            {"type": "fgsm", "norm": "L2"},
            {"type": "pgd", "norm": "L2", "steps": 20},
        ],
    },
}


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def shipped_suites_dir() -> Path | None:
    """The folder of the suites shipped with robustclip (``attacks/*.toml`` of the repo).

    Installed from a wheel they live in the package, ``robustclip/suites/``; run from a source checkout (an
    editable install, or ``PYTHONPATH`` pointing at it) they are the checkout's own ``attacks/``.
    """
    pkg = Path(__file__).resolve().parents[__name__.count(".") - 1]  # the package root, however deep this module is
    if (pkg / "suites").is_dir():
        return pkg / "suites"
    checkout = pkg.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "attacks").is_dir():
        return checkout / "attacks"
    return None


def suite_names() -> list[str]:
    """Names that ``--suite NAME`` resolves from any folder: the shipped suites, then the built-ins."""
    where = shipped_suites_dir()
    shipped = sorted(p.stem for p in where.glob("*.toml")) if where else []
    return shipped + [b for b in BUILTIN_SUITES if b not in shipped]


def find_suite(name_or_path: str | os.PathLike[str]) -> Path | str:
    """Resolve a suite argument, first match wins: an existing file path; ``./attacks/NAME.toml`` (relative to
    the current folder); the suite NAME shipped with robustclip; a built-in name (returned as a string)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    name = str(name_or_path)
    if p.suffix != ".toml" and _NAME_RE.match(name):
        for folder in (Path("attacks"), shipped_suites_dir()):
            cand = folder / f"{name}.toml" if folder is not None else None
            if cand is not None and cand.is_file():
                return cand
        if name in BUILTIN_SUITES:
            return name
    raise SuiteError(f"attack suite {name!r} not found",
                     f"pass a TOML file path, a name under ./attacks/, or one of: {', '.join(suite_names())}")
