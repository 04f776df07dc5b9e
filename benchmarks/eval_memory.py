"""How much memory does evaluating the paper suite take? Peak RSS per stage, each in a fresh process.

Each configuration runs in its own subprocess (so one stage's heap cannot hide another's) and reports
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at its end: the peak resident set of that process, in MiB.
Configurations (the paper's MNIST checkpoint, the first 1000 test images unless said otherwise):

* ``base``: import robustclip, load the checkpoint and the MNIST test split, nothing else;
* ``predict-10k``: clean logits on all 10k test images;
* ``lipschitz``: the evaluation's Lipschitz bounds (pair and Jacobian ascent seeded on 512 images);
* ``sanity``: PGD-L2 at ε = 10 on 200 images (the gradient-masking probe);
* ``attack:LABEL``: one attack of the suite, with the suite's batch size (and the library's defaults);
* ``pipeline``: ``pipeline.evaluate_checkpoint`` with the whole suite, as ``robustclip evaluate`` runs it.

``--before DIR`` runs every configuration a second time with ``PYTHONPATH=DIR`` (e.g. an export of an older
commit: ``git archive OLD robustclip | tar -x -C /tmp/old``) and prints both columns.

    python benchmarks/eval_memory.py [--only pipeline] [--before /tmp/old] [--threads 1]

Measured 2026-11-25 on the shared 2-core CPU box, 1 torch thread (peak MiB, before -> after the bounded-memory
change): base 382 -> 382, predict-10k 382 -> 382, lipschitz 399 -> 400, sanity 382 -> 382, fgsm 386 -> 386,
authors_pgd 414 -> 417, pgd 403 -> 408, apgd-ce 1343 -> 471, apgdt 2303 -> 727, pipeline (the whole paper suite,
as ``robustclip evaluate`` runs it) 2386 -> 786. Wall times on that box (load ~15) are noisy; run back to back
(``--before``), apgdt took 47 s -> 81 s and apgd-ce 13 s -> 16 s: the price of batches of 250.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import record

ROOT = Path(__file__).resolve().parent.parent
CKPT = ROOT / "reports" / "paper" / "checkpoints" / "mnist-clip-best.safetensors"
SUITE = ROOT / "attacks" / "paper-mnist.toml"
CONFIGS = ("base", "predict-10k", "lipschitz", "sanity", "attack:fgsm", "attack:authors_pgd", "attack:pgd",
           "attack:apgd-ce", "attack:apgdt", "pipeline")


def child(config: str, threads: int) -> dict[str, Any]:
    """Run one configuration in this process; return its peak RSS (MiB) and wall time (s)."""
    import torch

    torch.set_num_threads(threads)
    from robustclip.attacks.kinds import AttackSpec
    from robustclip.attacks.suites import load_suite
    from robustclip.bounds import lipschitz
    from robustclip.checkpoints import format as checkpoints
    from robustclip.data import datasets as data
    from robustclip.evaluation import attacking, pipeline

    model, _ = checkpoints.load(CKPT)
    model.eval()
    test = data.load("mnist", "test")
    x, y = test.x[:1000], test.y[:1000]
    suite = load_suite(str(SUITE))
    t0 = time.perf_counter()
    if config == "predict-10k":
        attacking.predict(model, test.x)
    elif config == "lipschitz":
        lipschitz.estimate(model, x[: pipeline.LIPSCHITZ_POINTS], seed=0, pairs=pipeline.LIPSCHITZ_PAIRS)
    elif config == "sanity":
        spec = AttackSpec("pgd", "pgd-huge", "L2", 10.0, {"steps": 20})
        attacking.run_attack(model, spec, x[:200], y[:200], n_classes=10, seed=0, batch_size=suite.batch_size)
    elif config.startswith("attack:"):
        spec = next(a for a in suite.attacks if a.label == config.split(":", 1)[1])
        attacking.run_attack(model, spec, x, y, n_classes=10, seed=0, batch_size=suite.batch_size)
    elif config == "pipeline":
        pipeline.evaluate_checkpoint(CKPT, suite=suite, progress=False)
    elif config != "base":
        raise SystemExit(f"unknown configuration {config!r}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"config": config, "peak_mib": peak, "seconds": time.perf_counter() - t0}


def measure(config: str, threads: int, code: str | None) -> dict[str, Any]:
    """Run ``config`` in a fresh interpreter (with ``code`` first on PYTHONPATH when given)."""
    env = dict(os.environ)
    if code:
        env["PYTHONPATH"] = code
    env.setdefault("TQDM_DISABLE", "1")
    out = subprocess.run([sys.executable, __file__, "--child", config, "--threads", str(threads)], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode:
        return {"config": config, "peak_mib": float("nan"), "seconds": float("nan"),
                "error": (out.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=None, help="run only this configuration (repeatable)")
    ap.add_argument("--before", default=None, metavar="DIR", help="also run with PYTHONPATH=DIR (older code)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in each child (default 1)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="also write the output to FILE after a header line (benchmarks/record.py)")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.threads)))
        return 0
    return record.keep(args.out, argv, run, args)


def run(args: argparse.Namespace) -> int:
    configs = args.only or list(CONFIGS)
    print(f"peak RSS (MiB, ru_maxrss) per configuration, fresh process each, {args.threads} torch thread(s); "
          f"checkpoint {CKPT.name}, suite {SUITE.name}, 1000 MNIST test images")
    head = f"{'configuration':22s}" + (f"{'before':>10s} {'s':>7s}" if args.before else "") + f"{'now':>10s} {'s':>7s}"
    print(head)
    for c in configs:
        line = f"{c:22s}"
        for code in ([args.before] if args.before else []) + [str(ROOT)]:
            r = measure(c, args.threads, code)
            line += f"{r['peak_mib']:10.0f} {r['seconds']:7.1f}"
            if "error" in r:
                line += f"  ({r['error'][:60]})"
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
