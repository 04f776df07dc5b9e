"""``robustclip report``: render tables and figures of a sweep folder, or of the folders ``evaluate`` wrote."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import add_command, add_labels


def register(sub: Any) -> None:
    """Add the ``report`` subcommand."""
    p = add_command(sub, "report", run, help="render tables and figures of a sweep or of evaluate folders",
                    description="Render OUT/index.html (self-contained), OUT/README.md, CSV tables and seaborn PNG "
                    "figures from a sweep folder, or from the --out folders of robustclip evaluate (one call, several "
                    "calls under one parent folder, or several folders): checkpoints from any source, labelled from "
                    "their metadata (method, λ, seed), --label or a CSV file (--labels), the page led by the paired "
                    "comparison's answer (see robustclip compare) and its table, then accuracy against ε per model, "
                    "worst case against λ per method and attacked against certified accuracy.",
                    examples="  robustclip report runs/mnist-lambda --out reports/mnist-lambda\n"
                             "  robustclip evaluate a.safetensors b.safetensors --suite ci-quick --out runs/cmp\n"
                             "  robustclip report runs/cmp --out reports/cmp\n"
                             "  robustclip report runs/eval-a runs/eval-b --label mine.pt=clip:0.5:0 "
                             "--out reports/ab\n"
                             "  robustclip report runs/evals --labels labels.csv --out reports/evals\n")
    p.add_argument("sweep_dir", nargs="+", metavar="DIR",
                   help="a sweep folder (robustclip sweep --out), or evaluation folders (robustclip evaluate --out) "
                   "or folders of them")
    p.add_argument("--out", default=None, metavar="DIR", help="default: reports/<sweep or first folder's name>")
    p.add_argument("--title", default=None)
    add_labels(p, "evaluation folders: ", "; repeat for each", "(default: refuse a mix)")
    p.add_argument("--force", action="store_true",
                   help="overwrite the report files (index.html, README.md, tables, figures) if DIR holds them")


REPORT_FILES = ("index.html", "README.md", "results.csv", "table.csv", "regression_fits.png")
"""The files ``report`` writes into DIR, and the globs of its figures (checked before any work)."""
FIGURE_GLOBS = ("curve_*.png", "lambda_*.png", "history_*.png", "tradeoff_*.png", "frontier_*.png")


def run(args: argparse.Namespace) -> int:
    """Render the report of a sweep folder, or of evaluation folders."""
    from ..errors import RobustclipError

    dirs = [Path(d) for d in args.sweep_dir]
    kinds = [_kind(d) for d in dirs]
    if "sweep" in kinds:
        if len(dirs) > 1:
            raise RobustclipError(f"{dirs[kinds.index('sweep')]} is a sweep folder; a sweep is reported on its own",
                                  "report the sweep alone, and the evaluation folders together")
        if args.label or args.labels or args.group:
            raise RobustclipError("--label, --labels and --group apply to evaluation folders, not to a sweep",
                                  "a sweep's runs are labelled by its plan; drop --label/--labels/--group")
        return _sweep(args, dirs[0])
    return _evaluations(args, dirs)


def _kind(d: Path) -> str:
    """``sweep`` or ``evaluation`` (an evaluate --out folder, or a folder of them); a one-line error otherwise."""
    from ..errors import RobustclipError
    from ..evaluation.folders import is_evaluation_folder

    if (d / "sweep.json").is_file():
        return "sweep"
    if is_evaluation_folder(d) or (d.is_dir() and any(q.is_dir() and is_evaluation_folder(q) for q in d.iterdir())):
        return "evaluation"
    raise RobustclipError(f"{d} is not a sweep folder (no sweep.json) nor an evaluation folder (no results.json and "
                          "samples.csv)", "pass the --out folder of robustclip sweep, or of robustclip evaluate")


def _sweep(args: argparse.Namespace, sweep_dir: Path) -> int:
    from ..core.outputs import guard_output_dir
    from ..reports.pages import render
    from ..sweeps.records import read_info

    name = str(read_info(sweep_dir)["sweep"].get("name", sweep_dir.name))  # missing or corrupt: one-line error
    out = Path(args.out or Path("reports") / name)
    inputs = [sweep_dir / "results.csv", sweep_dir / "sweep.json", *sorted(sweep_dir.glob("runs/*/*"))]
    guard_output_dir(out, REPORT_FILES, inputs=inputs, force=args.force, patterns=FIGURE_GLOBS)
    index = render(sweep_dir, out, title=args.title)
    print(f"report: {index}")
    return 0


def _evaluations(args: argparse.Namespace, dirs: list[Path]) -> int:
    from ..core.outputs import guard_output_dir
    from ..evaluation.folders import expand
    from ..reports import evalpage
    from ..reports.labels import parse_label, read_labels_csv

    folders = expand(list(dirs))  # not an evaluation folder (nor a sweep): one-line error, before any work
    labels = list(args.label) + (read_labels_csv(args.labels) if args.labels else [])
    for spec in labels:
        parse_label(spec)
    out = Path(args.out or Path("reports") / folders[0].name)
    inputs = [f for d in folders for f in sorted(d.iterdir()) if f.is_file()]
    guard_output_dir(out, evalpage.FILES, inputs=inputs, force=args.force, patterns=evalpage.FIGURE_GLOBS)
    index = evalpage.render_evaluations(folders, out, labels=labels, group=args.group, title=args.title)
    print(f"report: {index}")
    return 0
