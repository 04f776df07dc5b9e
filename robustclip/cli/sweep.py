"""``robustclip sweep``: train and evaluate every (method, λ or τ, seed) of a sweep, resumably."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from ..errors import RobustclipError
from .common import add_command, add_data_dir, add_quiet, console_table, split_floats


def register(sub: Any) -> None:
    """Add the ``sweep`` subcommand."""
    p = add_command(sub, "sweep", run, help="train and evaluate every (method, λ, seed) of a sweep",
                    description="Run a sweep: every (method, λ or τ, seed) trains, saves its checkpoint and is "
                    "evaluated. Resumable: run it again and only unfinished runs are redone. The gathered table is "
                    "OUT/results.csv.",
                    examples="  robustclip sweep sweeps/mnist-lambda.toml --out runs/mnist-lambda\n"
                             "  robustclip sweep --dataset mnist --method none --method weight:1e-4,1e-3 \\\n"
                             "      --method clip:0.05,0.1 --method clip:tau=0.97 --seeds 0,1 --epochs 5 \\\n"
                             "      --suite ci-quick --out runs/quick\n")
    p.add_argument("file", nargs="?", help="sweep TOML file (or give --dataset and --method flags)")
    p.add_argument("--dataset", help="flags mode: mnist, fashion-mnist or regression")
    p.add_argument("--model", help="flags mode: fc, cnn or mlp1d")
    p.add_argument("--method", action="append", default=[], metavar="REG[:λ,λ|:tau=τ,τ]",
                   help="flags mode, repeatable: none, weight:1e-4,1e-3, clip:0.1, clip:tau=0.95,0.97")
    p.add_argument("--seeds", default="0", help="flags mode: comma-separated seeds (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="flags mode: epochs per run")
    p.add_argument("--n-train", type=int, default=None, help="flags mode: training subset size")
    p.add_argument("--suite", default=None, help="flags mode: attack suite (default demo)")
    p.add_argument("--n-test", type=int, default=None, help="flags mode: test samples")
    p.add_argument("--out", required=True, metavar="DIR", help="sweep folder (created; resumed if it exists)")
    p.add_argument("--jobs", type=int, default=1,
                   help="parallel processes (default 1; 2 cores are easily oversubscribed)")
    p.add_argument("--fresh", action="store_true", help="discard finished runs and start over")
    add_quiet(p)
    add_data_dir(p)


def sweep_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Build a sweep dict from ``robustclip sweep`` flags."""
    if not args.dataset or not args.method:
        raise RobustclipError("give a sweep TOML file, or --dataset and at least one --method",
                              "e.g. robustclip sweep --dataset mnist --method none --method clip:0.1 --out runs/x")
    methods = []
    for m in args.method:
        reg, _, rest = m.partition(":")
        entry: dict[str, Any] = {"reg": reg}
        if rest.startswith("tau="):
            entry["tau"] = split_floats(rest[4:], f"--method {m}")
        elif rest:
            entry["lam"] = split_floats(rest, f"--method {m}")
        methods.append(entry)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise RobustclipError(f"--seeds {args.seeds!r} is not a comma-separated list of integers",
                              "e.g. --seeds 0,1,2") from None
    raw: dict[str, Any] = {"name": f"{args.dataset}-sweep", "dataset": args.dataset, "seeds": seeds,
                           "method": methods}
    for key in ("model", "epochs", "n_train", "suite", "n_test"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    return raw


def run(args: argparse.Namespace) -> int:
    """Plan, run the unfinished runs, print the gathered table."""
    from .. import sweeps

    if args.file:
        raw = sweeps.load_sweep(args.file)
        where = args.file
    else:
        raw = sweep_from_flags(args)
        where = "<flags>"
    t0 = time.perf_counter()
    table = sweeps.run_sweep(raw, args.out, data_dir=args.data_dir, jobs=args.jobs, progress=not args.quiet,
                             where=where, fresh=args.fresh)
    cls = table[table.dataset != "regression"].rename(columns={"run": "model"})
    if len(cls):
        print(console_table(cls))
    print(f"sweep done in {time.perf_counter() - t0:.0f}s: {table.run.nunique()} runs; "
          f"table: {Path(args.out) / 'results.csv'}")
    return 0
