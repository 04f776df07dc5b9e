"""``robustclip paper``: regenerate reports/paper/ by running the paper experiment (experiments/paper/ of a source
checkout; the wheel holds the toolkit only, so an installed copy refuses with a one-line error)."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import RobustclipError
from .common import add_command, add_data_dir

EXPERIMENT = Path("experiments") / "paper" / "experiment.py"


def register(sub: Any) -> None:
    """Add the ``paper`` subcommand."""
    p = add_command(sub, "paper", run, help="regenerate reports/paper/: the paper's experiments, honestly evaluated",
                    description="From a source checkout, run the paper experiment experiments/paper/ (the "
                    "regression; MNIST with 5 seeds of plain training, weight regularisation, CLIP, PGD "
                    "adversarial training with 1, 3 and 7 steps, TRADES and the hybrid clip-adversarial; "
                    "Fashion-MNIST with 3 seeds; the output-sigmoid question), evaluate every model with the "
                    "paper-mnist suite and score it on its validation split, and write reports/paper/ with the "
                    "committed checkpoints (chosen on validation), their attacked and certified ε-curves, and their "
                    "attacks on all 10,000 test images. Resumable: an interrupted regeneration redoes only "
                    "unfinished work.",
                    examples="  robustclip paper --data-dir ../shared/data --jobs 2\n"
                             "  robustclip paper --refresh sandwich --data-dir ../shared/data\n"
                             "  robustclip paper --refresh page\n")
    p.add_argument("--out", default="reports/paper", metavar="DIR")
    p.add_argument("--runs", default="runs/paper", metavar="DIR", help="sweep folder (default runs/paper)")
    p.add_argument("--jobs", type=int, default=1, help="runs at once, each with its share of the cores (default 1)")
    p.add_argument("--full-test", default="checkpoints", metavar="SCOPE",
                   help="what to attack on all 10,000 test images: checkpoints (the default: the committed ones, "
                        "about 6 minutes per robust model on 2 cores), all (every MNIST and Fashion-MNIST run, hours "
                        "on 2 cores; the report then uses those rows throughout), a pattern of run ids such as "
                        "'mnist-clip-lam0.5-*' (reported per setting), or off; cached and resumable")
    p.add_argument("--refresh", choices=["sandwich", "page"], default=None,
                   help="redo one part of the report already in --out and leave the rest: sandwich = the "
                        "attacked and certified ε-curves of every checkpoint under OUT/checkpoints (the sweep's and "
                        "those made by the certified-training benchmarks); needs no sweep folder, --runs only holds "
                        "its cache; page = lay out README.md and index.html again with this version's page (the answer "
                        "and its figure first), from the report's own files, every number kept; --jobs and "
                        "--full-test do not apply")
    add_data_dir(p)


def run(args: argparse.Namespace) -> int:
    """Regenerate the paper report (or, with --refresh, one part of it)."""
    if args.refresh == "page":
        import json
        import time

        from ..core import files as _io
        from ..reports.pages import relayout

        index = relayout(args.out)
        info = Path(args.out) / "regeneration.json"
        if info.is_file():  # say so beside the regeneration it lays out again
            doc = json.loads(info.read_text(encoding="utf-8"))
            doc["relayout"] = {"date": time.strftime("%Y-%m-%d"), "commit": _io.git_commit(),
                               "command": "robustclip paper --refresh page"}
            _io.write_json(info, doc)
        print(f"report: {index}")
        return 0
    if args.refresh == "sandwich":
        index = experiment().refresh_sandwich(args.out, args.runs, data_dir=args.data_dir)
        print(f"report: {index}")
        return 0
    index = experiment().regenerate(args.out, args.runs, data_dir=args.data_dir, jobs=args.jobs,
                                    full_test=args.full_test)
    print(f"report: {index}")
    return 0


def checkout() -> Path:
    """The source checkout that holds the paper experiment: the one robustclip is imported from (an editable
    install), else the current folder; a one-line error when neither has it."""
    here = Path(__file__).resolve().parents[2]
    for root in (here, Path.cwd()):
        if (root / EXPERIMENT).is_file():
            return root
    raise RobustclipError("robustclip paper runs the paper experiment from a source checkout, and none was found "
                          f"(no {EXPERIMENT.as_posix()} here or beside this robustclip)",
                          "clone the repository, pip install -e . in it, and run robustclip paper there")


def experiment() -> ModuleType:
    """The module ``experiments.paper.experiment`` of the checkout (:func:`checkout`)."""
    root = str(checkout())
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("experiments.paper.experiment")
