"""``robustclip sweep``: train and evaluate every (method, λ or τ, seed) of a sweep, resumably, locally or on Ray.

Exit status: 0 every run finished; 1 the sweep ran but runs failed (listed; ``--retry-failed`` retries them) or, for
``--finalize``, are not finished; 2 the sweep could not start (bad file, label, flag or folder); 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import RobustclipError
from ..exitcodes import ExitCode
from .common import add_command, add_data_dir, add_quiet, console_table, split_floats


def register(sub: Any) -> None:
    """Add the ``sweep`` subcommand."""
    p = add_command(sub, "sweep", run, help="train and evaluate every (method, λ, seed) of a sweep",
                    description="Run a sweep: every (method, λ or τ, seed) trains, saves its checkpoint and is "
                    "evaluated. Resumable: run it again and only unfinished runs are redone. The gathered table is "
                    "OUT/results.csv.",
                    examples="  robustclip sweep my-sweep.toml --out runs/my-sweep   # a sweep file of your own\n"
                             "  robustclip sweep --dataset mnist --method none --method weight:1e-4,1e-3 \\\n"
                             "      --method clip:0.05,0.1 --method clip:tau=0.97 --seeds 0,1 --epochs 5 \\\n"
                             "      --suite ci-quick --out runs/quick\n"
                             "  robustclip sweep experiments/paper/paper.toml --out runs/paper --engine ray "
                             "--address HEAD:6379\n"
                             "  robustclip sweep experiments/paper/paper.toml --out runs/paper --list\n"
                             "  robustclip sweep experiments/paper/paper.toml --out runs/paper "
                             "--run-index $SLURM_ARRAY_TASK_ID\n"
                             "  robustclip sweep experiments/paper/paper.toml --out runs/paper --finalize\n")
    p.add_argument("file", nargs="?", help="sweep TOML file (or give --dataset and --method flags)")
    p.add_argument("--dataset", help="flags mode: mnist, fashion-mnist, cifar10, cifar100 or regression")
    p.add_argument("--model", help="flags mode: fc, cnn or mlp1d, or MODULE:CALLABLE naming your own code (imported "
                   "when a run starts; on Ray, from each worker's environment)")
    p.add_argument("--data", default=None, metavar="FILE|DIR",
                   help="flags mode: your own training data (.npz/safetensors or an image folder) instead of --dataset")
    p.add_argument("--test-data", default=None, metavar="FILE|DIR",
                   help="flags mode, with --data: the held-out test set each run is evaluated on")
    p.add_argument("--method", action="append", default=[], metavar="REG[:λ,λ|:tau=τ,τ]",
                   help="flags mode, repeatable: none, weight:1e-4,1e-3, clip:0.1, clip:tau=0.95,0.97")
    p.add_argument("--seeds", default="0", help="flags mode: comma-separated seeds (default 0)")
    p.add_argument("--epochs", type=int, default=None, help="flags mode: epochs per run")
    p.add_argument("--n-train", type=int, default=None, help="flags mode: training subset size")
    p.add_argument("--suite", default=None, help="flags mode: attack suite (default demo)")
    p.add_argument("--n-test", type=int, default=None, help="flags mode: test samples")
    p.add_argument("--out", required=True, metavar="DIR", help="sweep folder (created; resumed if it exists)")
    p.add_argument("--jobs", type=int, default=1,
                   help="parallel processes (default 1; 2 cores are easily oversubscribed)")
    p.add_argument("--fresh", action="store_true", help="discard finished runs and start over (only in a sweep folder)")
    p.add_argument("--retry-failed", action="store_true", help="run again the runs that failed before (default: "
                   "report them, do not retry)")
    g = p.add_argument_group("engines and schedulers")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this machine (--jobs processes); ray: each run a Ray task (pip install "
                   '"robustclip[ray]")')
    g.add_argument("--address", default=None, metavar="ADDR",
                   help="--engine ray: the cluster to join (auto, HOST:6379, ray://HOST:10001); default: start a "
                   "local Ray instance")
    g.add_argument("--cpus-per-run", type=float, default=1.0, metavar="N",
                   help="--engine ray: CPUs per run (default 1)")
    g.add_argument("--gpus-per-run", type=float, default=0.0, metavar="N",
                   help='--engine ray: GPUs per run (default 0; set train = { device = "cuda" } in the sweep file)')
    p.add_argument("--device", default="auto",
                   help="auto (default: cuda when a GPU is present, else cpu), cpu or cuda: where runs train and are "
                   "evaluated when the sweep file does not say (train = { device = ... })")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--list", action="store_true", help="print every run's index, id and state; run nothing")
    mode.add_argument("--run-index", type=int, default=None, metavar="I",
                      help="run only run I of the plan (one array job, e.g. $SLURM_ARRAY_TASK_ID); no results.csv")
    mode.add_argument("--finalize", action="store_true",
                      help="gather OUT/results.csv from the finished runs (after array jobs); train nothing")
    add_quiet(p)
    add_data_dir(p)


def sweep_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    """Build a sweep dict from ``robustclip sweep`` flags."""
    data = getattr(args, "data", None)  # flags added later: a Namespace built by hand may lack them
    if not (args.dataset or data) or not args.method:
        raise RobustclipError("give a sweep TOML file, or --dataset (or --data and --test-data) and at least one "
                              "--method", "e.g. robustclip sweep --dataset mnist --method none --method clip:0.1 "
                              "--out runs/x")
    methods = []
    for m in args.method:
        reg, _, rest = m.partition(":")
        entry: dict[str, Any] = {"reg": reg}
        if rest.startswith("tau="):
            entry["tau"] = split_floats(rest[4:], f"--method {m}")
        elif rest:
            entry["lam"] = split_floats(rest, f"--method {m}")
        methods.append(entry)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise RobustclipError(f"--seeds {args.seeds!r} is not a comma-separated list of integers",
                              "e.g. --seeds 0,1,2") from None
    source = {"dataset": args.dataset} if args.dataset else {}
    raw: dict[str, Any] = {"name": f"{args.dataset or 'custom'}-sweep", **source, "seeds": seeds, "method": methods}
    for key in ("model", "epochs", "n_train", "suite", "n_test", "data", "test_data"):
        if getattr(args, key, None) is not None:
            raw[key] = getattr(args, key)
    return raw


def run(args: argparse.Namespace) -> int:
    """Plan, run the unfinished runs (or list, run one, finalize), print the gathered table."""
    from ..sweeps import driver, planning

    if args.engine != "ray" and (args.cpus_per_run != 1.0 or args.gpus_per_run != 0.0):
        raise RobustclipError("--cpus-per-run and --gpus-per-run need --engine ray", "add --engine ray")
    if args.list or args.finalize:
        if args.engine != "local" or args.jobs != 1 or args.fresh or args.retry_failed:
            raise RobustclipError("--list and --finalize run nothing: they take no --engine, --jobs, --fresh or "
                                  "--retry-failed", "drop those flags")
    raw: dict[str, Any] | None
    if args.file:
        raw = planning.load_sweep(args.file)
        where = args.file
    elif (args.list or args.finalize) and not (args.dataset or args.data):
        raw, where = None, str(Path(args.out) / "sweep.json")  # the plan stored in the sweep folder
    else:
        raw = sweep_from_flags(args)
        where = "<flags>"
    if args.list:
        rows = driver.status(raw, args.out, where=where)
        for i, r, state in rows:
            print(f"{i}\t{r.id}\t{state}")
        print(f"{len(rows)} runs; one array job each: --run-index 0..{len(rows) - 1}")
        return ExitCode.OK
    if args.finalize:
        outcome = driver.finalize(raw, args.out, where=where)
        return _report(args, outcome, 0.0)
    assert raw is not None
    _apply_device(raw, args.device)
    t0 = time.perf_counter()
    outcome = driver.sweep(raw, args.out, data_dir=args.data_dir, jobs=args.jobs, progress=not args.quiet,
                           where=where, fresh=args.fresh, engine=args.engine, address=args.address,
                           cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                           retry_failed=args.retry_failed, only=args.run_index)
    return _report(args, outcome, time.perf_counter() - t0)


def _report(args: argparse.Namespace, outcome: Any, seconds: float) -> int:
    """Print the table (or the one run's state) and the failures; the exit status."""
    table = outcome.table
    if args.run_index is not None:
        rid = outcome.runs[args.run_index].id
        state = ("failed" if rid in outcome.failed else "held by another sweep" if rid in outcome.elsewhere
                 else "done" if rid in set(table.run) else "not finished")
        print(f"run {args.run_index} ({rid}): {state}" + (f" in {seconds:.0f}s" if rid in outcome.ran else ""))
    else:
        from ..data.datasets import is_regression

        cls = table[~table.dataset.map(is_regression).astype(bool)].rename(columns={"run": "model"})
        if len(cls) and not args.quiet:
            print(console_table(cls))
        if len(table):
            from ..reports.pages import run_warnings

            for rid, ws in run_warnings(args.out).items():  # untrained models, masking signs: never silent
                for w in ws:
                    print(f"WARNING {rid}: {w}", file=sys.stderr)
        verb = "finalized" if args.finalize else f"done in {seconds:.0f}s"
        print(f"sweep {verb}: {table.run.nunique()} of {len(outcome.runs)} runs finished; "
              f"table: {Path(args.out) / 'results.csv'}")
    for rid, err in sorted(outcome.failed.items()):
        print(f"  FAILED {rid}: {err} (details: {Path(args.out) / 'runs' / rid / 'failure.json'})")
    if outcome.failed:
        print(f"{len(outcome.failed)} runs failed; fix the cause and rerun with --retry-failed")
        return ExitCode.FAILURE
    unfinished = sorted(outcome.missing + (outcome.elsewhere if args.run_index is None else []))
    if unfinished:
        print(f"{len(unfinished)} runs are not finished: " + ", ".join(unfinished[:10])
              + (" ..." if len(unfinished) > 10 else ""))
        return ExitCode.FAILURE
    return ExitCode.OK


def _apply_device(raw: dict[str, Any], name: str) -> None:
    """Put ``--device`` into the sweep's training settings unless the file sets one. The CPU is the default and is
    not written, so a sweep folder made on a CPU resumes with the same run digests."""
    from ..core.devices import resolve_device

    dev = resolve_device(name)
    train = raw.get("train")
    if dev.type == "cpu" or (isinstance(train, dict) and "device" in train):
        return
    if train is None:
        raw["train"] = train = {}
    if isinstance(train, dict):
        train["device"] = dev.type
