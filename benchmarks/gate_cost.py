"""What does the CI gate cost next to one evaluation? (issue 22's targets, as ratios in one process)

On the small strided CNN (2 conv, 2 linear, about 166k parameters; ``--model cnn``), trained one epoch on 5,000
MNIST images, with the ``ci-quick`` suite on 500 test images, it times:

* ``evaluate``: one evaluation (attacks, certificates, Lipschitz bounds; default ``--lipschitz full``);
* ``gate``: ``check --update-baseline`` (fixed mode: 8 ascent seeds in full and fast) followed by ``check``;
* ``gate fast``: the same with ``--lipschitz fast``;

and prints each time and the ratios to ``evaluate``. Targets: gate <= 3x and under 5 minutes on 2 cores,
gate fast <= 1.5x. It also prints the Lipschitz plan (the cost budget's settings) and the smallest detectable drop
of the check; with ``--mlp`` the same for the paper's MLP (its plan is unscaled, so its numbers do not change).

    python benchmarks/gate_cost.py --data-dir ../shared/data [--mlp] [--threads 2] [--out FILE]

``evaluate`` is timed before and after the gates and the ratios use the mean of the two, so a load that changes
during the run (a shared machine) biases them less.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import record
import torch

from robustclip.bounds import budget as lipschitz_budget
from robustclip.checkpoints import foreign as loading
from robustclip.evaluation.pipeline import evaluate_checkpoint, train_to_checkpoint
from robustclip.gate import check as gate
from robustclip.models import specs as models
from robustclip.training.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
SUITE = str(ROOT / "attacks" / "ci-quick.toml")


def _timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench(arch: str, tmp: Path, data_dir: str | None) -> dict[str, float]:
    spec = {"arch": "cnn", "num_classes": 10} if arch == "cnn" else models.paper_spec()
    ckpt = tmp / f"{arch}.safetensors"
    cfg = TrainConfig(dataset="mnist", model=spec, epochs=1, n_train=5000, optimizer="adam", lr=0.002, seed=0,
                      lip_probe_pairs=0)
    train_to_checkpoint(cfg, ckpt, data_dir=data_dir, progress=False, name=arch)
    model, _ = loading.load_model(ckpt)
    print(f"\n== {arch}: {models.count_parameters(model)} parameters, "
          f"{lipschitz_budget.forward_macs(model, (1, 28, 28)) / 1e6:.2f} MMAC per sample")
    for mode in ("full", "fast"):
        print("  " + lipschitz_budget.plan_ascent(model, (1, 28, 28), mode).describe())
    t_eval, ev = _timed(lambda: evaluate_checkpoint(ckpt, suite=SUITE, data_dir=data_dir, progress=False))
    lip = ev.lipschitz
    print(f"  evaluate: {t_eval:6.1f} s  (Lipschitz lower {lip.lower:.3f} in "
          f"{lip.seconds.get('quotient', 0) + lip.seconds.get('jacobian', 0):.1f} s, upper {lip.upper} in "
          f"{lip.seconds.get('upper', 0):.1f} s)")
    out = {"evaluate": t_eval}
    for mode in ("full", "fast"):
        base = tmp / f"{arch}-{mode}.json"
        t0 = time.perf_counter()
        gate.run_check(str(ckpt), suite=SUITE, baseline=str(base), update=True, lipschitz=mode, data_dir=data_dir,
                       progress=False)
        t_up = time.perf_counter() - t0
        t0 = time.perf_counter()
        code, _rows, info = gate.run_check(str(ckpt), suite=SUITE, baseline=str(base), lipschitz=mode,
                                           data_dir=data_dir, progress=False)
        t_ck = time.perf_counter() - t0
        total = t_up + t_ck
        out[f"gate_{mode}"] = total
        print(f"  gate --lipschitz {mode}: update {t_up:6.1f} s + check {t_ck:6.1f} s = {total:6.1f} s "
              f"= {total / t_eval:4.2f}x evaluate  (exit {code})")
        print(f"    {info['detectable']}")
    t_eval2, _ = _timed(lambda: evaluate_checkpoint(ckpt, suite=SUITE, data_dir=data_dir, progress=False))
    print(f"  evaluate again: {t_eval2:6.1f} s; ratios below use the mean, {(t_eval + t_eval2) / 2:.1f} s")
    t_eval = (t_eval + t_eval2) / 2
    print(f"  targets: gate full <= 3x ({out['gate_full'] / t_eval:.2f}x) and < 300 s ({out['gate_full']:.0f} s); "
          f"gate fast <= 1.5x ({out['gate_fast'] / t_eval:.2f}x)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2, as the targets say)")
    ap.add_argument("--mlp", action="store_true", help="also the paper's MLP")
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="also write the output to FILE after a header line (benchmarks/record.py)")
    args = ap.parse_args(argv)
    return record.keep(args.out, argv, run, args)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; times are wall-clock on this machine")
    with tempfile.TemporaryDirectory() as d:
        bench("cnn", Path(d), args.data_dir)
        if args.mlp:
            bench("fc", Path(d), args.data_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
