"""What does a Ray sweep cost over a local one? (sweeps beyond one machine)

In one process: the same 8 tiny runs (1-D regression, --epochs each) as a local sequential sweep and as a Ray
sweep with 2 workers on a local Ray instance (2 CPUs), each into a fresh folder; each engine runs the sweep once
cold (imports, worker start) and once warm, and the ratio compares the warm runs. Prints the wall times, their
ratio, and above all Ray's overhead per run: on 2 shared cores Ray cannot speed anything up, so what this
measures is the price of the engine (start-up, the first task's worker start, per-task scheduling and the trip
of each checkpoint through the object store). A no-op task round trip is timed too.

Then it turns measured costs into an estimate for a sweep of --runs runs on --nodes nodes of --cores cores:
``ceil(runs / slots) × (run seconds + overhead per run) + start-up``, with ``slots = nodes × cores / cpus per run``.

    python benchmarks/sweep_scaling.py [--epochs 30] [--run-seconds 60] [--runs 200] [--nodes 1,4,16] [--cores 16]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import record
import torch

from robustclip.sweeps import driver, planning


def _plan(epochs: int) -> dict[str, Any]:
    return {"name": "scaling", "dataset": "regression", "epochs": epochs, "seeds": [0, 1],
            "method": [{"reg": "clip", "lam": [0.01, 0.1]}, {"reg": "weight", "lam": [0.001, 0.01]}]}


def _compute_seconds(out: Path) -> list[float]:
    return [float(json.loads(m.read_text())["seconds"]) for m in sorted(out.glob("runs/*/manifest.json"))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=30, help="epochs of each tiny regression run (default 30)")
    ap.add_argument("--run-seconds", type=float, default=60.0,
                    help="assumed seconds of one real run for the estimate (default 60: a paper MNIST run, 2 cores)")
    ap.add_argument("--runs", type=int, default=200, help="runs of the estimated sweep (default 200)")
    ap.add_argument("--nodes", default="1,4,16", help="node counts to estimate for (default 1,4,16)")
    ap.add_argument("--cores", type=int, default=16, help="cores per node in the estimate (default 16)")
    ap.add_argument("--cpus-per-run", type=int, default=2, help="CPUs per run in the estimate (default 2)")
    ap.add_argument("--out", default=None, metavar="FILE",
                    help="also write the output to FILE after a header line (benchmarks/record.py)")
    args = ap.parse_args(argv)
    return record.keep(args.out, argv, run, args)


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    import ray

    raw = _plan(args.epochs)
    n = len(planning.plan(raw))
    with tempfile.TemporaryDirectory(prefix="sweep-scaling-") as tmp:
        driver.sweep(raw, Path(tmp) / "local-cold", progress=False)  # imports and first-call costs, not timed
        t0 = time.perf_counter()
        driver.sweep(raw, Path(tmp) / "local", progress=False)
        local_wall = time.perf_counter() - t0
        local_runs = _compute_seconds(Path(tmp) / "local")

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        init = time.perf_counter() - t0
        noop = ray.remote(num_cpus=1)(lambda: None)
        t0 = time.perf_counter()
        ray.get(noop.remote())
        first_task = time.perf_counter() - t0
        trips = []
        for _ in range(20):
            t0 = time.perf_counter()
            ray.get(noop.remote())
            trips.append(time.perf_counter() - t0)
        walls, computes = [], []
        for name in ("ray-cold", "ray-warm"):  # cold: each worker imports torch and robustclip on its first run
            t0 = time.perf_counter()
            outcome = driver.sweep(raw, Path(tmp) / name, engine="ray", cpus_per_run=1, progress=False)
            walls.append(time.perf_counter() - t0)
            computes.append(_compute_seconds(Path(tmp) / name))
            assert not outcome.failed and len(computes[-1]) == n == len(local_runs)
        ray.shutdown()

    workers = 2
    local_over = max(0.0, (local_wall - sum(local_runs)) / n)
    overs = [max(0.0, (w * workers - sum(c)) / n) for w, c in zip(walls, computes)]
    overhead = overs[1]
    print(f"{n} tiny runs (1-D regression, {args.epochs} epochs), torch 1 thread per run, 2 CPU cores")
    print(f"  local sequential:  {local_wall:6.1f} s wall; a run computes in {statistics.median(local_runs):.2f} s "
          f"(median); driver overhead {local_over:.2f} s per run")
    for label, w, c, o in zip(("Ray, cold workers:", "Ray, warm workers:"), walls, computes, overs):
        print(f"  {label:18s} {w:6.1f} s wall; a run computes in {statistics.median(c):.2f} s (median; two at once "
              f"on two shared cores); overhead {o:.2f} s per run")
    print(f"  ratio local/Ray (warm): {local_wall / walls[1]:.2f}x; Ray start-up: ray.init {init:.1f} s, "
          f"first task {first_task:.1f} s")
    print(f"  overhead per run = (wall x workers - compute) / runs; a no-op task's round trip: "
          f"{1000 * statistics.median(trips):.1f} ms (median of 20)")
    startup = init + first_task + overs[0] * workers  # the cold workers' imports, once per worker
    print(f"\nestimate: {args.runs} runs of {args.run_seconds:g} s, {args.cpus_per_run} CPUs per run, "
          f"{args.cores} cores per node, +{overhead:.2f} s per run, +{startup:.0f} s start-up")
    for nodes in (int(x) for x in args.nodes.split(",") if x.strip()):
        slots = max(1, nodes * args.cores // args.cpus_per_run)
        waves = math.ceil(args.runs / slots)
        total = waves * (args.run_seconds + overhead) + startup
        print(f"  {nodes:3d} nodes: {slots:4d} runs at once, {waves:3d} waves, about {total / 60:6.1f} min")
    print(f"  one 2-core machine, 1 run at a time: about {args.runs * args.run_seconds / 3600:.1f} h")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
