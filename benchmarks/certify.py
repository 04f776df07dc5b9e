"""How tight are the Lipschitz bounds and certificates of a checkpoint, and what do they cost?

On one checkpoint (default: the committed mnist-clip-best) and the first
``--n`` MNIST test images it prints:

* the best lower bound on the L2 Lipschitz constant and the method that found
  it (every method's value; the Jacobian floor runs over the whole test set);
* each sound upper bound with its time and assumptions, and the bracket
  ratio upper/lower;
* certified accuracy at L2 ε 0.1 / 0.25 / 0.5 / 1 per method (global
  per-class-pair Lipschitz margin, local CROWN) and for their union, with the
  certification time of each method.

    python benchmarks/certify.py [--checkpoint PATH] [--n 1000] [--sdp] [--threads 1]

Timings depend on machine load; run with ``--threads 1`` on shared machines.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import record
import torch

import robustclip
from robustclip.bounds import certify, lower, upper
from robustclip.data import datasets as data

ROOT = Path(__file__).resolve().parent.parent
EPS = [0.1, 0.25, 0.5, 1.0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(ROOT / "reports/paper/checkpoints/mnist-clip-best.safetensors"))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--sdp", action="store_true", help="also solve LipSDP (needs cvxpy; about a minute or more)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", default="normal", choices=["quick", "normal", "thorough"])
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="also write the output to FILE after a header line (benchmarks/record.py)")
    args = ap.parse_args(argv)
    return record.keep(args.out, argv, run, args)


def run(args: argparse.Namespace) -> int:
    if args.n < 1:
        print("--n must be positive", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    model, meta = robustclip.load(args.checkpoint)
    model.eval()
    test = data.load(meta.get("dataset", "mnist"), "test", data_dir=args.data_dir)
    sub = test.subset(args.n)
    in_shape = tuple(sub.x.shape[1:])
    shown = Path(args.checkpoint).resolve()
    shown = shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown
    print(f"checkpoint {shown}; {args.n} test images; torch threads {args.threads}")

    t0 = time.perf_counter()
    lows = lower.lower_bounds(model, test.x, budget=args.budget, seed=0)
    t_low = time.perf_counter() - t0
    best_low = max(lows, key=lambda k: lows[k])
    print(f"\nlower bound {lows[best_low]:.4f} by {best_low} ({t_low:.1f} s)")
    for k, v in lows.items():
        print(f"  {k:<20} {v:.4f}")

    ups, reason = upper.upper_bounds(model, in_shape, sdp=args.sdp)
    if reason:
        print(f"\nno upper bound: {reason}")
    print("\nupper bounds:")
    for u in ups:
        ratio = u.value / lows[best_low] if math.isfinite(u.value) and lows[best_low] > 0 else math.inf
        print(f"  {u.method:<14} {u.value:10.4f}  {u.seconds:7.2f} s  bracket {ratio:6.2f}x  ({u.assumptions})")

    cells = [("L2", e) for e in EPS]
    t0 = time.perf_counter()
    res = certify.certify(model, sub.x, sub.y, cells, methods=certify.METHODS, uppers=ups)
    total = time.perf_counter() - t0
    with torch.no_grad():
        clean = float((model(sub.x).argmax(1) == sub.y).float().mean())
    print(f"\nclean accuracy {clean:.3f}")
    print(f"certified accuracy (L2), n={args.n}:")
    print("  method       " + "".join(f"  ε={e:<6}" for e in EPS) + "  seconds")
    for m, got in res.per_method.items():
        accs = "".join(f"  {float(got[c].float().mean()):<8.3f}" for c in cells)
        print(f"  {m:<12} {accs}  {res.seconds.get(m, 0):.1f}")
    for u in ups:  # the global certificate with each upper bound's own class-pair constants
        if u.pairs is None or not math.isfinite(u.value):
            continue
        P = torch.tensor(u.pairs, dtype=torch.float64)
        with torch.no_grad():
            logits = model(sub.x)
        accs = "".join(f"  {float(certify.lipschitz_certified(logits, sub.y, P, e).float().mean()):<8.3f}" for e in EPS)
        print(f"    {'(' + u.method + ')':<10} {accs}")
    accs = "".join(f"  {float(res.best[c].float().mean()):<8.3f}" for c in cells)
    print(f"  {'best':<12} {accs}  {total:.1f} (total certification time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
