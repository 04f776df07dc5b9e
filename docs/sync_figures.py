"""Fill the figures that README.md and docs/*.md show from the generated files under reports/ and benchmarks/.

No measured figure in the README or the docs is typed by hand. A benchmark's output file is included whole with a
snippet (``--8<-- "benchmarks/results/NAME.txt"``; the benchmarks write these with ``--out``). Tables and sentences
built from a report sit between two markers,

    <!-- BEGIN generated: NAME -->
    ...
    <!-- END generated: NAME -->

and this script rewrites what lies between them from the files that ``robustclip paper`` (reports/paper/: CSV,
README.md, regeneration.json) and the benchmarks (benchmarks/results/) write. tests/test_docs.py fails on a figure
typed outside both. Run it after regenerating a report::

    python docs/sync_figures.py            # rewrite the tables in place
    python docs/sync_figures.py --check    # exit 1, naming the file, when a table is out of date (CI runs this)

It needs only the standard library, so it runs in the docs environment as well as in the project's.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "reports" / "paper"
TARGETS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARK = re.compile(r"(<!-- BEGIN generated: (?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)(<!-- END generated: (?P=name) -->)",
                  re.S)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def _pct(v: str | float, digits: int = 1) -> str:
    x = float(v)
    return "" if math.isnan(x) else f"{100 * x:.{digits}f}"


def _wilson(p: float, n: int, z: float = 1.959964) -> tuple[float, float]:
    """The 95% Wilson score interval of a fraction ``p`` observed on ``n`` samples."""
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return mid - half, mid + half


LABELS = {"none": "no regularisation", "weight": "weight regularisation", "clip": "CLIP",
          "clip-at3": "hybrid: PGD-AT 3 steps + CLIP", "trades": "TRADES, 3 steps",
          "pgd-at1": "PGD adversarial training, 1 step", "pgd-at3": "PGD adversarial training, 3 steps",
          "pgd-at7": "PGD adversarial training, 7 steps"}


def paper_mnist() -> str:
    """Every MNIST setting of the paper sweep: mean ± sample std, 95% t-interval (reports/paper/table.csv)."""
    rows = [r for r in _rows(PAPER / "table.csv") if r["dataset"] == "mnist"]
    rows.sort(key=lambda r: -float(r["worst_case"]))
    out = ["| model | setting | seeds | clean | authors' PGD-L2 | worst case | 95% CI | training s |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ci = f"[{_pct(r['worst_case_ci_low'])}, {_pct(r['worst_case_ci_high'])}]"
        out.append(f"| {LABELS.get(r['method'], r['method'])} | {r['lam_or_tau']} | {r['seeds']} | {_pct(r['clean'])} "
                   f"| {_pct(r['authors_pgd'])} | {_pct(r['worst_case'])} ± {_pct(r['worst_case_std'])} | {ci} "
                   f"| {float(r['train_seconds']):.0f} |")
    return "\n".join(out) + "\n"


def full_test() -> str:
    """The committed checkpoints and the chosen CLIP setting on all 10,000 MNIST test images, L2 ε = 2."""
    out = ["| model | images | clean | worst case at L2 ε = 2 | 95% interval |", "|---|---|---|---|---|"]
    for r in _rows(PAPER / "full_test_runs.csv"):
        out.append(f"| {LABELS.get(r['label'], r['label'])} {r['setting']}, mean of {r['seeds']} seeds | {r['n']} "
                   f"| {_pct(r['clean'])} | **{_pct(r['worst_case'])} ± {_pct(r['worst_case_std'])}** "
                   f"| [{_pct(r['worst_case_ci_low'])}, {_pct(r['worst_case_ci_high'])}] (t) |")
    by_model: dict[str, dict[str, dict[str, str]]] = {}
    for r in _rows(PAPER / "full_test.csv"):
        if r["attack"] in ("clean", "worst_case"):
            by_model.setdefault(r["model"], {})[r["attack"]] = r
    for model, m in by_model.items():
        w = m["worst_case"]
        lo, hi = _wilson(float(w["accuracy"]), int(w["n"]))
        out.append(f"| `{model}` | {w['n']} | {_pct(m['clean']['accuracy'])} | **{_pct(w['accuracy'])}** "
                   f"| [{_pct(lo)}, {_pct(hi)}] (Wilson) |")
    return "\n".join(out) + "\n"


def verdict() -> str:
    """The "Verdict" section of the generated paper report (reports/paper/README.md), without its heading."""
    text = (PAPER / "README.md").read_text(encoding="utf-8")
    return _section(text, "Verdict", "reports/paper/README.md").strip() + "\n"


def _section(text: str, heading: str, where: str) -> str:
    m = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if m is None:
        raise SystemExit(f"sync_figures: {where} has no '## {heading}' section -- regenerate it")
    return m.group(1)


def authors_rerun() -> str:
    """One sentence: the authors' CLIP code re-run on our machine, from "What the authors report" in
    reports/paper/README.md (which experiments/paper/experiment.py writes)."""
    where = "reports/paper/README.md"
    sec = _section((PAPER / "README.md").read_text(encoding="utf-8"), "What the authors report", where)
    run = re.search(r"re-run on our CI machine\*\* \(one seed, (\d+) epochs, ([\d.]+) s per CLIP epoch\)", sec)
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in sec.splitlines()
            if line.startswith("|") and not line.startswith("|---")]
    head = next((r for r in rows if r[0] == "model" and r[-1].startswith("worst case of")), None)
    clip = next((r for r in rows[rows.index(head):] if r[0] == "CLIP"), None) if head else None
    if run is None or head is None or clip is None:
        raise SystemExit(f"sync_figures: {where}: the re-run of the authors' code is not where it was -- "
                         "update authors_rerun() in docs/sync_figures.py")
    epochs, per_epoch = int(run[1]), float(run[2])
    attacks = re.sub(r"\(first (\d+) test\)", r"on the first \1 test images", re.sub(r"^worst case of ", "", head[-1]))
    return (f"For reference, the authors' CLIP code, re-run on our CI machine for {epochs} epochs ({per_epoch:g} s per "
            f"epoch, {epochs * per_epoch / 60:.1f} minutes), reached {clip[head.index('clean')]}% clean and "
            f"{clip[-1]}% worst case over {attacks} (one seed; `reports/paper/README.md`, \"What the authors "
            f"report\").\n")


def certified_training_curve() -> str:
    """The certified-training benchmark's curve (benchmarks/results/certified-training-curve.csv) as a table."""
    rows = _rows(ROOT / "benchmarks" / "results" / "certified-training-curve.csv")
    out = ["| epoch | training minutes | clean | certified (sound bound) | certified (power-iteration estimate) |",
           "|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['epoch']} | {float(r['train_seconds']) / 60:.1f} | {_pct(r['clean'])} "
                   f"| {_pct(r['certified_sound'])} | {_pct(r['certified_power_iteration'])} |")
    first = next((r for r in rows if float(r["certified_sound"]) >= 0.40), None)
    last = rows[-1]
    reach = ("never reached 40% certified" if first is None else
             f"first reached 40% certified at epoch {first['epoch']}, after "
             f"{float(first['train_seconds']) / 60:.1f} minutes of training")
    out.append("")
    out.append(f"All {last['epoch']} epochs took {float(last['train_seconds']) / 60:.1f} minutes (target: 30); the run "
               f"{reach}, and ended at {_pct(last['certified_sound'])}% certified.")
    return "\n".join(out) + "\n"


