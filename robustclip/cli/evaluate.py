"""``robustclip evaluate``: evaluate saved checkpoints under an attack suite and write the result tables."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import RobustclipError
from .common import (
    add_command,
    add_data_dir,
    add_force,
    add_lipschitz,
    add_model,
    add_quiet,
    add_verbose,
    console_table,
    positive_int,
)


def register(sub: Any) -> None:
    """Add the ``evaluate`` subcommand."""
    p = add_command(sub, "evaluate", run, help="evaluate checkpoints under an attack suite",
                    description="Evaluate saved checkpoints: clean, noise and attack accuracies per ε, the per-sample "
                    "worst case, certified accuracy, robust accuracy per class, Lipschitz bounds and sanity flags. "
                    "Prints accuracies in percent, one row per ε (--verbose: every attack); writes every attack to "
                    "DIR/results.csv, DIR/results.json, DIR/lipschitz.json (accuracies there are fractions in "
                    "[0, 1]) and DIR/samples.csv (one row per test sample, norm and ε: pandas.read_csv reads it).",
                    examples="  robustclip evaluate runs/clip.safetensors --suite paper-mnist --out runs/eval\n"
                             "  robustclip evaluate a.safetensors b.safetensors --suite ci-quick --n 500 "
                             "--out runs/cmp\n"
                             "  robustclip evaluate my_cnn.pt --model mypkg.nets:small_cnn --dataset mnist "
                             "--suite ci-quick --out runs/mine\n"
                             "  robustclip evaluate tab.pt --model mynets:tab_mlp --data tab.npz --suite ci-quick "
                             "--out runs/tab --save-adversarial runs/tab-adv.safetensors\n")
    p.add_argument("checkpoints", nargs="+", metavar="CKPT")
    p.add_argument("--suite", default="demo", help="suite TOML path, a suite name (e.g. ci-quick), or 'demo'")
    p.add_argument("--n", type=positive_int, default=None, help="test samples (default: the suite's n, else all)")
    p.add_argument("--batch-size", type=positive_int, default=None)
    p.add_argument("--seed", type=int, default=None, help="attack seed (default: the suite's)")
    p.add_argument("--out", required=True, metavar="DIR")
    add_force(p, "results.csv, results.json, lipschitz.json and samples.csv in DIR (and --save-adversarial's file)")
    p.add_argument("--save-adversarial", metavar="FILE.safetensors", default=None,
                   help="store the adversarial example that first broke each sample (per norm), with its attack, ε "
                   "and sample index, in a safetensors file (one checkpoint at a time)")
    add_model(p)
    p.add_argument("--device", default="auto",
                   help="auto (default: cuda when a GPU is present, else cpu), cpu, cuda or cuda:N: "
                   "where the model and attacks run")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="keep each finished attack in DIR and reuse it when the same evaluation runs again (same "
                   "suite, checkpoint, images, device, torch and torchattacks): an interrupted evaluation resumes")
    p.add_argument("--attack-certified", action="store_true",
                   help="attack samples a certificate already proves robust with every attack too (suites such as "
                   "certify-l2 let their costliest attack, APGD-T, skip them: a sound certificate means no attack "
                   "can break them, and the earlier attacks still check each certificate)")
    add_lipschitz(p, "no lower-bound ascent; the upper bound and certificates remain",
                  "default: the ascent budget, then a longer Jacobian ascent and, for fully connected nets, ECLipsE")
    add_quiet(p)
    add_verbose(p)
    add_data_dir(p)


OUTPUTS = ("results.csv", "results.json", "lipschitz.json", "samples.csv")
MAX_CLASS_ROWS = 20
"""Most classes printed in the console's per-class table (CIFAR-100's 100 stay in results.json)."""
FULL_TEST = 10_000
"""Test images of MNIST, Fashion-MNIST and CIFAR: results on fewer are not comparable with RobustBench's."""


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
    out, adv_path, suite = _checked(args)  # every input and output first: a bad one fails before any work
    runs = [_evaluate_one(args, c, suite, adv_path) for c in args.checkpoints]
    for run_, name in zip(runs, distinct_names([r.name for r in runs], list(args.checkpoints)), strict=True):
        run_.rename(name)  # distinct models keep distinct rows
    frame = _write(out, suite, runs)
    _report(args, frame, suite, runs, out, adv_path)
    return 0


