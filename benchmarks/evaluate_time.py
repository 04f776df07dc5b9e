"""Where the time of one ``robustclip evaluate`` goes: Lipschitz bounds, each attack, certificates; and peak memory.

Runs :func:`robustclip.evaluation.pipeline.evaluate_checkpoint` once (as ``robustclip evaluate CKPT --suite SUITE``
does, default settings) in this fresh process and prints the seconds by phase from the result's own records
(``attack_batches``: seconds and samples per attack; certificate and Lipschitz seconds), the total, and the
process's peak resident memory (``ru_maxrss``).

Target (issue 25): the whole ``certify-l2`` evaluation of ``mnist-clip-best`` (1000 images, 7 ε, attacks and
certificates) in ≤ 2 minutes and ≤ 1 GB peak on 2 cores. ``--attack-certified`` times it with APGD-T attacking the
certified samples too (the suite's ``skip_certified`` off), as ``robustclip evaluate --attack-certified`` does.

    python benchmarks/evaluate_time.py [--checkpoint PATH] [--suite certify-l2] [--attack-certified] \\
        [--out benchmarks/results/evaluate-certify-l2.txt]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import record
import torch

from robustclip.evaluation.pipeline import evaluate_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(ROOT / "reports/paper/checkpoints/mnist-clip-best.safetensors"))
    ap.add_argument("--suite", default="certify-l2")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--attack-certified", action="store_true",
                    help="attack certified samples with every attack too (as robustclip evaluate --attack-certified)")
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="also write the output to FILE after a header line (benchmarks/record.py)")
    a = ap.parse_args()
    record.keep(a.out, None, run, a)


def run(a: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    ev = evaluate_checkpoint(a.checkpoint, suite=a.suite, data_dir=a.data_dir, progress=False,
                             attack_certified=a.attack_certified)
    total = time.perf_counter() - t0
    res = ev.result
    assert res is not None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{a.checkpoint}, suite {a.suite}: {res.meta['n']} images, torch threads {torch.get_num_threads()}, "
          f"attacks skipping certified samples: {', '.join(res.meta['skip_certified']) or 'none'}")
    lip = ev.lipschitz.seconds
    print(f"  Lipschitz bounds   {sum(lip.values()):7.1f} s   ({', '.join(f'{k} {v:.1f}' for k, v in lip.items())})")
    by_type: dict[str, float] = {}
    for key, log in res.meta["attack_batches"].items():
        label = key.split("|")[0]
        by_type[label] = by_type.get(label, 0.0) + float(log.get("seconds", 0.0))
        skipped = f"  ({log['certified_skipped']} certified, skipped)" if "certified_skipped" in log else ""
        print(f"    {key:24s} {log.get('samples', 0):5d} samples  {log.get('seconds', 0.0):7.1f} s  "
              f"batch {log['batch_size']}{skipped}")
    for label, sec in by_type.items():
        print(f"  attack {label:11s} {sec:7.1f} s")
    cert = res.lipschitz.get("seconds") or {}
    for method, sec in cert.items():
        print(f"  certify {method:10s} {sec:7.1f} s")
    print(f"  total              {total:7.1f} s   (target <= 120 s)")
    print(f"  peak memory        {peak:7.0f} MB  (target <= 1024 MB)")


if __name__ == "__main__":
    main()
