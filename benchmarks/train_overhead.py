"""How much does CLIP cost over plain training? (issue: "cheap" is a measured promise)

In one process, trains the paper's MNIST net (784-200-80-10, sigmoid, batch
128, SGD lr 0.1 momentum 0.9) twice from the same seed, plain and CLIP at the
default CLIP settings, alternating one epoch of each, and prints the median
epoch times and their ratio. Then it evaluates both models on the first
--n-test test images: clean accuracy and PGD-L2 at ε = 2 (torchattacks,
50 steps) — the robustness CLIP buys for that cost.

    python benchmarks/train_overhead.py --data-dir ../shared/data [--epochs 5] [--lam 0.1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import record
import torch

from robustclip.attacks.suites import parse_suite
from robustclip.data import datasets as data
from robustclip.evaluation import runner as evaluation
from robustclip.models import specs as models
from robustclip.training.config import TrainConfig
from robustclip.training.trainer import Trainer, load_training_data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--epochs", type=int, default=5, help="epochs per method (default 5)")
    ap.add_argument("--lam", type=float, default=0.1, help="CLIP λ (default 0.1)")
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clip", action="append", default=[], metavar="KEY=VALUE",
                    help="override a CLIP setting, e.g. --clip pairs=128 --clip every=1 (default: the defaults)")
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="also write the output to FILE after a header line (benchmarks/record.py)")
    args = ap.parse_args(argv)
    return record.keep(args.out, argv, run, args)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

    base = dict(dataset="mnist", model=models.paper_spec(), epochs=args.epochs, seed=args.seed, lip_probe_pairs=0)
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.clip)}
    cfgs = {"plain": TrainConfig(reg="none", **base),
            "clip": TrainConfig(reg="clip", lam=args.lam, clip=overrides, **base)}
    print(f"CLIP settings: {overrides or 'defaults'}")
    splits = load_training_data(cfgs["plain"], args.data_dir)
    trainers = {k: Trainer(c, splits=splits, progress=False) for k, c in cfgs.items()}
    times: dict[str, list[float]] = {k: [] for k in trainers}
    print(f"threads={torch.get_num_threads()}  train samples={len(splits[0])}  epochs per method={args.epochs}")
    for e in range(args.epochs):
        for k, tr in trainers.items():
            rec = tr.epoch()
            times[k].append(rec["seconds"])
            print(f"epoch {e + 1} {k:5s} {rec['seconds']:.3f}s  train_acc {rec['train_acc']:.4f}  "
                  f"val_acc {rec['val_acc']:.4f}",
                  flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nmedian epoch: plain {med['plain']:.3f}s  clip {med['clip']:.3f}s  "
          f"ratio clip/plain = {med['clip'] / med['plain']:.2f}x")

    test = data.load("mnist", "test", data_dir=args.data_dir).subset(args.n_test)
    suite = parse_suite({"name": "bench", "seed": 0, "batch_size": 1000,
                         "attack": [{"type": "clean"}, {"type": "pgd", "norm": "L2", "eps": 2.0, "steps": 50}]})
    print(f"\nafter {args.epochs} epochs, first {len(test)} test images:")
    for k, tr in trainers.items():
        model = tr.result().model
        res = evaluation.evaluate(model, test.x, test.y, suite=suite, n_classes=10, progress=False, sanity=False)
        print(f"  {k:5s} clean {res.accuracy('clean'):.3f}   "
              f"PGD-L2 eps=2 (50 steps) {res.accuracy('pgd', 'L2', 2.0):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
