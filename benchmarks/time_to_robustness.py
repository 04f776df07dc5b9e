"""Time to robustness: how long CLIP, weight regularisation and adversarial training take to reach a level.

Trains the paper's MNIST net (784-200-80-10 sigmoid; SGD lr 0.1 with cosine decay, momentum 0.9, batch 128) from
one seed with each method as the paper preset (``robustclip/presets/paper.toml``) sets it up, epochs included:

* ``weight``: weight regularisation, λ = 3e-4, 30 epochs;
* ``clip``: CLIP, 64 pairs, λ = 0.5, 30 epochs (``clip-0.8``: λ = 0.8);
* ``pgd-at1`` / ``pgd-at3`` / ``pgd-at7``: PGD-L2 adversarial training at ε = 2 with 1, 3 and 7 steps, half clean
  and half adversarial loss, 30 / 20 / 10 epochs.
* ``trades-0.5``: TRADES with β = 0.5, 7 steps at ε = 2, 10 epochs; ``trades-s3``: β = 1 with 3 steps for 20
  epochs (the paper preset's TRADES, β = 1 with 7 steps for 10 epochs, stays below 97% clean);
* ``clip-at1`` / ``clip-at3``: the hybrid ``clip-adversarial`` (PGD-AT with 1 / 3 steps as above, plus CLIP's
  penalty at λ = 0.3 with 64 pairs), 30 / 20 epochs; ``clip-at1-p16``: the same with 16 pairs.

After every epoch the current weights are scored on the first ``--n-val`` images of the run's *validation* split
(clean accuracy, and the per-sample worst case of PGD-L2 with 100 steps then APGD-CE on the survivors, L2 ε = 2);
scoring time is not training time. Two budgets are counted: wall seconds of training, and gradient evaluations
(rows passed forward through the model with gradients on: batch rows, CLIP's pair rows and every attack step's
rows; the cost model behind "an equal budget of gradient evaluations").

Printed per method and level (``--levels``, default 20, 30, 40, 45%): the first epoch whose weights reach that
worst case with at least ``--min-clean`` (default 97%) clean accuracy, with the seconds and gradient evaluations
spent until then; "-" if it never does.

    python benchmarks/time_to_robustness.py --data-dir ../shared/data [--methods clip,pgd-at1] [--n-val 500]

One seed: a first look at cost against robustness. ``robustclip paper`` gives the 5-seed comparison on test images.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import record
import torch

from robustclip.attacks.suites import parse_suite
from robustclip.core.modes import eval_mode
from robustclip.evaluation import attacking
from robustclip.models import specs as models
from robustclip.training.config import TrainConfig
from robustclip.training.trainer import Trainer, load_training_data

_CLIP = {"every": 1, "pairs": 64, "radius": 2.0, "refresh_every": 20}
METHODS: dict[str, dict[str, Any]] = {
    "weight": {"reg": "weight", "lam": 3e-4, "epochs": 30},
    "clip": {"reg": "clip", "lam": 0.5, "clip": _CLIP, "epochs": 30},
    "clip-0.8": {"reg": "clip", "lam": 0.8, "clip": _CLIP, "epochs": 30},
    "pgd-at1": {"reg": "adversarial", "lam": 1.0, "adversarial": {"norm": "L2", "eps": 2.0, "steps": 1}, "epochs": 30},
    "pgd-at3": {"reg": "adversarial", "lam": 1.0, "adversarial": {"norm": "L2", "eps": 2.0, "steps": 3}, "epochs": 20},
    "pgd-at7": {"reg": "adversarial", "lam": 1.0, "adversarial": {"norm": "L2", "eps": 2.0, "steps": 7}, "epochs": 10},
    "trades-0.5": {"reg": "trades", "lam": 0.5, "adversarial": {"norm": "L2", "eps": 2.0, "steps": 7}, "epochs": 10},
    "trades-s3": {"reg": "trades", "lam": 1.0, "adversarial": {"norm": "L2", "eps": 2.0, "steps": 3}, "epochs": 20},
    "clip-at1": {"reg": "clip-adversarial", "lam": 0.3, "clip": _CLIP,
                 "adversarial": {"norm": "L2", "eps": 2.0, "steps": 1}, "epochs": 30},
    "clip-at3": {"reg": "clip-adversarial", "lam": 0.3, "clip": _CLIP,
                 "adversarial": {"norm": "L2", "eps": 2.0, "steps": 3}, "epochs": 20},
    "clip-at1-p16": {"reg": "clip-adversarial", "lam": 0.3, "clip": {**_CLIP, "pairs": 16},
                     "adversarial": {"norm": "L2", "eps": 2.0, "steps": 1}, "epochs": 30},
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
    with eval_mode(model):
        with torch.no_grad():
            clean_ok = model(x).argmax(1) == y
        after_pgd, _ = attacking.run_attack(model, pgd, x, y, n_classes=10, seed=seed, batch_size=500,
                                             todo=clean_ok)
        after_pgd &= clean_ok
        after_apgd, _ = attacking.run_attack(model, apgd, x, y, n_classes=10, seed=seed + 7, batch_size=500,
                                              todo=after_pgd)
    n = float(y.shape[0])
    return float(clean_ok.sum()) / n, float(after_pgd.sum()) / n, float((after_apgd & after_pgd).sum()) / n


class RowCounter:
    """Counts rows passed forward through a model while gradients are on (training and attack steps)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.rows = 0
        self.on = True
        self.handle = model.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, inputs: Any) -> None:
        if self.on and torch.is_grad_enabled():
            self.rows += int(inputs[0].shape[0])


