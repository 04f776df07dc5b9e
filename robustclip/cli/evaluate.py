"""``robustclip evaluate``: evaluate saved checkpoints under an attack suite and write the result tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import RobustclipError
from .common import add_command, add_data_dir, add_quiet, console_table, positive_int


def register(sub: Any) -> None:
    """Add the ``evaluate`` subcommand."""
    p = add_command(sub, "evaluate", run, help="evaluate checkpoints under an attack suite",
                    description="Evaluate saved checkpoints: clean, noise and attack accuracies per ε, the per-sample "
                    "worst case, certified accuracy, Lipschitz bounds and sanity flags. Writes DIR/results.csv, "
                    "DIR/results.json and DIR/lipschitz.json.",
                    examples="  robustclip evaluate runs/clip.safetensors --suite paper-mnist --out runs/eval\n"
                             "  robustclip evaluate a.safetensors b.safetensors --suite ci-quick --n 500 "
                             "--out runs/cmp\n")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT")
    p.add_argument("--suite", default="demo", help="suite TOML path, a suite name (e.g. ci-quick), or 'demo'")
    p.add_argument("--n", type=positive_int, default=None, help="test samples (default: the suite's n, else all)")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--seed", type=int, default=None, help="attack seed (default: the suite's)")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N: where the model and attacks run")
    add_quiet(p)
    add_data_dir(p)


def run(args: argparse.Namespace) -> int:
    """Evaluate every checkpoint, write results.csv, results.json and lipschitz.json, print a table."""
    import pandas as pd

    from .. import _io
    from ..attacks import load_suite
    from ..pipeline import evaluate_checkpoint, resolve_device

    suite = load_suite(args.suite)
    resolve_device(args.device)  # fail before any work on an unavailable device
    for c in args.checkpoints:  # fail before any work on a bad path
        if not Path(c).is_file():
            raise RobustclipError(f"checkpoint {c} does not exist", "check the path")
    frames, lips, metas, flags = [], [], [], []
    for c in args.checkpoints:
        ev = evaluate_checkpoint(c, suite=suite, data_dir=args.data_dir, n=args.n, batch_size=args.batch_size,
                                 seed=args.seed, progress=not args.quiet, device=args.device)
        res = ev.result
        assert res is not None
        frames.append(res.frame)
        lips.append(ev.lipschitz_dict())
        metas.append({**res.meta, "flags": res.flags, "seconds": res.seconds})
        flags += [f"{ev.name}: {f}" for f in res.flags]
    frame = pd.concat(frames, ignore_index=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    _io.write_text(out / "results.csv", frame.to_csv(index=False))
    _io.write_json(out / "results.json", {"suite": suite.name, "suite_file": suite.path, "suite_config": suite.raw,
                                          "versions": _io.versions(), "runs": metas,
                                          "results": frame.to_dict(orient="records")})
    _io.write_json(out / "lipschitz.json", lips)
    print(console_table(frame, lips))
    for f in flags:
        print(f"WARNING {f}", file=sys.stderr)
    print(f"wrote {out / 'results.csv'}, {out / 'results.json'}, {out / 'lipschitz.json'}")
    return 0
