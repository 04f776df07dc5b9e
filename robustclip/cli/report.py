"""``robustclip report``: render tables and figures of a sweep folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import RobustclipError
from .common import add_command


def register(sub: Any) -> None:
    """Add the ``report`` subcommand."""
    p = add_command(sub, "report", run, help="render tables and figures of a sweep",
                    description="Render OUT/index.html (self-contained), OUT/README.md, CSV tables and seaborn PNG "
                    "figures from a sweep folder.",
                    examples="  robustclip report runs/mnist-lambda --out reports/mnist-lambda\n")
    p.add_argument("sweep_dir", metavar="SWEEP_DIR")
    p.add_argument("--out", default=None, metavar="DIR", help="default: reports/<sweep name>")
    p.add_argument("--title", default=None)


def run(args: argparse.Namespace) -> int:
    """Render the report of ``args.sweep_dir``."""
    from ..reports import render

    sweep_dir = Path(args.sweep_dir)
    if not (sweep_dir / "sweep.json").is_file():
        raise RobustclipError(f"{sweep_dir} is not a sweep folder (no sweep.json)",
                              "pass the --out folder of robustclip sweep")
    name = json.loads((sweep_dir / "sweep.json").read_text())["sweep"].get("name", sweep_dir.name)
    out = Path(args.out or Path("reports") / name)
    index = render(sweep_dir, out, title=args.title)
    print(f"report: {index}")
    return 0
