"""Certified accuracy against training time for lipschitz-margin on MNIST (the 2C2F MinMax net), and its CSV/PNG.

Trains the CPU preset's setting (``robustclip/presets/certified-cpu.toml``: 50
epochs, batch 256, Adam 1e-3 cosine, TRADES-KL 1.5, ε = 1.58 ramped over the
first half) and saves a snapshot after every epoch under ``--work``; then, for
every ``--every``-th snapshot, certifies the first ``--n`` test images at L2
ε = 1.58 with the sound bound (product of SVD / Gram-iteration layer norms
times ``||w_y − w_j||``) and, beside it, with the converged power-iteration
estimate (which certifies nothing; shown to compare). Writes
``--out``.csv and ``--out``.png.

    python benchmarks/certified_training.py --work /tmp/cert --out benchmarks/results/certified-training-curve
    python benchmarks/certified_training.py --work /tmp/cert --eval-only --out ...   # re-evaluate snapshots

Training seconds are wall-clock per epoch, so they depend on machine load.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from robustclip.bounds import certify, upper
from robustclip.data import datasets as data
from robustclip.models import specs as models
from robustclip.training import config
from robustclip.training import trainer as training
from robustclip.training.regularizers import lipmargin

SPEC = {"arch": "cnn", "activation": "minmax"}


def train(work: Path, epochs: int) -> None:
    cfg = config.TrainConfig(dataset="mnist", model=SPEC, reg="lipschitz-margin",
                               settings={"margin": {"eps": 1.58, "loss": "trades", "weight": 1.5}}, epochs=epochs,
                               batch_size=256,
                               optimizer="adam", lr=1e-3, lr_schedule="cosine", lip_probe_pairs=0, seed=0)
    tr = training.Trainer(cfg, progress=False)
    elapsed = 0.0
    with open(work / "log.jsonl", "w") as log:
        while len(tr.history) < cfg.epochs:
            rec = tr.epoch()
            elapsed += rec["epoch_seconds"]
            rec["train_elapsed"] = elapsed
            save_file({k: v.detach().contiguous() for k, v in tr.model.state_dict().items()},
                      str(work / f"ep{rec['epoch']:03d}.safetensors"))
            log.write(json.dumps(rec) + "\n")
            log.flush()


def curve(work: Path, every: int, n: int) -> pd.DataFrame:
    test = data.load("mnist", "test")
    x, y = test.x[:n], test.y[:n]
    recs = [json.loads(line) for line in open(work / "log.jsonl")]
    m = models.build(SPEC).eval()
    rows = []
    for r in recs:
        if r["epoch"] % every and r["epoch"] != len(recs):
            continue
        m.load_state_dict(load_file(str(work / f"ep{r['epoch']:03d}.safetensors")))
        norms = upper.layer_norms(m, (1, 28, 28))
        W = m[-1].weight.detach().double()
        sound = math.prod(v for _, v in norms[:-1]) * lipmargin.row_distances(W) * (1 + 1e-12)
        est = lipmargin.BodyBound(m, (1, 28, 28)).pair_constants(200, grad=False).double()
        with torch.no_grad():
            lg = m(x)
        rows.append({"epoch": r["epoch"], "train_seconds": round(r["train_elapsed"], 1),
                     "val_certified_estimate": r.get("val_select"), "clean": float((lg.argmax(1) == y).float().mean()),
                     "certified_sound": float(certify.lipschitz_certified(lg, y, sound, 1.58).float().mean()),
                     "certified_power_iteration": float(certify.lipschitz_certified(lg, y, est, 1.58).float().mean())})
    return pd.DataFrame(rows)


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(df.train_seconds / 60, 100 * df.clean, "o-", label="clean")
    ax.plot(df.train_seconds / 60, 100 * df.certified_sound, "s-", label="certified at L2 1.58 (sound bound)")
    ax.axhline(40, ls=":", c="gray", label="target 40%")
    ax.axvline(30, ls="--", c="gray", lw=0.8)
    ax.set_xlabel("training time (minutes, one torch thread)")
    ax.set_ylabel("accuracy on the first 1000 test images (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=8, loc="center left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", required=True, help="folder for snapshots and the training log")
    ap.add_argument("--out", required=True, help="path stem of the CSV and PNG")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--every", type=int, default=3)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--eval-only", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if not a.eval_only:
        t0 = time.perf_counter()
        train(work, a.epochs)
        print(f"trained in {time.perf_counter() - t0:.0f} s")
    df = curve(work, a.every, a.n)
    print(df.to_string(index=False))
    df.to_csv(f"{a.out}.csv", index=False)
    plot(df, Path(f"{a.out}.png"))


if __name__ == "__main__":
    main()
