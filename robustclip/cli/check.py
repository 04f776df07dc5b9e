"""``robustclip check``: the CI gate; fails when robustness regressed against a baseline beyond measured noise."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .common import add_command, add_data_dir, add_lipschitz, add_model, add_quiet, positive_int


def _number(v: str) -> float:
    """An argparse type: a float (range and finiteness are checked where the value is used, as exit 2)."""
    try:
        return float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {v!r}") from None


def register(sub: Any) -> None:
    """Add the ``check`` subcommand."""
    p = add_command(sub, "check", run, help="fail when robustness regressed against a baseline (for CI)",
                    description="Evaluate a checkpoint under a suite and compare clean, per-attack, worst-case and "
                    "certified accuracy and the Lipschitz bounds with a baseline, beyond measured noise: a paired "
                    "McNemar test against a fixed checkpoint's per-sample outcomes, or the spread over training "
                    "seeds of a retrained baseline; family-wise false-alarm rate 5%. A gain beyond noise is flagged "
                    "SUSPICIOUS (a broken attack looks like a gain). Exit 0: nothing regressed; 1: a regression; "
                    "2: a usage or input error; 3: an internal error.",
                    examples="  robustclip check runs/clip.safetensors --suite ci-quick \\\n"
                             "      --baseline reports/baselines/clip.json --update-baseline       # record (fixed)\n"
                             "  robustclip check runs/seed{0,1,2,3,4}.safetensors --mode retrained "
                             "--suite ci-quick \\\n"
                             "      --baseline reports/baselines/clip.json --update-baseline       "
                             "# record (retrained)\n"
                             "  robustclip check runs/clip.safetensors --suite ci-quick \\\n"
                             "      --baseline reports/baselines/clip.json --junit-xml check.xml    # gate\n")
    p.add_argument("checkpoint", metavar="CKPT", nargs="+",
                   help="the checkpoint to check; with --update-baseline --mode retrained, several seeds")
    p.add_argument("--suite", required=True, help="attack suite (TOML path, or a suite name such as ci-quick)")
    p.add_argument("--baseline", required=True, metavar="B.json")
    p.add_argument("--mode", choices=("fixed", "retrained"), default=None,
                   help="baseline mode, with --update-baseline: fixed (one checkpoint, paired tests) or retrained "
                   "(several seeds, their spread); a check reads it from the baseline")
    p.add_argument("--tolerance", type=_number, default=0.01,
                   help="smallest accuracy drop that counts, on top of noise, as a fraction (default 0.01: 1 point)")
    p.add_argument("--lip-tolerance", type=_number, default=0.02,
                   help="relative floor added to the measured spread of a Lipschitz bound (default 0.02)")
    add_lipschitz(p, "no Lipschitz rows")
    p.add_argument("--n", type=positive_int, default=None, help="test samples (default: the suite's n)")
    p.add_argument("--update-baseline", action="store_true",
                   help="write (overwrite) the baseline from this evaluation and exit 0: your consent to replace it")
    p.add_argument("--fail-on-suspicious", action="store_true",
                   help="exit 1 also when a metric improved beyond noise (default: a loud warning, exit 0)")
    p.add_argument("--json", action="store_true", help="print the result as JSON (format robustclip-check)")
    p.add_argument("--junit-xml", metavar="PATH", default=None,
                   help="also write JUnit XML to PATH (checked before the evaluation; an existing file is replaced "
                   "only if it is a robustclip JUnit report, or with --force)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --junit-xml file of another kind")
    add_quiet(p)
    add_model(p)
    p.add_argument("--device", default="auto",
                   help="auto (default: cuda when a GPU is present, else cpu), cpu, cuda or cuda:N: "
                   "where the model and attacks run")
    add_data_dir(p)


def run(args: argparse.Namespace) -> int:
    """Evaluate, compare with the baseline, print the verdict; exit 1 on a regression."""
    import contextlib

    from ..core import files as _io
    from ..core.inputs import command_inputs
    from ..core.outputs import guard_output
    from ..data.datasets import dataset_folders
    from ..gate.check import run_check
    from ..gate.output import junit_xml

    inputs = command_inputs(*args.checkpoint, args.suite, args.data, args.baseline, model=args.model,
                            folders=dataset_folders(args.data_dir))
    if args.junit_xml:  # checked before the evaluation: a bad path fails first, and never replaces an input
        guard_output(args.junit_xml, inputs=inputs, force=args.force, what="--junit-xml", kind="junit")
    # with --json, stdout holds the JSON only: whatever the user's model code prints goes to stderr
    quiet_stdout = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with quiet_stdout:
        code, rows, info = run_check(args.checkpoint, suite=args.suite, baseline=args.baseline,
                                     tolerance=args.tolerance, lip_tolerance=args.lip_tolerance, n=args.n,
                                     update=args.update_baseline,
                                     mode=args.mode, lipschitz=args.lipschitz, data_dir=args.data_dir,
                                     progress=not (args.json or args.quiet),
                                     fail_on_suspicious=args.fail_on_suspicious,
                                     model=args.model, dataset=args.dataset, data_file=args.data,
                                     device=args.device)
    for f in info.get("flags", []):
        print(f"WARNING {f}", file=sys.stderr)
    if args.update_baseline:
        if args.json:
            print(json.dumps({"format": "robustclip-check", "format_version": 1, "status": "baseline-written",
                              "exit_code": 0, **info}, indent=2, default=str))
        else:
            print(f"wrote {info['mode']} baseline {info['baseline_written']} ({info['suite']}, n={info['n']}, "
                  f"{len(args.checkpoint)} checkpoint{'s' * (len(args.checkpoint) > 1)})")
        return 0
    if args.junit_xml:
        _io.write_text(args.junit_xml, junit_xml(rows, name=Path(args.checkpoint[0]).stem, seconds=info["seconds"],
                                                 fail_on_suspicious=args.fail_on_suspicious))
    for note in info.get("notes", []):
        print(f"NOTE {note}", file=sys.stderr)
    for r in rows:
        if r.suspicious:
            print(f"SUSPICIOUS {r.describe()}", file=sys.stderr)
    from . import StdoutLost

    try:
        _print_verdict(args, code, rows, info)
    except StdoutLost as exc:  # stdout on a full device: the verdict's exit status stands
        exc.code = code
        raise
    return code


def _print_verdict(args: argparse.Namespace, code: int, rows: list[Any], info: dict[str, Any]) -> None:
    from ..gate.output import format_table, report_json

    bad = [r.metric for r in rows if r.regressed]
    odd = [r.metric for r in rows if r.suspicious]
    verdict = f"REGRESSED: {', '.join(bad)}" if bad else "OK: nothing regressed"
    if odd:
        verdict += f" (SUSPICIOUS gains: {', '.join(odd)})"
    if args.json:
        print(json.dumps(report_json(code, rows, info), indent=2, default=str))
    elif args.quiet:
        print(verdict)
    else:
        print(f"robustclip check {args.checkpoint[0]} against {args.baseline} ({info['mode']} baseline, "
              f"{info['suite']}, n={info['n']}, tolerance {args.tolerance:g}, Lipschitz {args.lipschitz})")
        print("accuracies in % (--json, the baseline and the Python API hold fractions in [0, 1])")
        print(format_table(rows))
        print(info["detectable"])
        print(f"\n{verdict}")
    sys.stdout.flush()  # a full device fails here, inside the caller's guard
