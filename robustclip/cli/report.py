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
    p.add_argument("--force", action="store_true",
                   help="overwrite the report files (index.html, README.md, tables, figures) if DIR holds them")


REPORT_FILES = ("index.html", "README.md", "results.csv", "table.csv", "regression_fits.png")
"""The files ``report`` writes into DIR, and the globs of its figures (checked before any work)."""
FIGURE_GLOBS = ("curve_*.png", "lambda_*.png", "history_*.png", "tradeoff_*.png", "frontier_*.png")


def run(args: argparse.Namespace) -> int:
    """Render the report of ``args.sweep_dir``."""
    from ..core.outputs import guard_output_dir
    from ..reports.pages import render
    from ..sweeps.records import read_info

    sweep_dir = Path(args.sweep_dir)
    name = str(read_info(sweep_dir)["sweep"].get("name", sweep_dir.name))  # missing or corrupt: one-line error
    out = Path(args.out or Path("reports") / name)
    inputs = [sweep_dir / "results.csv", sweep_dir / "sweep.json", *sorted(sweep_dir.glob("runs/*/*"))]
    guard_output_dir(out, REPORT_FILES, inputs=inputs, force=args.force, patterns=FIGURE_GLOBS)
    index = render(sweep_dir, out, title=args.title)
    print(f"report: {index}")
    return 0