def _checked(args: argparse.Namespace) -> tuple[Path, Path | None, Any]:
    """Check every input and output path and number before any work: ``(--out folder, --save-adversarial file or
    None, the suite)``; raises :class:`RobustclipError` on the first bad one."""
    from ..attacks.suites import MAX_BATCH, MAX_SAMPLES, load_suite
    from ..checkpoints.format import MAX_FILE_BYTES
    from ..core import validate
    from ..core.devices import resolve_device
    from ..core.inputs import command_inputs
    from ..core.outputs import guard_output_dir
    from ..data.datasets import dataset_folders
    from ..errors import CheckpointError

    inputs = command_inputs(*args.checkpoints, args.suite, args.data, model=args.model,
                            folders=dataset_folders(args.data_dir))
    if args.cache is not None:  # the cache's own files are replaced as attacks finish: a folder, never a file
        guard_output_dir(args.cache, (), inputs=inputs, force=True, what="--cache")
        inputs = [*inputs, *command_inputs(cache=args.cache)]
    out = guard_output_dir(args.out, OUTPUTS, inputs=inputs, force=args.force)
    if args.n is not None:
        validate.number(args.n, "--n", integer=True, lo=1, hi=MAX_SAMPLES)
    if args.batch_size is not None:
        validate.number(args.batch_size, "--batch-size", integer=True, lo=1, hi=MAX_BATCH)
    if args.seed is not None:
        validate.seed(args.seed, "--seed")
    adv_path = None
    if args.save_adversarial is not None:
        if len(args.checkpoints) != 1:
            raise RobustclipError("--save-adversarial takes one checkpoint at a time",
                                  "evaluate each checkpoint in its own run")
        if not str(args.save_adversarial).endswith(".safetensors"):
            raise RobustclipError(f"--save-adversarial {args.save_adversarial}: the file is written as safetensors",
                                  "name it FILE.safetensors")
        # a local check (folder exists and is writable; no file there unless --force)
        adv_path = validate.output_file(args.save_adversarial, "--save-adversarial", force=args.force,
                                        inputs=tuple(inputs))
        if adv_path.resolve().parent == out.resolve() and adv_path.name in OUTPUTS:
            raise RobustclipError(f"--save-adversarial {adv_path} would overwrite an output of --out",
                                  "pick another file name")
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
    return out, adv_path, suite


@dataclass
class _Run:
    """What one checkpoint's evaluation contributes to the output files and the console."""

    name: str
    frame: Any
    lipschitz: dict[str, Any]
    meta: dict[str, Any]
    flags: list[str]
    samples: Any
    per_class: list[dict[str, Any]]

    def rename(self, name: str) -> None:
        self.name = name
        self.frame = self.frame.assign(model=name)
        self.samples = self.samples.assign(model=name)
        self.lipschitz["model"] = name
        self.meta["model"] = name


def _evaluate_one(args: argparse.Namespace, checkpoint: str, suite: Any, adv_path: Path | None) -> _Run:
    """Evaluate one checkpoint (and store its adversarial examples when ``adv_path`` is given)."""
    from ..evaluation.pipeline import evaluate_checkpoint

    ev = evaluate_checkpoint(checkpoint, suite=suite, data_dir=args.data_dir, n=args.n, batch_size=args.batch_size,
                             seed=args.seed, progress=not args.quiet, model=args.model,
                             dataset=args.dataset, data_file=args.data, device=args.device,
                             keep_adversarial=adv_path is not None, cache_dir=args.cache,
                             lipschitz=args.lipschitz, attack_certified=args.attack_certified)
    res = ev.result
    assert res is not None and res.samples is not None
    meta = {**res.meta, "flags": res.flags, "seconds": res.seconds}
    if adv_path is not None:
        from ..evaluation.samples import save_adversarial
        saved = save_adversarial(adv_path, res.adversarial, sample_shape=tuple(res.meta.get("sample_shape", ())),
                                 model=ev.name, suite=suite.name)
        meta["adversarial_file"] = {"path": str(adv_path), "examples": saved}
    return _Run(name=ev.name, frame=res.frame, lipschitz=ev.lipschitz_dict(), meta=meta, flags=list(res.flags),
                samples=res.samples, per_class=res.per_class)


