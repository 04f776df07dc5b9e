"""Subcommands of the comparison and CI layers: sweep, report, demo, check."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .errors import RobustclipError

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}

DEMO_SWEEP: dict[str, Any] = {
    "name": "demo",
    "description": "Regression with CLIP and weight regularisation over λ; MNIST (20k-sample subset, 4 epochs) "
                   "with none, weight and CLIP over λ, evaluated with the built-in demo suite.",
    "experiment": [
        {"label": "regression", "dataset": "regression", "epochs": 500, "seeds": [0],
         "method": [{"reg": "clip", "lam": [0.003, 0.03, 0.3]}, {"reg": "weight", "lam": [0.0003, 0.003, 0.03]}]},
        {"label": "mnist", "dataset": "mnist", "epochs": 4, "n_train": 20000, "seeds": [0], "suite": "demo",
         "n_test": 500, "train": {"optimizer": "adam", "lr": 0.002},
         "method": [{"reg": "none"}, {"reg": "weight", "lam": [0.001]}, {"reg": "clip", "lam": [0.1, 0.5]}]},
    ],
}


def add_commands(sub: Any, fmt: Any) -> None:
    """Register sweep, report, demo and check on the subparser ``sub``."""
    p = sub.add_parser("sweep", help="train and evaluate every (method, λ, seed) of a sweep", formatter_class=fmt,
                       description="Run a sweep: every (method, λ or τ, seed) trains, saves its checkpoint and is "
                       "evaluated. Resumable: run it again and only unfinished runs are redone. The gathered table "
                       "is OUT/results.csv.",
                       epilog="examples:\n  robustclip sweep sweeps/mnist-lambda.toml --out runs/mnist-lambda\n"
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
    p.add_argument("--jobs", type=int, default=1, help="parallel processes (default 1; 2 cores are easily oversubscribed)")
    p.add_argument("--fresh", action="store_true", help="discard finished runs and start over")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--data-dir", metavar="D", default=None)

    p = sub.add_parser("report", help="render tables and figures of a sweep", formatter_class=fmt,
                       description="Render OUT/index.html (self-contained), OUT/README.md, CSV tables and seaborn "
                       "PNG figures from a sweep folder.",
                       epilog="example:\n  robustclip report runs/mnist-lambda --out reports/mnist-lambda\n")
    p.add_argument("sweep_dir", metavar="SWEEP_DIR")
    p.add_argument("--out", default=None, metavar="DIR", help="default: reports/<sweep name>")
    p.add_argument("--title", default=None)

    p = sub.add_parser("demo", help="the main job: a small end-to-end sweep and report (< 3 min on 2 cores)",
                       formatter_class=fmt,
                       description="Train and evaluate a small sweep: the 1-D regression with CLIP and weight "
                       "regularisation over λ, and MNIST (a subset) with none, weight and CLIP. Writes the report "
                       "to reports/demo/. Without MNIST data it runs the regression part and says what it skipped.",
                       epilog="example:\n  robustclip demo --data-dir ../shared/data\n")
    p.add_argument("--out", default="reports/demo", metavar="DIR", help="report folder (default reports/demo)")
    p.add_argument("--runs", default="runs/demo", metavar="DIR", help="sweep folder (default runs/demo)")
    p.add_argument("--fresh", action="store_true", help="retrain everything instead of reusing finished runs")
    p.add_argument("--data-dir", metavar="D", default=None)

    p = sub.add_parser("paper", help="regenerate reports/paper/: the paper's experiments, honestly evaluated",
                       formatter_class=fmt,
                       description="Run the preset sweep robustclip/presets/paper.toml (regression, MNIST and "
                       "Fashion-MNIST with 3 seeds, and the output-sigmoid question), evaluate every model with "
                       "attacks/paper-mnist.toml, and write reports/paper/. Resumable. About 45-60 minutes on 2 cores.",
                       epilog="example:\n  robustclip paper --data-dir ../shared/data\n")
    p.add_argument("--out", default="reports/paper", metavar="DIR")
    p.add_argument("--runs", default="runs/paper", metavar="DIR", help="sweep folder (default runs/paper)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--data-dir", metavar="D", default=None)

    from . import gate

    gate.add_command(sub, fmt)
    COMMANDS["check"] = gate.cmd_check


def _split_floats(text: str, what: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise RobustclipError(f"{what}: {text!r} is not a comma-separated list of numbers", "e.g. clip:0.05,0.1") from None


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
            entry["tau"] = _split_floats(rest[4:], f"--method {m}")
        elif rest:
            entry["lam"] = _split_floats(rest, f"--method {m}")
        methods.append(entry)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise RobustclipError(f"--seeds {args.seeds!r} is not a comma-separated list of integers", "e.g. --seeds 0,1,2") from None
    raw: dict[str, Any] = {"name": f"{args.dataset}-sweep", "dataset": args.dataset, "seeds": seeds, "method": methods}
    for key in ("model", "epochs", "n_train", "suite", "n_test"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    return raw


def cmd_sweep(args: argparse.Namespace) -> int:
    from . import sweeps
    from .cli import console_table

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
    print(f"sweep done in {time.perf_counter() - t0:.0f}s: {table.run.nunique()} runs; table: {Path(args.out) / 'results.csv'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from .reports import render

    sweep_dir = Path(args.sweep_dir)
    if not (sweep_dir / "sweep.json").is_file():
        raise RobustclipError(f"{sweep_dir} is not a sweep folder (no sweep.json)", "pass the --out folder of robustclip sweep")
    name = json.loads((sweep_dir / "sweep.json").read_text())["sweep"].get("name", sweep_dir.name)
    out = Path(args.out or Path("reports") / name)
    index = render(sweep_dir, out, title=args.title)
    print(f"report: {index}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import torch

    from . import data, sweeps
    from .reports import headline, load_results, render, summary_table

    t0 = time.perf_counter()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    skip: tuple[str, ...] = ()
    skipped_msg = None
    try:
        data.locate("mnist", args.data_dir)
    except RobustclipError as exc:
        skip = ("mnist",)
        skipped_msg = (f"SKIPPED the MNIST part: {exc.problem}. To include it, pass --data-dir D (or set "
                       "ROBUSTCLIP_DATA=D) with D/mnist/ holding the four IDX files, or run where the official "
                       "mirrors are reachable.")
        print(skipped_msg, file=sys.stderr)
    print("robustclip demo: regression (CLIP and weight regularisation over λ) and MNIST (none, weight, CLIP) "
          "on a 20k subset; progress below.", flush=True)
    sweeps.run_sweep(DEMO_SWEEP, args.runs, data_dir=args.data_dir, jobs=1, progress=True, where="<demo>",
                     fresh=args.fresh, skip_datasets=skip)
    intro = ("A small end-to-end run of robustclip: the 1-D regression problem fitted with CLIP and with weight "
             "regularisation at three λ each, and the paper's MNIST net trained briefly on a 20,000-image subset "
             "without regularisation, with weight regularisation and with CLIP, then attacked.")
    if skipped_msg:
        intro += "\n\n**" + skipped_msg + "**"
    index = render(args.runs, args.out, title="robustclip demo", intro=intro)
    df = load_results(args.runs)
    table = summary_table(df, headline(df))
    print(f"\nreport: {index}  ({time.perf_counter() - t0:.0f}s)")
    for line in demo_summary(table, headline(df))[:5]:
        print(line)
    return 0


def demo_summary(table, head) -> list[str]:
    """Up to five plain-language lines about a demo table."""
    lines = []
    reg = table[table.dataset == "regression"]
    for method in ("clip", "weight"):
        r = reg[reg.method == method].sort_values("final_lam")
        if len(r) >= 2:
            lines.append(f"regression, {method}: exact Lipschitz constant {r.lip_exact.iloc[0]:.3g} at λ={r.final_lam.iloc[0]:g} "
                         f"-> {r.lip_exact.iloc[-1]:.3g} at λ={r.final_lam.iloc[-1]:g} (true function: 11.9)")
    cls = table[table.dataset != "regression"]
    if len(cls) and head and "worst_case" in cls:
        for _, r in cls.iterrows():
            if len(lines) >= 5:
                break
            lines.append(f"mnist {r['method']:>6s} {r['setting']:>8s}: clean {100 * r['clean']:.1f}%, worst case at "
                         f"{head[0]} ε={head[1]:g}: {100 * r['worst_case']:.1f}%, Lipschitz ≥ {r['lip_lower']:.3g}")
    return lines


def cmd_paper(args: argparse.Namespace) -> int:
    from .paper import regenerate

    index = regenerate(args.out, args.runs, data_dir=args.data_dir, jobs=args.jobs)
    print(f"report: {index}")
    return 0


COMMANDS.update({"sweep": cmd_sweep, "report": cmd_report, "demo": cmd_demo, "paper": cmd_paper})
