"""Time to robustness: CLIP, weight regularisation and PGD adversarial training for the same few epochs.

Trains the paper's MNIST net (784-200-80-10 sigmoid; SGD lr 0.1, momentum 0.9, batch 128) from one seed with

* ``clip``: the paper preset's best setting (128 pairs, radius 2, λ = 0.5, penalty every step, pairs redrawn
  every 20 steps);
* ``weight``: weight regularisation, λ = 3e-4 (the middle of the paper preset's grid);
* ``adversarial``: PGD-L2 adversarial training, ε = 2, 7 steps, λ = 1 (half clean, half adversarial loss),

alternating one epoch of each so that load on a shared machine hits all three alike, and prints every epoch's
wall time. Then, on the first ``--n-test`` test images: clean accuracy and the per-sample worst case over
PGD-L2 (``--pgd-steps`` steps) and APGD-CE (100 steps) at L2 ε = 2, where APGD attacks only the images PGD did
not break (an image counts as robust only if both fail).

    python benchmarks/time_to_robustness.py --data-dir ../shared/data [--epochs 3] [--n-test 500]

One seed and few epochs: a first look at cost against robustness, not a converged comparison.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import torch

from robustclip import data, evaluation, models
from robustclip.attacks import parse_suite
from robustclip.training import TrainConfig, Trainer, load_training_data

METHODS: dict[str, dict[str, Any]] = {
    "clip": {"reg": "clip", "lam": 0.5, "clip": {"every": 1, "pairs": 128, "radius": 2.0, "refresh_every": 20}},
    "weight": {"reg": "weight", "lam": 3e-4},
    "adversarial": {"reg": "adversarial", "lam": 1.0, "adversarial": {"norm": "L2", "eps": 2.0, "steps": 7}},
}


def worst_case(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, pgd_steps: int,
               seed: int = 0) -> tuple[float, float, float]:
    """(clean accuracy, accuracy under PGD-L2, worst case of PGD-L2 then APGD-CE on the survivors), in [0, 1].

    ``x`` ``(n, 1, 28, 28)`` in [0, 1], ``y`` ``(n,)``.
    """
    suite = parse_suite({"name": "time-to-robustness", "seed": seed, "batch_size": 500, "attack": [
        {"type": "clean"}, {"type": "pgd", "norm": "L2", "eps": eps, "steps": pgd_steps},
        {"type": "apgd", "norm": "L2", "eps": eps, "steps": 100, "loss": "ce"}]})
    pgd, apgd = [a for a in suite.attacks if a.type != "clean"]
    model.eval()
    with torch.no_grad():
        clean_ok = model(x).argmax(1) == y
    after_pgd, _ = evaluation.run_attack(model, pgd, x, y, n_classes=10, seed=seed, batch_size=500, todo=clean_ok)
    after_pgd &= clean_ok
    after_apgd, _ = evaluation.run_attack(model, apgd, x, y, n_classes=10, seed=seed + 7, batch_size=500,
                                          todo=after_pgd)
    n = float(y.shape[0])
    return float(clean_ok.sum()) / n, float(after_pgd.sum()) / n, float((after_apgd & after_pgd).sum()) / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per method (default 3)")
    ap.add_argument("--n-test", type=int, default=500, help="test images to attack (default 500)")
    ap.add_argument("--pgd-steps", type=int, default=100, help="PGD-L2 steps of the evaluation (default 100)")
    ap.add_argument("--n-train", type=int, default=None, help="train on the first n images only (smoke tests)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared 2-core machine)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated subset of {', '.join(METHODS)}")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in chosen if m not in METHODS]
    if bad or args.epochs < 1 or args.n_test < 1:
        ap.error(f"unknown method {bad[0]!r}" if bad else "--epochs and --n-test must be >= 1")

    base = dict(dataset="mnist", model=models.paper_spec(), epochs=args.epochs, seed=args.seed, lip_probe_pairs=0,
                n_train=args.n_train)
    cfgs = {k: TrainConfig(**base, **METHODS[k]) for k in chosen}
    splits = load_training_data(next(iter(cfgs.values())), args.data_dir)
    trainers = {k: Trainer(c, splits=splits, progress=False) for k, c in cfgs.items()}
    print(f"threads={torch.get_num_threads()}  train samples={len(splits[0])}  epochs per method={args.epochs}  "
          f"seed={args.seed}")
    for k in chosen:
        print(f"  {k:11s} {METHODS[k]}")
    seconds: dict[str, list[float]] = {k: [] for k in chosen}
    for e in range(args.epochs):
        for k, tr in trainers.items():
            rec = tr.epoch()
            seconds[k].append(rec["seconds"])
            print(f"epoch {e + 1} {k:11s} {rec['seconds']:7.1f}s  train_acc {rec['train_acc']:.4f}  "
                  f"val_acc {rec['val_acc']:.4f}", flush=True)

    test = data.load("mnist", "test", data_dir=args.data_dir).subset(args.n_test)
    print(f"\nafter {args.epochs} epochs (best-validation weights), first {len(test)} test images, L2 ε = 2:")
    print(f"{'method':11s} {'train s':>8s} {'s/epoch':>8s} {'clean':>6s} {'PGD-L2':>7s} {'worst case':>11s} "
          f"{'eval s':>7s}")
    for k, tr in trainers.items():
        model = tr.result().model
        t0 = time.perf_counter()
        clean, pgd, wc = worst_case(model, test.x, test.y, eps=2.0, pgd_steps=args.pgd_steps, seed=args.seed)
        total = sum(seconds[k])
        print(f"{k:11s} {total:8.1f} {total / args.epochs:8.1f} {100 * clean:6.1f} {100 * pgd:7.1f} "
              f"{100 * wc:11.1f} {time.perf_counter() - t0:7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
