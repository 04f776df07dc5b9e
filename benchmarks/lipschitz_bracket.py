"""The Lipschitz bracket ``robustclip evaluate`` reports by default, against the best lower bound of the slow methods.

For one checkpoint, on the first 512 test images (what ``evaluate`` seeds its ascents with):

* the estimate ``evaluate`` makes by default (``--lipschitz full``: pair and Jacobian ascents within the MAC budget,
  then the refinement: a longer Jacobian ascent and ECLipsE for fully connected chains), with its seconds;
* the same without the refinement (what the CI gate measures, and ``evaluate`` before it);
* ``lower_bounds(budget="thorough")``: every slower lower-bound method (restarted Jacobian ascents from data, random
  and noisy points, pair ascents from data and from the best Jacobian point), each with its value.

Targets (issue 25, ``mnist-clip-best``): a bracket of ≤ 3×, in ≤ 10 s of Lipschitz work, with a lower bound ≥ 95% of
the best any slower method finds.

    python benchmarks/lipschitz_bracket.py [--checkpoint PATH] [--threads 2] \\
        [--out benchmarks/results/lipschitz-bracket.txt]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import record
import torch

import robustclip
from robustclip.bounds import budget, lipschitz, lower, upper
from robustclip.data import datasets as data
from robustclip.evaluation.pipeline import LIPSCHITZ_POINTS

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "reports/paper/checkpoints/mnist-clip-best.safetensors"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="also write the output to FILE after a header line (benchmarks/record.py)")
    a = ap.parse_args()
    record.keep(a.out, None, run, a)


def _report(name: str, rep: upper.LipschitzReport, seconds: float) -> None:
    print(f"{name}: lower {rep.lower:.4f} ({rep.lower_method}), upper {rep.upper:.4f} ({rep.upper_method}), "
          f"bracket {rep.ratio:.2f}x, {seconds:.1f} s of Lipschitz work")
    for k, v in rep.lower_methods.items():
        print(f"    lower  {k:26s} {v:8.4f}")
    for u in rep.uppers:
        print(f"    upper  {u.method:26s} {u.value:8.4f}  {u.seconds:6.2f} s")


def run(a: argparse.Namespace) -> None:
    torch.set_num_threads(a.threads)
    model, meta = robustclip.load(a.checkpoint)
    x = data.load(meta.dataset, "test", data_dir=a.data_dir).x[:LIPSCHITZ_POINTS]
    plan = budget.plan_ascent(model, tuple(x.shape[1:]), "full")
    print(f"{a.checkpoint}: {LIPSCHITZ_POINTS} test images, torch threads {a.threads}")
    t = time.perf_counter()
    fine = lipschitz.estimate(model, x, seed=0, plan=plan, refine=True)
    t_fine = time.perf_counter() - t
    _report("evaluate's default (refined)", fine, t_fine)
    t = time.perf_counter()
    plain = lipschitz.estimate(model, x, seed=0, plan=plan)
    _report("without the refinement (the gate's estimator)", plain, time.perf_counter() - t)
    t = time.perf_counter()
    slow = lower.lower_bounds(model, x, seed=0, budget="thorough")
    t_slow = time.perf_counter() - t
    best = max(slow.values())
    print(f"slower lower bounds, lower_bounds(budget='thorough'), {t_slow:.1f} s:")
    for k, v in slow.items():
        print(f"    {k:26s} {v:8.4f}")
    best = max(best, plain.lower, fine.lower)
    print(f"targets: bracket {fine.ratio:.2f}x (<= 3), {t_fine:.1f} s (<= 10), lower bound {fine.lower / best:.1%} of "
          f"the best found by any method here, {best:.4f} (>= 95%)")


if __name__ == "__main__":
    main()
