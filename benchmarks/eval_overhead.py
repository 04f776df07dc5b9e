"""What does robustclip's evaluation layer cost over a bare torchattacks loop?

In one process, on the same model and the same test images, for two models -- the paper's MNIST MLP (trained one
epoch) and a small CNN (conv-relu-maxpool twice, then two linear layers; a few hundred Adam steps) -- it times,
alternating, several repetitions of:

* bare:  for each batch, ``torchattacks.PGDL2(...)(x, y)`` then ``model(adv).argmax``;
* layer: ``robustclip.evaluation.runner.run_attack`` for the same attack on every
  sample (seeding, batching, ε and [0,1] checks, per-sample bookkeeping);
* full:  ``robustclip.evaluation.runner.evaluate`` with a one-attack suite (adds the
  clean pass, skips clean-misclassified samples, worst case, certificates;
  sanity checks off);

and prints the median times and the ratios layer/bare and full/bare per model (target: at most 1.1x). The layer
and the full evaluation also keep per-sample norms, the per-sample table and per-class accuracy. Then it times a
full 8-point PGD-L2 curve (attacks/curve-l2.toml) over the whole 10k test set on the MLP.

    python benchmarks/eval_overhead.py --data-dir ../shared/data [--n 2000] [--reps 5] [--models mlp,cnn]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import record
import torch
import torchattacks
from torch import nn

from robustclip.attacks.kinds import AttackSpec
from robustclip.attacks.suites import load_suite, parse_suite
from robustclip.data import datasets as data
from robustclip.evaluation import attacking
from robustclip.evaluation import runner as evaluation
from robustclip.models import specs as models
from robustclip.training.config import TrainConfig
from robustclip.training.trainer import train

ROOT = Path(__file__).resolve().parent.parent


def small_cnn(x: torch.Tensor, y: torch.Tensor, steps: int = 300) -> nn.Module:
    """Conv(1→8)-ReLU-MaxPool, Conv(8→16)-ReLU-MaxPool, Linear(784→64)-ReLU-Linear(64→10), ``steps`` Adam steps."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                        nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10))
    opt = torch.optim.Adam(net.parameters(), lr=0.003)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    return net.eval()


def compare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int, bs: int,
            reps: int) -> dict[str, float]:
    """Median seconds of bare, layer and full on ``model``; prints them and the ratios."""
    alpha = 2.5 * eps / steps
    spec = AttackSpec("pgd", "pgd", "L2", eps, {"steps": steps})
    suite = parse_suite({"name": "bench", "batch_size": bs,
                         "attack": [{"type": "clean"}, {"type": "pgd", "norm": "L2", "eps": eps, "steps": steps}]})

    def bare() -> float:
        atk = torchattacks.PGDL2(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        correct = 0
        for i in range(0, len(x), bs):
            torch.manual_seed(i)
            adv = atk(x[i : i + bs], y[i : i + bs])
            with torch.no_grad():
                correct += int((model(adv).argmax(1) == y[i : i + bs]).sum())
        return correct / len(x)

    def layer() -> float:
        ok, _ = attacking.run_attack(model, spec, x, y, n_classes=10, seed=0, batch_size=bs, record={})
        return float(ok.float().mean())

    def full() -> float:
        res = evaluation.evaluate(model, x, y, suite=suite, n_classes=10, progress=False, sanity=False,
                                  lip_upper=float("inf"))
        return res.accuracy("pgd", "L2", eps)

    times: dict[str, list[float]] = {"bare": [], "layer": [], "full": []}
    accs: dict[str, float] = {}
    fns = {"bare": bare, "layer": layer, "full": full}
    for rep in range(reps + 1):  # the first round warms up and is not counted
        for name, fn in fns.items():
            t = time.perf_counter()
            accs[name] = fn()
            if rep:
                times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in fns:
        print(f"  {k:5s} median {med[k]:.3f}s  accuracy {accs[k]:.4f}")
    print(f"  ratio layer/bare = {med['layer'] / med['bare']:.3f}x   full/bare = {med['full'] / med['bare']:.3f}x")
    return med


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=2000, help="test images for the overhead comparison (default 2000)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp (the paper's), cnn (a small CNN)")
    ap.add_argument("--no-curve", action="store_true", help="skip the 10k-image curve timing")
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="also write the output to FILE after a header line (benchmarks/record.py)")
    args = ap.parse_args(argv)
    return record.keep(args.out, argv, run, args, ap)


def run(args: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))

    test = data.load("mnist", "test", data_dir=args.data_dir)
    x, y = test.x[: args.n], test.y[: args.n]
    eps, steps, bs = 2.0, args.steps, args.batch_size
    mlp = None
    for which in args.models.split(","):
        if which == "mlp":
            mlp = model = train(TrainConfig(dataset="mnist", model=models.paper_spec(), epochs=1, lip_probe_pairs=0),
                                data_dir=args.data_dir, progress=False).model.eval()
        elif which == "cnn":
            tr = data.load("mnist", "train", data_dir=args.data_dir).subset(10_000)
            model = small_cnn(tr.x, tr.y)
        else:
            ap.error(f"unknown model {which!r}: use mlp or cnn")
        print(f"{which}: PGD-L2 eps={eps}, {steps} steps, {len(x)} images, batch {bs}, "
              f"threads {torch.get_num_threads()}")
        compare(model, x, y, eps=eps, steps=steps, bs=bs, reps=args.reps)

    if not args.no_curve and mlp is not None:
        curve = load_suite(str(ROOT / "attacks" / "curve-l2.toml"))
        t = time.perf_counter()
        res = evaluation.evaluate(mlp, test.x, test.y, suite=curve, n_classes=10, progress=False, sanity=False,
                                  lip_upper=float("inf"))
        wall = time.perf_counter() - t
        wc = res.frame[res.frame.attack == "worst_case"]
        print(f"8-point PGD-L2 curve (curve-l2.toml, 50 steps) on all {len(test)} test images: {wall:.1f}s")
        print("  " + "  ".join(f"eps {e:g}: {a:.3f}" for e, a in zip(wc.eps, wc.accuracy)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
