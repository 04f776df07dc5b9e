"""Fill the figures that README.md and docs/*.md show from the generated files under reports/ and benchmarks/.

No number in the README or the docs is typed by hand: each table sits between two markers,

    <!-- BEGIN generated: NAME -->
    ...
    <!-- END generated: NAME -->

and this script rewrites what lies between them from the CSV files that ``robustclip paper`` (reports/paper/) and
the benchmarks (benchmarks/results/) write. Run it after regenerating a report::

    python docs/sync_figures.py            # rewrite the tables in place
    python docs/sync_figures.py --check    # exit 1, naming the file, when a table is out of date (CI runs this)

It needs only the standard library, so it runs in the docs environment as well as in the project's.
"""

from __future__ import annotations

import argparse
import csv
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
    """Every MNIST setting of the paper sweep: mean ± sample std over seeds, 95% t-interval (reports/paper/table.csv)."""
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
    m = re.search(r"^## Verdict\n(.*?)(?=^## )", text, re.S | re.M)
    if m is None:
        raise SystemExit("sync_figures: reports/paper/README.md has no '## Verdict' section -- regenerate the report")
    return m.group(1).strip() + "\n"


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
                                            "sandwich": sandwich}


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
