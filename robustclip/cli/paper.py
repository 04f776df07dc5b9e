"""``robustclip paper``: regenerate reports/paper/, the paper's experiments under an honest evaluation."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_command, add_data_dir


def register(sub: Any) -> None:
    """Add the ``paper`` subcommand."""
    p = add_command(sub, "paper", run, help="regenerate reports/paper/: the paper's experiments, honestly evaluated",
                    description="Run the preset sweep robustclip/presets/paper.toml (the regression; MNIST with "
                    "5 seeds of plain training, weight regularisation, CLIP, PGD adversarial training with 1, 3 and "
                    "7 steps, TRADES and the hybrid clip-adversarial; Fashion-MNIST with 3 seeds; the output-sigmoid "
                    "question), evaluate every model with the paper-mnist suite and score it on its validation "
                    "split, and write reports/paper/ with the committed checkpoints (chosen on validation), their "
                    "attacked and certified ε-curves, and their attacks on all 10,000 test images. Resumable: an "
                    "interrupted regeneration redoes only unfinished work.",
                    examples="  robustclip paper --data-dir ../shared/data --jobs 2\n")
    p.add_argument("--out", default="reports/paper", metavar="DIR")
    p.add_argument("--runs", default="runs/paper", metavar="DIR", help="sweep folder (default runs/paper)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each with its share of the cores (default 1)")
    p.add_argument("--full-test", default="checkpoints", metavar="SCOPE",
                   help="what to attack on all 10,000 test images: checkpoints (the default: the committed ones, "
                        "about 6 minutes per robust model on 2 cores), all (every MNIST and Fashion-MNIST run, hours "
                        "on 2 cores; the report then uses those rows throughout), a pattern of run ids such as "
                        "'mnist-clip-lam0.5-*' (reported per setting), or off; cached and resumable")
    add_data_dir(p)


def run(args: argparse.Namespace) -> int:
    """Regenerate the paper report."""
    from ..paper import regenerate

    index = regenerate(args.out, args.runs, data_dir=args.data_dir, jobs=args.jobs, full_test=args.full_test)
    print(f"report: {index}")
    return 0
