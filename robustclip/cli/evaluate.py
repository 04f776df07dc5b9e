"""``robustclip evaluate``: evaluate saved checkpoints under an attack suite and write the result tables."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import RobustclipError
from .common import add_command, add_data_dir, add_force, add_model, add_quiet, console_table, positive_int


def register(sub: Any) -> None:
    """Add the ``evaluate`` subcommand."""
    p = add_command(sub, "evaluate", run, help="evaluate checkpoints under an attack suite",
                    description="Evaluate saved checkpoints: clean, noise and attack accuracies per ε, the per-sample "
                    "worst case, certified accuracy, Lipschitz bounds and sanity flags. Writes DIR/results.csv, "
                    "DIR/results.json and DIR/lipschitz.json.",
                    examples="  robustclip evaluate runs/clip.safetensors --suite paper-mnist --out runs/eval\n"
                             "  robustclip evaluate a.safetensors b.safetensors --suite ci-quick --n 500 "
                             "--out runs/cmp\n"
                             "  robustclip evaluate my_cnn.pt --model mypkg.nets:small_cnn --dataset mnist "
                             "--suite ci-quick --out runs/mine\n")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT")
    p.add_argument("--suite", default="demo", help="suite TOML path, a suite name (e.g. ci-quick), or 'demo'")
    p.add_argument("--n", type=positive_int, default=None, help="test samples (default: the suite's n, else all)")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--seed", type=int, default=None, help="attack seed (default: the suite's)")
    p.add_argument("--out", required=True, metavar="DIR")
    add_force(p, "results.csv, results.json and lipschitz.json in DIR")
    add_model(p)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N: where the model and attacks run")
    add_quiet(p)
    add_data_dir(p)


OUTPUTS = ("results.csv", "results.json", "lipschitz.json")


def distinct_names(names: list[str], paths: list[str]) -> list[str]:
    """``names`` with repeats told apart by the checkpoints' folders (``a/clip``, ``b/clip``), else by ``#i``.

    Two models must never share a name: results tables group by it, and would average them into one row.
    """
    out = list(names)
    for attempt in range(2):
        counts: dict[str, int] = {}
        for n in out:
            counts[n] = counts.get(n, 0) + 1
        if all(v == 1 for v in counts.values()):
            return out
        for i, n in enumerate(out):
            if counts[n] > 1:
                parent = Path(paths[i]).resolve().parent.name
                out[i] = f"{parent}/{names[i]}" if attempt == 0 else f"{out[i]}#{i + 1}"
    return out


def run(args: argparse.Namespace) -> int:
    """Evaluate every checkpoint, write results.csv, results.json and lipschitz.json, print a table."""
    import pandas as pd

    from .. import _io, validate
    from ..attacks import MAX_BATCH, MAX_SAMPLES, load_suite
    from ..checkpoints import MAX_FILE_BYTES
    from ..errors import CheckpointError
    from ..pipeline import evaluate_checkpoint, resolve_device

    # every input and the output are checked before any work: a bad one fails first, not after the evaluation
    out = validate.output_dir(args.out, OUTPUTS, "--out", force=args.force)
    if args.n is not None:
        validate.number(args.n, "--n", integer=True, lo=1, hi=MAX_SAMPLES)
    if args.batch_size is not None:
        validate.number(args.batch_size, "--batch-size", integer=True, lo=1, hi=MAX_BATCH)
    if args.seed is not None:
        validate.seed(args.seed, "--seed")
    suite = load_suite(args.suite)
    suite.check_budget(args.n)
    resolve_device(args.device)  # fail before any work on an unavailable device
    seen: set[Path] = set()
    for c in args.checkpoints:
        validate.regular_file(c, "checkpoint", max_bytes=MAX_FILE_BYTES, error=CheckpointError)
        key = Path(c).resolve()
        if key in seen:
            raise RobustclipError(f"checkpoint {c} is given twice", "list each checkpoint once")
        seen.add(key)
    frames, lips, metas, flags = [], [], [], []
    names: list[str] = []
    model_flags: list[list[str]] = []
    for c in args.checkpoints:
        ev = evaluate_checkpoint(c, suite=suite, data_dir=args.data_dir, n=args.n, batch_size=args.batch_size,
                                 seed=args.seed, progress=not args.quiet, model=args.model,
                                 dataset=args.dataset, data_file=args.data, device=args.device)
        res = ev.result
        assert res is not None
        names.append(ev.name)
        frames.append(res.frame)
        lips.append(ev.lipschitz_dict())
        metas.append({**res.meta, "flags": res.flags, "seconds": res.seconds})
        model_flags.append(res.flags)
    for i, name in enumerate(distinct_names(names, list(args.checkpoints))):  # distinct models keep distinct rows
        frames[i] = frames[i].assign(model=name)
        lips[i]["model"] = name
        metas[i]["model"] = name
        flags += [f"{name}: {f}" for f in model_flags[i]]
    frame = pd.concat(frames, ignore_index=True)
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
