"""``robustclip check``: the CI gate; fails when robustness regressed against a baseline."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .common import add_command, add_data_dir, add_model


def register(sub: Any) -> None:
    """Add the ``check`` subcommand."""
    p = add_command(sub, "check", run, help="fail when robustness regressed against a baseline (for CI)",
                    description="Evaluate a checkpoint under a suite and compare clean, per-attack, worst-case and "
                    "certified accuracy and the Lipschitz bounds with a baseline. Exit 0: nothing regressed; 1: a "
                    "regression beyond the tolerance and beyond sampling noise; 2: a usage or input error; 3: an "
                    "internal error.",
                    examples="  robustclip check runs/clip.safetensors --suite ci-quick \\\n"
                             "      --baseline reports/baselines/clip.json --update-baseline       # record\n"
                             "  robustclip check runs/clip.safetensors --suite ci-quick \\\n"
                             "      --baseline reports/baselines/clip.json --junit-xml check.xml    # gate\n")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--suite", required=True, help="attack suite (TOML path, or a suite name such as ci-quick)")
    p.add_argument("--baseline", required=True, metavar="B.json")
    p.add_argument("--tolerance", type=float, default=0.01, help="largest accepted accuracy drop (default 0.01)")
    p.add_argument("--lip-tolerance", type=float, default=0.05,
                   help="largest accepted relative rise of a Lipschitz bound (default 0.05)")
    p.add_argument("--n", type=int, default=None, help="test samples (default: the suite's n)")
    p.add_argument("--update-baseline", action="store_true", help="write the baseline from this evaluation and exit 0")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--junit-xml", metavar="PATH", default=None, help="also write JUnit XML to PATH")
    add_model(p)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N: where the model and attacks run")
    add_data_dir(p)


def run(args: argparse.Namespace) -> int:
    """Evaluate, compare with the baseline, print the verdict; exit 1 on a regression."""
    from .. import _io
    from ..gate import format_table, junit_xml, run_check

    code, rows, info = run_check(args.checkpoint, suite=args.suite, baseline=args.baseline, tolerance=args.tolerance,
                                 lip_tolerance=args.lip_tolerance, n=args.n, update=args.update_baseline,
                                 data_dir=args.data_dir, progress=not args.json,
                                 model=args.model, dataset=args.dataset, data_file=args.data, device=args.device)
    if args.update_baseline:
        print(f"wrote baseline {info['baseline_written']} ({info['suite']}, n={info['n']})")
        return 0
    if args.junit_xml:
        _io.write_text(args.junit_xml, junit_xml(rows, name=Path(args.checkpoint).stem, seconds=info["seconds"]))
    if args.json:
        print(json.dumps({**info, "status": "regressed" if code else "ok",
                          "comparisons": [r.to_dict() for r in rows]}, indent=2))
    else:
        print(f"robustclip check {args.checkpoint} against {args.baseline} ({info['suite']}, n={info['n']}, "
              f"tolerance {args.tolerance:g})")
        print(format_table(rows))
        bad = [r.metric for r in rows if r.regressed]
        print(f"\nREGRESSED: {', '.join(bad)}" if bad else "\nOK: nothing regressed")
        for f in info["flags"]:
            print(f"WARNING {f}", file=sys.stderr)
    return code