def _write(out: Path, suite: Any, runs: list[_Run]) -> Any:
    """Write results.csv, results.json, lipschitz.json and samples.csv into ``out``; the joint results frame."""
    import pandas as pd

    from ..core import files as _io
    from ..evaluation.folders import FORMAT, FORMAT_VERSION  # what robustclip compare and report read back

    frame = pd.concat([r.frame for r in runs], ignore_index=True)
    samples = pd.concat([r.samples for r in runs], ignore_index=True)
    samples = samples[["model", *[c for c in samples.columns if c != "model"]]]
    results = {"format": FORMAT, "format_version": FORMAT_VERSION, "suite": suite.name, "suite_file": suite.path,
               "suite_config": suite.raw, "versions": _io.versions(), "runs": [r.meta for r in runs],
               "results": frame.to_dict(orient="records")}
    # one set: a full disk leaves the previous evaluation whole, never half of each
    _io.write_files(out, {"results.csv": frame.to_csv(index=False),
                          "results.json": _io.dumps_json(results, indent=2) + "\n",
                          "lipschitz.json": _io.dumps_json([r.lipschitz for r in runs], indent=2) + "\n",
                          "samples.csv": samples.to_csv(index=False)})
    return frame


def _report(args: argparse.Namespace, frame: Any, suite: Any, runs: list[_Run], out: Path,
            adv_path: Path | None) -> None:
    """The console table, the sample-size note, per-class tables, warnings (stderr) and the files written."""
    from ..evaluation.samples import per_class_table

    print(console_table(frame, [r.lipschitz for r in runs], verbose=args.verbose))
    print(sample_size_note(frame, suite.headline, full_test=None if args.data else FULL_TEST))
    for r in runs:
        if len(r.per_class) > MAX_CLASS_ROWS:
            print(f"\nper class ({r.name}): {len(r.per_class)} classes, in results.json (runs[].per_class)")
        elif len(r.per_class) > 1:
            print(f"\nper class ({r.name}):\n{per_class_table(r.per_class, suite.headline)}")
    for r in runs:
        for f in r.flags:
            print(f"WARNING {r.name}: {f}", file=sys.stderr)
    print(f"wrote {out / 'results.csv'}, {out / 'results.json'}, {out / 'lipschitz.json'}, {out / 'samples.csv'}"
          + (f", {adv_path}" if adv_path is not None else ""))


def sample_size_note(frame: Any, headline: tuple[str, float] | None, *, full_test: int | None = FULL_TEST) -> str:
    """How many test samples each model was evaluated on, with the 95% Wilson interval of its headline worst case;
    below ``full_test`` (the built-in test split's size; None for a user's own data, which has no standard size)
    it says the numbers are not comparable with results on the whole test set."""
    lines = []
    for model, f in frame.groupby("model", sort=False):
        n = int(f["n"].iloc[0])
        row = f[(f.attack == "worst_case") & (f.norm == headline[0]) & (f.eps == headline[1])] if headline else f[:0]
        row = row if len(row) else f[f.attack == "clean"]
        r = row.iloc[0]
        what = "clean" if r.attack == "clean" else f"worst case {r.norm} ε={r.eps:g}"
        text = (f"{model}: n = {n} samples; {what} {100 * r.accuracy:.1f}% "
                f"(95% Wilson interval {100 * r.ci_low:.1f}-{100 * r.ci_high:.1f}%)")
        if full_test is not None and n < full_test:
            text += f"; fewer than the {full_test:,} test images, so not comparable with full-test-set results"
        lines.append(text)
    return "\n".join(lines)