def paper_sweep_time() -> str:
    """One sentence: how long the last full regeneration of the paper took (reports/paper/regeneration.json)."""
    doc = json.loads((PAPER / "regeneration.json").read_text(encoding="utf-8"))
    last = doc.get("last_full")
    if not last:
        raise SystemExit("sync_figures: reports/paper/regeneration.json has no last_full -- regenerate the report")
    minutes, runs = float(last["minutes"]), int(last["runs"])
    return (f"The last full regeneration of the paper, {runs} runs, took {minutes:.1f} minutes on 2 CPU cores "
            f"({last.get('date', 'date not recorded')}; `reports/paper/regeneration.json`): about "
            f"{minutes * 60 * 2 / runs:.0f} core-seconds per run on average, the cheap regression runs included.\n")


def sandwich() -> str:
    """Every committed checkpoint's attacked worst case / certified accuracy at a few L2 ε (reports/paper/sandwich.csv,
    written by ``robustclip paper`` or ``robustclip paper --refresh sandwich``)."""
    rows = _rows(PAPER / "sandwich.csv")
    grid = [e for e in ("0.5", "1.0", "1.58", "2.0") if any(float(r["eps"]) == float(e) for r in rows)]
    acc: dict[tuple[str, str, float], str] = {}
    for r in rows:
        acc[(r["model"], r["attack"], float(r["eps"]))] = _pct(r["accuracy"])
    models = list(dict.fromkeys(r["model"] for r in rows))
    n = max(int(r["n"]) for r in rows)
    out = [f"| checkpoint (first {n:,} test images) | clean | "
           + " | ".join(f"ε = {float(e):g}" for e in grid) + " |", "|---" * (len(grid) + 2) + "|"]
    for m in models:
        cells = [f"{acc.get((m, 'worst_case', float(e)), '')} / {acc.get((m, 'certified', float(e)), '')}"
                 for e in grid]
        out.append(f"| `{m}` | {acc.get((m, 'clean', 0.0), '')} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


GENERATORS: dict[str, Callable[[], str]] = {"paper-mnist": paper_mnist, "full-test": full_test, "verdict": verdict,
                                             "authors-rerun": authors_rerun,
                                             "certified-training-curve": certified_training_curve,
                                             "paper-sweep-time": paper_sweep_time, "sandwich": sandwich}


def sync(text: str, where: str) -> str:
    """``text`` with every generated block rewritten; an unknown block name is an error naming ``where``."""
    def fill(m: re.Match[str]) -> str:
        name = m["name"]
        if name not in GENERATORS:
            raise SystemExit(f"sync_figures: {where}: unknown generated block {name!r} -- one of {sorted(GENERATORS)}")
        return m.group(1) + GENERATORS[name]() + m.group(4)
    return MARK.sub(fill, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is out of date")
    args = ap.parse_args(argv)
    stale = []
    for path in TARGETS:
        old = path.read_text(encoding="utf-8")
        new = sync(old, str(path.relative_to(ROOT)))
        if new != old:
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        print(f"sync_figures: out of date: {', '.join(stale)} -- run python docs/sync_figures.py", file=sys.stderr)
        return 1
    print(f"sync_figures: {'rewrote ' + ', '.join(stale) if stale and not args.check else 'up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
