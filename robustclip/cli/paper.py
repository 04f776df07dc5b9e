"""``robustclip paper``: regenerate reports/paper/, the paper's experiments under an honest evaluation."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_command, add_data_dir


def register(sub: Any) -> None:
    """Add the ``paper`` subcommand."""
    p = add_command(sub, "paper", run, help="regenerate reports/paper/: the paper's experiments, honestly evaluated",
                    description="Run the preset sweep robustclip/presets/paper.toml (regression, MNIST and "
                    "Fashion-MNIST with 3 seeds, and the output-sigmoid question), evaluate every model with "
                    "the paper-mnist suite, and write reports/paper/. Resumable. About 45-60 minutes on 2 cores.",
                    examples="  robustclip paper --data-dir ../shared/data\n")
    p.add_argument("--out", default="reports/paper", metavar="DIR")
    p.add_argument("--runs", default="runs/paper", metavar="DIR", help="sweep folder (default runs/paper)")
    p.add_argument("--jobs", type=int, default=1)
    add_data_dir(p)


def run(args: argparse.Namespace) -> int:
    """Regenerate the paper report."""
    from ..paper import regenerate

    index = regenerate(args.out, args.runs, data_dir=args.data_dir, jobs=args.jobs)
    print(f"report: {index}")
    return 0
