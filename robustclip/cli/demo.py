"""``robustclip demo``: the main job, a small end-to-end sweep (the preset ``presets/demo.toml``) and its report."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import pandas as pd

from ..errors import RobustclipError
from .common import add_command, add_data_dir


def register(sub: Any) -> None:
    """Add the ``demo`` subcommand."""
    p = add_command(sub, "demo", run, help="the main job: a small end-to-end sweep and report (< 3 min on 2 cores)",
                    description="Train and evaluate a small sweep (robustclip/presets/demo.toml): the 1-D regression "
                    "with CLIP and weight regularisation over λ, and MNIST (a subset) with none, weight and CLIP. "
                    "Writes the report to reports/demo/. Without MNIST data it runs the regression part and says "
                    "what it skipped.",
                    examples="  robustclip demo --data-dir ../shared/data\n")
    p.add_argument("--out", default="reports/demo", metavar="DIR", help="report folder (default reports/demo)")
    p.add_argument("--runs", default="runs/demo", metavar="DIR", help="sweep folder (default runs/demo)")
    p.add_argument("--fresh", action="store_true", help="retrain everything instead of reusing finished runs")
    add_data_dir(p)


def run(args: argparse.Namespace) -> int:
    """Run the demo sweep, render its report, print a five-line summary."""
    import torch

    from ..core import files as _io
    from ..data import datasets as data
    from ..reports.pages import render
    from ..reports.tables import headline, load_results, summary_table
    from ..sweeps import driver

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
          "on a 10k subset; progress below.", flush=True)
    driver.run_sweep(_io.preset("demo"), args.runs, data_dir=args.data_dir, jobs=1, progress=True, where="<demo>",
                     fresh=args.fresh, skip_datasets=skip)
    intro = ("A small end-to-end run of robustclip: the 1-D regression problem fitted with CLIP and with weight "
             "regularisation at three λ each, and the paper's MNIST net trained briefly (8 epochs, cosine learning "
             "rate) on a 10,000-image subset without regularisation, with weight regularisation and with CLIP, then "
             "attacked.")
    if skipped_msg:
        intro += "\n\n**" + skipped_msg + "**"
    index = render(args.runs, args.out, title="robustclip demo", intro=intro)
    df = load_results(args.runs)
    table = summary_table(df, headline(df))
    print(f"\nreport: {index}  ({time.perf_counter() - t0:.0f}s)")
    for line in demo_summary(table, headline(df))[:5]:
        print(line)
    from ..reports.pages import run_warnings

    for rid, ws in run_warnings(args.runs).items():  # the same warnings as the report's box
        for w in ws:
            print(f"WARNING {rid}: {w}", file=sys.stderr)
    return 0


def demo_summary(table: pd.DataFrame, head: tuple[str, float] | None) -> list[str]:
    """Up to five plain-language lines about a demo table."""
    from ..data.datasets import is_regression

    lines = []
    regression = table.dataset.map(is_regression).astype(bool)
    reg = table[regression]
    for method in ("clip", "weight"):
        r = reg[reg.method == method].sort_values("final_lam")
        if len(r) >= 2:
            lines.append(f"regression, {method}: exact Lipschitz constant {r.lip_exact.iloc[0]:.3g} at "
                         f"λ={r.final_lam.iloc[0]:g} -> {r.lip_exact.iloc[-1]:.3g} at λ={r.final_lam.iloc[-1]:g} "
                         "(true function: 11.9)")
    cls = table[~regression]
    if len(cls) and head and "worst_case" in cls:
        for _, r in cls.iterrows():
            if len(lines) >= 5:
                break
            lines.append(f"mnist {r['method']:>6s} {r['setting']:>8s}: clean {100 * r['clean']:.1f}%, worst case at "
                         f"{head[0]} ε={head[1]:g}: {100 * r['worst_case']:.1f}%, Lipschitz ≥ {r['lip_lower']:.3g}")
    return lines
