"""The docs' λ study of your own model, timed (docs/lambda-study.md; issue 34's targets).

In one process, from a copy of examples/lambda-study with its data made at the study's tiny scale (2,000 training
rows, 200 test images; 6 settings × 2 seeds, 1 epoch each, the ci-quick suite):

1. the sweep on the local engine (``robustclip sweep study.toml``), wall time against the 3-minute target;
2. the same 12 runs by hand, ``robustclip train`` then ``robustclip evaluate`` per run (in-process), so the sweep
   machinery's cost is the ratio of (1) to (2), against the 1.05× target. Both evaluate the same 200 images with
   the same suite, seed and Lipschitz mode (``fast``, as the study file says), and neither scores validation
   images (``n_val = 0`` in the copy);
3. the sweep on a local Ray instance (``--engine ray``), whose table must equal (1)'s in every accuracy and bound
   (one torch thread everywhere, as a one-CPU Ray worker has: another thread count sums in another order).

A warm-up run by hand comes first and is not counted, so neither timing pays the process's first imports.

    python benchmarks/lambda_study.py [--out benchmarks/results/lambda-study.txt] [--no-ray] [--device cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import record
import torch

ROOT = Path(__file__).resolve().parent.parent
STUDY = ROOT / "examples" / "lambda-study"
SETTINGS = [("none", None), ("clip", 0.01), ("clip", 0.05), ("clip", 0.2), ("weight", 0.0001), ("weight", 0.001)]
VALUE_COLUMNS = ["accuracy", "n", "lip_lower", "lip_upper"]


def _cli(argv: list[str]) -> None:
    from robustclip import cli

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = cli.main(argv)
    if code != 0:
        raise SystemExit(f"robustclip {' '.join(argv[:2])} exited {code}: {err.getvalue().strip()[-400:]}")


def _by_hand(seeds: list[int], device: str, settings: list[tuple[str, float | None]] = SETTINGS) -> float:
    Path("hand").mkdir(exist_ok=True)
    t0 = time.perf_counter()
    for seed in seeds:
        for method, lam in settings:
            name = f"{method}-{lam}-s{seed}"
            train = ["train", "--model", "studynets:res_cnn", "--data", "train.npz", "--test-data", "test.npz",
                     "--reg", method, "--epochs", "1", "--optimizer", "adam", "--lr", "0.002", "--batch-size", "64",
                     "--seed", str(seed), "--device", device, "--out", f"hand/{name}.safetensors", "--quiet",
                     "--force"]
            _cli([*train, *(["--lam", str(lam)] if lam is not None else [])])
            _cli(["evaluate", f"hand/{name}.safetensors", "--model", "studynets:res_cnn", "--data", "test.npz",
                  "--suite", "ci-quick", "--n", "200", "--lipschitz", "fast", "--device", device,
                  "--out", f"hand/{name}", "--quiet", "--force"])
    return time.perf_counter() - t0


def _sweep(out: str, engine: str, device: str) -> tuple[float, pd.DataFrame]:
    t0 = time.perf_counter()
    _cli(["sweep", "study.toml", "--out", out, "--engine", engine, "--device", device, "--quiet",
          *(["--jobs", "1"] if engine == "local" else [])])
    return time.perf_counter() - t0, pd.read_csv(Path(out) / "results.csv")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="robustclip-study-"))
    try:
        shutil.copytree(STUDY, work / "study")
        os.chdir(work / "study")
        sys.path.insert(0, str(work / "study"))
        subprocess.run([sys.executable, "make_data.py"], check=True, capture_output=True)
        text = Path("study.toml").read_text(encoding="utf-8")
        Path("study.toml").write_text("n_val = 0\n" + text, encoding="utf-8")  # a top-level key: before any table
        seeds = [0, 1]
        print(f"λ study at tiny scale: 6 settings x {len(seeds)} seeds, 1 epoch, 2000 training rows, 200 test "
              f"images, suite ci-quick, {args.threads} torch thread(s), device {args.device}")
        # warm-up: imports, the data's first read and torch's first kernels are paid once, before either timing
        t_warm = _by_hand([0], args.device, SETTINGS[:1])
        print(f"warm-up (one run by hand):  {t_warm:7.1f} s  (not counted)")
        t_sweep, table = _sweep("runs/local", "local", args.device)
        print(f"sweep, local engine:        {t_sweep:7.1f} s  (target: at most 180 s)")
        t_hand = _by_hand(seeds, args.device)
        print(f"same runs by hand:          {t_hand:7.1f} s  (train then evaluate, 12 times, in-process)")
        print(f"sweep machinery:            {t_sweep / t_hand:7.3f}x the runs by hand  (target: at most 1.05x)")
        if not args.no_ray:
            t_ray, ray_table = _sweep("runs/ray", "ray", args.device)
            key = ["run", "attack", "norm", "eps"]
            a = table.sort_values(key).reset_index(drop=True)[key + VALUE_COLUMNS]
            b = ray_table.sort_values(key).reset_index(drop=True)[key + VALUE_COLUMNS]
            same = a.equals(b)
            if not same:
                diff = (a[VALUE_COLUMNS] != b[VALUE_COLUMNS]).any(axis=1)
                print(f"rows that differ: {int(diff.sum())}, e.g. {a[diff].head(2).to_dict(orient='records')} vs "
                      f"{b[diff].head(2).to_dict(orient='records')}")
            print(f"sweep, Ray engine:          {t_ray:7.1f} s  (a local Ray instance; start-up included)")
            print(f"Ray table equals local:     {same}  ({len(a)} rows, columns {', '.join(VALUE_COLUMNS)})")
        clean = table[table.attack == "clean"].groupby("label").accuracy.mean()
        worst = table[(table.attack == "worst_case") & (table.eps == 1.0)].groupby("label").accuracy.mean()
        print("mean over seeds (fractions): " + ", ".join(
            f"{k} clean {clean[k]:.3f} / worst case L2 1 {worst[k]:.3f}" for k in clean.index))
    finally:
        os.chdir(ROOT)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: what a Ray worker with one CPU uses, so the tables can match)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--no-ray", action="store_true", help="skip the Ray engine")
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="also write the output to FILE after a header line (benchmarks/record.py)")
    args = ap.parse_args(argv)
    return record.keep(args.out, argv, run, args)


if __name__ == "__main__":
    sys.exit(main())