def trace(name: str, cfg: TrainConfig, splits: Any, xv: torch.Tensor, yv: torch.Tensor) -> list[dict[str, Any]]:
    """Train ``cfg`` epoch by epoch; after each, score the weights on ``(xv, yv)``. One record per epoch."""
    tr = Trainer(cfg, splits=splits, progress=False)
    counter = RowCounter(tr.model)
    out, seconds = [], 0.0
    for e in range(cfg.epochs):
        t0 = time.perf_counter()
        tr.epoch()
        seconds += time.perf_counter() - t0
        counter.on = False
        clean, _, wc = worst_case(tr.model, xv, yv, eps=2.0, pgd_steps=100, seed=cfg.seed)
        counter.on = True
        out.append({"epoch": e + 1, "seconds": seconds, "rows": counter.rows, "clean": clean, "worst": wc})
        print(f"  {name:9s} epoch {e + 1:2d}  {seconds:6.1f} s  {counter.rows / 1e6:6.2f} M rows  "
              f"val clean {100 * clean:5.1f}  worst case {100 * wc:5.1f}", flush=True)
    counter.handle.remove()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n-val", type=int, default=500, help="validation images scored after each epoch (default 500)")
    ap.add_argument("--levels", default="20,30,40,45", help="worst-case levels in %% (default 20,30,40,45)")
    ap.add_argument("--min-clean", type=float, default=97.0, help="clean accuracy in %% a level needs (default 97)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--epochs", type=int, default=None, help="cap every method's epochs (smoke tests)")
    ap.add_argument("--n-train", type=int, default=None, help="train on the first n images only (smoke tests)")
    ap.add_argument("--methods", default="weight,clip,pgd-at1,pgd-at3,pgd-at7",
                    help=f"comma-separated subset of {', '.join(METHODS)}")
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="also write the output to FILE after a header line (benchmarks/record.py)")
    args = ap.parse_args(argv)
    return record.keep(args.out, argv, run, args, ap)


def run(args: argparse.Namespace, ap: argparse.ArgumentParser) -> int:
    torch.set_num_threads(args.threads)
    chosen = [m.strip() for m in args.methods.split(",") if m.strip()]
    bad = [m for m in chosen if m not in METHODS]
    levels = [float(v) for v in args.levels.split(",") if v.strip()]
    if bad or args.n_val < 1 or not levels:
        ap.error(f"unknown method {bad[0]!r}" if bad else "--n-val must be >= 1 and --levels non-empty")
    base = dict(dataset="mnist", model=models.paper_spec(), seed=args.seed, lip_probe_pairs=0, n_train=args.n_train,
                lr_schedule="cosine")
    splits = load_training_data(TrainConfig(**base), args.data_dir)
    val = splits[1]
    assert val is not None
    xv, yv = val.x[: args.n_val], val.y[: args.n_val]
    print(f"threads={torch.get_num_threads()}  seed={args.seed}  train samples={len(splits[0])}  "
          f"validation images scored per epoch={len(yv)}")
    traces = {}
    for k in chosen:
        settings = dict(METHODS[k])
        epochs = min(settings.pop("epochs"), args.epochs or 10**6)
        traces[k] = trace(k, TrainConfig(**base, **settings, epochs=epochs), splits, xv, yv)
    print(f"\nfirst epoch reaching each worst-case level (L2 ε = 2) with ≥ {args.min_clean:g}% clean, on validation:")
    print(f"{'method':10s} " + " ".join(f"{f'≥ {lv:g}%':>22s}" for lv in levels) + f" {'final clean / worst':>20s}")
    for k, tr in traces.items():
        cells = []
        for lv in levels:
            hit = next((r for r in tr if 100 * r["worst"] >= lv and 100 * r["clean"] >= args.min_clean), None)
            cells.append("-" if hit is None else
                         f"{hit['seconds']:.0f} s, {hit['rows'] / 1e6:.1f} M (ep {hit['epoch']})")
        final = "{:.1f} / {:.1f}".format(100 * tr[-1]["clean"], 100 * tr[-1]["worst"])
        print(f"{k:10s} " + " ".join(f"{c:>22s}" for c in cells) + f" {final:>20s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
