"""End to end on CIFAR-shaped data: train the small CIFAR CNN with CLIP, then attack it with ``cifar10-linf-8``.

Issue target: the whole path (train with CLIP, then AutoAttack's standard protocol at L∞ 8/255 on 100 test
images) in at most 20 minutes on 2 CPU cores. CIFAR-10 cannot be downloaded on our CI machines, so this writes a
synthetic CIFAR-10 in the official binary layout (``cifar-10-batches-bin/``: 5 training batches and a test batch of
10,000 records of 3,073 bytes) whose classes differ in colour and texture, and runs the real command line on it
through ``ROBUSTCLIP_DATA``. With ``--data-dir D`` it uses your real CIFAR-10 instead.

    python benchmarks/cifar_end_to_end.py                      # synthetic data, 5,000 training images, 2 epochs
    python benchmarks/cifar_end_to_end.py --data-dir D --n-train 50000 --epochs 10

It prints the seconds of each step and their sum, and the worst case the evaluation found.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import record


def synthetic_cifar10(root: Path, seed: int = 0) -> None:
    """Write ``root/cifar10/cifar-10-batches-bin/*.bin``: 6 files of 10,000 records (label byte, 3,072 planar RGB
    bytes); class c has its own mean colour and stripe frequency, plus noise, so a CNN can learn it."""
    g = np.random.default_rng(seed)
    folder = root / "cifar10" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    colours = g.uniform(0.2, 0.8, size=(10, 3, 1, 1))
    yy = np.arange(32)[None, :, None] / 32.0
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = g.integers(0, 10, size=10_000)
        stripes = 0.15 * np.sin(2 * np.pi * (labels[:, None, None, None] + 1) * yy[None])
        x = colours[labels] + stripes + g.normal(0, 0.12, size=(10_000, 3, 32, 32))
        pixels = (np.clip(x, 0, 1) * 255).round().astype(np.uint8).reshape(10_000, 3072)
        records = np.concatenate([labels.astype(np.uint8)[:, None], pixels], axis=1)
        (folder / name).write_bytes(records.tobytes())


def run(cmd: list[str], env: dict[str, str]) -> float:
    """Seconds that ``robustclip CMD`` took (what it prints passes through ``print``, so ``--out`` keeps it); exits
    with its status when it fails."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "robustclip", *cmd], env=env, stdout=subprocess.PIPE, text=True)
    print(done.stdout, end="")
    if done.returncode != 0:
        sys.exit(f"robustclip {' '.join(cmd)} failed with status {done.returncode}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="a folder holding cifar10/ (default: synthetic data)")
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--n", type=int, default=100, help="test images attacked (default 100)")
    ap.add_argument("--lam", type=float, default=0.1, help="CLIP's λ")
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate")
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="also write the output to FILE after a header line (benchmarks/record.py)")
    args = ap.parse_args()
    record.keep(args.out, None, benchmark, args)


def benchmark(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = dict(os.environ, ROBUSTCLIP_NO_DOWNLOAD="1")
        t0 = time.perf_counter()
        if args.data_dir is None:
            synthetic_cifar10(work)
            env["ROBUSTCLIP_DATA"] = str(work)
        else:
            env["ROBUSTCLIP_DATA"] = args.data_dir
        t_data = time.perf_counter() - t0
        ckpt = work / "cnn.safetensors"
        t_train = run(["train", "--dataset", "cifar10", "--model", "cifar_cnn", "--reg", "clip", "--lam", str(args.lam),
                       "--epochs", str(args.epochs), "--n-train", str(args.n_train), "--optimizer", "adam",
                       "--lr", str(args.lr), "--out", str(ckpt), "--quiet"],
                      env)
        t_eval = run(["evaluate", str(ckpt), "--suite", "cifar10-linf-8", "--n", str(args.n), "--out",
                      str(work / "ev"), "--quiet"], env)
        doc = json.loads((work / "ev" / "results.json").read_text())
        rows = [r for r in doc["results"] if r["attack"] in ("clean", "worst_case")]
    print(f"data {'synthetic' if args.data_dir is None else args.data_dir}: {t_data:.1f} s to prepare")
    print(f"train cifar_cnn with CLIP (λ {args.lam}, Adam {args.lr}, {args.epochs} epochs, {args.n_train} images): "
          f"{t_train:.1f} s")
    print(f"evaluate cifar10-linf-8 on {args.n} images: {t_eval:.1f} s")
    print(f"end to end: {t_train + t_eval:.1f} s ({(t_train + t_eval) / 60:.1f} min; target <= 20 min on 2 cores)")
    for r in rows:
        print(f"  {r['attack']:10s} {r.get('norm') or '':5s} {100 * r['accuracy']:5.1f}%")


if __name__ == "__main__":
    main()
