"""The GPU end to end: train, evaluate on all 10,000 test images, and gate a GPU check against a CPU baseline.

On a machine with CUDA, in one process (designed to finish in about 6 minutes on one H200):

1. trains the paper's MNIST net (784-200-80-10, sigmoid) on the GPU with CLIP (λ = 0.5) and with PGD adversarial
   training, 3 epochs each, and prints the times;
2. evaluates the CLIP net with the ``paper-mnist`` suite on all 10,000 test images on the GPU (target: under 1
   minute) and, on 1,000 of them, on the CPU too, printing both times and the accuracy differences;
3. evaluates a small CIFAR-shaped CNN (3x32x32 inputs, random weights, synthetic images labelled by the CNN
   itself) with the ``cifar10-linf-8`` suite (``ci-quick`` when this checkout lacks that suite; it says so);
4. makes a fixed-mode ``check`` baseline of the CLIP net on the CPU (``ci-quick``, 500 images, ``--lipschitz
   fast``), runs ``check`` on the GPU against it, and prints every row's CPU and GPU values, the verdicts and the
   exit code (0 expected: a device change alone must stay within the gate's noise).

Without CUDA it prints a one-line skip and exits 0. ``--dry-run`` runs the same steps on the CPU with tiny sizes
(to test the script itself, not to time anything).

    python benchmarks/gpu.py --data-dir ../shared/data [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustclip.attacks.suites import load_suite
from robustclip.core import devices
from robustclip.errors import RobustclipError, SuiteError
from robustclip.evaluation.pipeline import evaluate_checkpoint, evaluate_model, train_to_checkpoint
from robustclip.gate import check as gate
from robustclip.gate import measuring, output
from robustclip.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def _t(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _rows(ev: Any) -> dict[str, float]:
    return {measuring.metric_name(r): float(r["accuracy"]) for r in ev.result.frame.to_dict(orient="records")}


def _train(kind: str, out: Path, dev: str, epochs: int, n_train: int | None, data_dir: str | None) -> float:
    from robustclip.models import specs as models

    reg: dict[str, Any] = {"reg": "clip", "lam": 0.5} if kind == "clip" else \
        {"reg": "adversarial", "lam": 1.0, "adversarial": {"norm": "L2", "eps": 2.0, "steps": 7}}
    cfg = TrainConfig(dataset="mnist", model=models.paper_spec(), epochs=epochs, n_train=n_train, device=dev,
                      lip_probe_pairs=0, seed=0, **reg)
    secs, _ = _t(lambda: train_to_checkpoint(cfg, out, data_dir=data_dir, progress=False, name=f"paper-{kind}"))
    return secs


def _cifar_like(n: int, dev: torch.device, side: int = 32) -> tuple[Any, Any, Any]:
    """A small CIFAR-shaped CNN and synthetic 3 x side x side images in [0,1] (side 32: CIFAR's), labelled by the
    CNN (clean accuracy 100%)."""
    from torch import nn

    from robustclip.checkpoints.format import CheckpointMeta
    from robustclip.data import datasets as data

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 4, stride=2, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 4, stride=2, padding=1),
                        nn.ReLU(), nn.Flatten(), nn.Linear(32 * (side // 4) ** 2, 100), nn.ReLU(),
                        nn.Linear(100, 10)).eval()
    x = torch.rand((n, 3, side, side), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x).argmax(1)
    split = data.Split(x=x, y=y, dataset="synthetic-cifar-shaped", split="test", source="benchmarks/gpu.py synthetic")
    meta = CheckpointMeta(dataset="synthetic-cifar-shaped", model=None)
    return net.to(dev), meta, split


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU: tests the script, times nothing")
    args = ap.parse_args(argv)
    if not args.dry_run and not torch.cuda.is_available():
        print("benchmarks/gpu.py: skipped: CUDA is not available on this machine (run it where a GPU is)")
        return 0
    dry = args.dry_run
    gpu = devices.resolve_device("cpu" if dry else "cuda")
    info = devices.describe(gpu)
    print(f"device {info['device']} ({info['device_name']}), CUDA {info['cuda_version']}, torch {torch.__version__}")
    epochs, n_train = (1, 500) if dry else (3, None)
    n_full, n_cpu, n_check, n_cifar = (50, 20, 40, 16) if dry else (10_000, 1000, 500, 500)
    summary: dict[str, Any] = {"device": info}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        clip_ckpt, adv_ckpt = tmp / "paper-clip.safetensors", tmp / "paper-adv.safetensors"
        summary["train_clip_s"] = _train("clip", clip_ckpt, gpu.type, epochs, n_train, args.data_dir)
        summary["train_adversarial_s"] = _train("adversarial", adv_ckpt, gpu.type, epochs, n_train, args.data_dir)
        print(f"train paper net, {epochs} epochs on {gpu}: CLIP {summary['train_clip_s']:.1f} s, "
              f"PGD adversarial {summary['train_adversarial_s']:.1f} s")

        suite = "ci-quick" if dry else "paper-mnist"  # a dry run tests the plumbing, not paper-mnist's cost
        t_gpu, ev_gpu = _t(lambda: evaluate_checkpoint(clip_ckpt, suite=suite, n=n_full, data_dir=args.data_dir,
                                                       device=gpu, progress=True))
        summary["paper_mnist_full_s"] = t_gpu
        print(f"{suite} on {n_full} test images on {gpu}: {t_gpu:.1f} s (target < 60 s); "
              f"clean {100 * ev_gpu.result.accuracy('clean'):.1f}%")
        t_a, ev_a = _t(lambda: evaluate_checkpoint(clip_ckpt, suite=suite, n=n_cpu, data_dir=args.data_dir,
                                                   device=gpu, progress=False, lipschitz="off"))
        t_b, ev_b = _t(lambda: evaluate_checkpoint(clip_ckpt, suite=suite, n=n_cpu, data_dir=args.data_dir,
                                                   device="cpu", progress=False, lipschitz="off"))
        a, b = _rows(ev_a), _rows(ev_b)
        diff = {k: a[k] - b[k] for k in a if k in b}
        summary["paper_mnist_small"] = {"n": n_cpu, "gpu_s": t_a, "cpu_s": t_b, "gpu_minus_cpu": diff}
        print(f"{suite} on {n_cpu} images: {gpu} {t_a:.1f} s, cpu {t_b:.1f} s ({t_b / max(t_a, 1e-9):.1f}x); "
              f"largest |GPU - CPU| accuracy difference {100 * max(map(abs, diff.values()), default=0):.2f} points")

        cifar_suite = "cifar10-linf-8"
        try:
            load_suite(cifar_suite)
        except (SuiteError, RobustclipError):
            print(f"suite {cifar_suite} is not in this checkout: the CIFAR-shaped CNN runs ci-quick instead")
            cifar_suite = "ci-quick"
        net, meta, split = _cifar_like(n_cifar, gpu, side=8 if dry else 32)  # a dry run keeps the CPU bounds small
        try:
            t_c, ev_c = _t(lambda: evaluate_model(net, meta, suite=cifar_suite, eval_set=split, n=n_cifar,
                                                  device=gpu, progress=True, name="cifar-shaped-cnn"))
            summary["cifar_shaped_s"] = t_c
            print(f"CIFAR-shaped CNN, {cifar_suite} on {n_cifar} synthetic images on {gpu}: {t_c:.1f} s; "
                  f"Lipschitz lower {ev_c.lipschitz.lower:.3g}, upper {ev_c.lipschitz.upper}")
        except RobustclipError as exc:
            summary["cifar_shaped_error"] = str(exc)
            print(f"CIFAR-shaped CNN with {cifar_suite}: not evaluated: {exc}")

        base = tmp / "cpu-baseline.json"
        t_up, _ = _t(lambda: gate.run_check(str(clip_ckpt), suite="ci-quick", baseline=str(base), n=n_check,
                                            update=True, lipschitz="fast", data_dir=args.data_dir, device="cpu"))
        t_ck, (code, rows, ck) = _t(lambda: gate.run_check(str(clip_ckpt), suite="ci-quick", baseline=str(base),
                                                           n=n_check, lipschitz="fast", data_dir=args.data_dir,
                                                           device=str(gpu)))
        summary["check"] = {"baseline_cpu_s": t_up, "check_gpu_s": t_ck, "exit_code": code,
                            "rows": [r.to_dict() for r in rows], "notes": ck.get("notes")}
        print(f"check: baseline on cpu {t_up:.1f} s, check on {gpu} {t_ck:.1f} s, exit {code} (0 expected)")
        print(output.format_table(rows))
        for note in ck.get("notes") or []:
            print(f"note: {note}")
    out = ROOT / "benchmarks" / "results" / ("gpu-dry-run.json" if dry else "gpu.json")
    if not dry:
        out.write_text(json.dumps(summary, indent=1, default=float) + "\n")
        print(f"wrote {out}")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
