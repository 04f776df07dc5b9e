"""CROWN certificates for a 2C2F CNN on MNIST: time, peak memory and certified fractions at four L2 radii.

The 2C2F net (conv 16 4×4/2, conv 32 4×4/2, fc 100, fc 10) two ways:

* the committed ``reports/paper/checkpoints/mnist-certified-best.safetensors`` (certified training,
  lipschitz-margin at L2 1.58; its activations are **MinMax**, which the graph CROWN relaxes pair by pair):
  certified the way ``robustclip evaluate`` does it (the Lipschitz-margin certificate first, CROWN on what it
  leaves), and CROWN alone on every sample;
* the same architecture with **ReLU**, trained here for ``--relu-epochs`` epoch(s) on ``--relu-train`` images
  (plain cross-entropy, seed 0; the training time is printed apart): CROWN alone.

Each run certifies the first ``--n`` test images at the radii (smallest first: a sample not certified there is not
tried at the larger ones), with the PGD prefilter of :func:`robustclip.bounds.certify.certify` (10 steps; a sample it
breaks is never certified, so skipping it only saves time). Peak memory is the process's resident peak
(``resource.getrusage``) after each run. Target (issue 25): ≤ 120 s and < 2 GB on 2 cores.

    OMP_NUM_THREADS=2 python benchmarks/crown_cnn.py [--n 1000] [--out benchmarks/results/crown-cnn-2c2f.txt]

OpenMP's idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``, set here unless given): on a shared machine, spinning
threads wait for a core another process holds, and measured times grew several-fold without it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP runtime

import argparse
import resource
import sys
import time
from pathlib import Path

import record
import torch

import robustclip
from robustclip.bounds import certify
from robustclip.data import datasets as data
from robustclip.training.config import TrainConfig
from robustclip.training.trainer import train

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINT = ROOT / "reports/paper/checkpoints/mnist-certified-best.safetensors"


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _layers(model: torch.nn.Module) -> str:
    return ", ".join(type(m).__name__ for m in model.modules() if not list(m.children()))


def _certify(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, cells: list[tuple[str, float]],
             methods: tuple[str, ...]) -> tuple[certify.CertResult, float]:
    t0 = time.perf_counter()
    res = certify.certify(model, x, y, cells, methods=methods)
    return res, time.perf_counter() - t0


def _table(rows: dict[str, dict[tuple[str, float], torch.Tensor]], cells: list[tuple[str, float]]) -> None:
    print(f"    {'L2 radius':>10}" + "".join(f"{name:>22}" for name in rows))
    for cell in sorted(cells, key=lambda c: c[1]):
        print(f"    {cell[1]:>10.2f}" + "".join(f"{float(got[cell].float().mean()):>22.3f}" for got in rows.values()))


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    radii = args.radii
    cells = [("L2", r) for r in radii]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')}; wall-clock times (the header line gives the machine's load)")
    test = data.load("mnist", "test", data_dir=args.data_dir)
    x, y = test.x[:args.n], test.y[:args.n]
    print(f"the first {x.shape[0]} MNIST test images; L2 radii {', '.join(f'{r:g}' for r in radii)}")
    times: dict[str, float] = {}

    model, meta = robustclip.load(args.checkpoint)
    model.eval()
    print(f"\n{Path(args.checkpoint).name}: spec {meta.get('model')}; layers {_layers(model)}")
    both, t_both = _certify(model, x, y, cells, ("lipschitz", "crown"))
    print(f"  as evaluate does it (Lipschitz margin, then CROWN on the rest): {t_both:.1f} s (Lipschitz "
          f"{both.seconds.get('lipschitz', 0):.1f} s, CROWN {both.seconds.get('crown', 0):.1f} s); "
          f"peak {_peak_mb():.0f} MB so far")
    alone, t_alone = _certify(model, x, y, cells, ("crown",))
    print(f"  CROWN alone: {t_alone:.1f} s; peak {_peak_mb():.0f} MB so far")
    _table({"lipschitz margin": both.per_method["lipschitz"], "CROWN alone": alone.per_method["crown"],
            "both (union)": both.best}, cells)
    times["committed net, as evaluate does it"] = t_both
    times["committed net, CROWN alone"] = t_alone

    if args.relu_train > 0:
        t0 = time.perf_counter()
        cfg = TrainConfig(dataset="mnist", model={"arch": "cnn", "activation": "relu"}, reg="none",
                          epochs=args.relu_epochs, n_train=args.relu_train, optimizer="adam", lr=0.001,
                          batch_size=128, seed=0, lip_probe_pairs=0, select=False)
        relu = train(cfg, progress=False, data_dir=args.data_dir).model.eval()
        t_train = time.perf_counter() - t0
        with torch.no_grad():
            acc = float((relu(x).argmax(1) == y).float().mean())
        print(f"\n2C2F with ReLU, trained here ({args.relu_epochs} epoch(s) on {args.relu_train} images, "
              f"{t_train:.0f} s): clean accuracy {acc:.3f}; layers {_layers(relu)}")
        lip, t_lip = _certify(relu, x, y, cells, ("lipschitz",))
        r_alone, t_r = _certify(relu, x, y, cells, ("crown",))
        print(f"  CROWN alone: {t_r:.1f} s (Lipschitz margin {t_lip:.1f} s); peak {_peak_mb():.0f} MB so far")
        _table({"lipschitz margin": lip.per_method["lipschitz"], "CROWN alone": r_alone.per_method["crown"]}, cells)
        times["ReLU net, CROWN alone"] = t_r

    peak = _peak_mb()
    print(f"\ntarget: <= 120 s per certification of {x.shape[0]} images at {len(radii)} radii, < 2048 MB peak")
    for name, t in times.items():
        print(f"  {name}: {t:.1f} s ({'met' if t <= 120 else 'NOT met'})")
    print(f"  peak resident memory of the whole run: {peak:.0f} MB ({'met' if peak < 2048 else 'NOT met'})")
    return 0


def _radii(text: str) -> list[float]:
    try:
        vals = [float(r) for r in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None
    if not vals or any(not 0 < v < 100 for v in vals):
        raise argparse.ArgumentTypeError(f"radii must be positive numbers, got {text!r}")
    return vals


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(CHECKPOINT))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--n", type=int, default=1000, help="test images (default 1000)")
    ap.add_argument("--radii", default="0.25,0.5,1.0,1.58", type=_radii, help="L2 radii, comma-separated")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    ap.add_argument("--relu-train", type=int, default=10000, help="training images for the ReLU net (0: skip it)")
    ap.add_argument("--relu-epochs", type=int, default=1)
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="also write the output to FILE after a header line (benchmarks/record.py)")
    args = ap.parse_args(argv)
    if args.n < 1 or args.threads < 1:
        print("crown_cnn.py: error: --n and --threads must be positive", file=sys.stderr)
        return 2
    return record.keep(args.out, argv, run, args)


if __name__ == "__main__":
    raise SystemExit(main())
