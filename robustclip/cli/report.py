"""``robustclip report``: render tables and figures of a sweep folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

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
    from ..sweeps import read_info

    sweep_dir = Path(args.sweep_dir)
    name = str(read_info(sweep_dir)["sweep"].get("name", sweep_dir.name))  # missing or corrupt: one-line error
    out = Path(args.out or Path("reports") / name)
    index = render(sweep_dir, out, title=args.title)
    print(f"report: {index}")
    return 0
