"""``robustclip compare``: paired tests between checkpoints evaluated on the same images (reads evaluate folders)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import add_command, add_labels


def register(sub: Any) -> None:
    """Add the ``compare`` subcommand."""
    p = add_command(sub, "compare", run, help="is checkpoint A more robust than B? paired tests on evaluate folders",
                    description="Compare checkpoints evaluated by robustclip evaluate, pairwise, at every (norm, ε) "
                    "and on clean inputs, on their per-sample worst-case outcomes (samples.csv). On the same images "
                    "(equal images digests): the exact McNemar test and Newcombe's paired interval of the "
                    "difference; on different images: Fisher's exact test and Newcombe's unpaired interval, and the "
                    "output says so. Settings (method and λ) with several training seeds are also compared over "
                    "seeds with Welch's t-interval. p-values are Holm-adjusted over the pairs at each cell; a "
                    "difference is shown when the adjusted p is below 0.05. Prints the headline cell's table (in "
                    "points, i.e. percent) and the answer as a sentence; --json prints every pair at every cell "
                    "(fractions in [0, 1]). Writes no file. Labels come from each checkpoint's metadata (method, λ, "
                    "seed); --label, or a CSV file of labels (--labels), overrides them.",
                    examples="  robustclip evaluate a.safetensors b.safetensors --suite ci-quick --out runs/cmp\n"
                             "  robustclip compare runs/cmp\n"
                             "  robustclip compare runs/eval-a runs/eval-b --json > comparison.json\n"
                             "  robustclip compare runs/evals --label mine.pt=clip:0.5:0 "
                             "--label theirs.pt=weight:1e-3:0\n"
                             "  robustclip compare runs/evals --labels labels.csv\n"
                             "  robustclip compare runs/mnist runs/fashion --group --all-cells\n")
    p.add_argument("eval_dirs", nargs="+", metavar="EVAL_DIR",
                   help="the --out folder of robustclip evaluate, or a folder of such folders")
    add_labels(p, "", "; repeat for each (e.g. --label a.pt=clip:0.5:0)",
               "(default: refuse evaluations of different suites or datasets)")
    p.add_argument("--all-cells", action="store_true",
                   help="print every (norm, ε) cell and clean accuracy, not only the suite's headline")
    p.add_argument("--json", action="store_true",
                   help="print the comparison as JSON: each pair names its two checkpoints and gives p_value, "
                   "p_holm, the difference and its interval (fractions), at every cell")


def run(args: argparse.Namespace) -> int:
    """Compare the evaluations in ``args.eval_dirs`` and print the table and answer (or JSON)."""
    from ..core.files import dumps_json
    from ..reports.compare import compare
    from ..reports.labels import read_labels_csv

    labels = list(args.label) + (read_labels_csv(args.labels) if args.labels else [])
    result = compare(*args.eval_dirs, labels=labels, group=args.group)
    if args.json:
        print(dumps_json(result.to_dict(), indent=2))
        return 0
    print(render(result, all_cells=args.all_cells))
    return 0


def render(result: Any, *, all_cells: bool = False) -> str:
    """The console text of a :class:`~robustclip.reports.compare.Comparison`: the checkpoints, each cell's pairs
    (the headline's, or every cell's) two lines each, setting pairs over seeds, the answers and notes."""
    from ..reports.compare import CLEAN, cell_text

    lines = [f"{len(result.entries)} checkpoints; accuracies and differences in points (%), 95% intervals; a "
             f"difference is shown when its Holm-adjusted p < {result.alpha:g} (the Python API and --json give "
             "fractions in [0, 1])"]
    for e in result.entries:
        lines.append(f"  {result.labels[e.key]}: {e.checkpoint or e.name} ({e.folder}, suite {e.suite}, "
                     f"{e.dataset}, n = {e.n}{'' if e.attack_seed is None else f', attack seed {e.attack_seed}'})")
    for (suite, dataset), head in result.headlines.items():
        cells = sorted({p.cell for p in result.pairs if (p.suite, p.dataset) == (suite, dataset)},
                       key=lambda c: (c != CLEAN, c)) if all_cells else [head]
        for cell in cells:
            where = f", suite {suite}, {dataset}" if len(result.headlines) > 1 else ""
            lines.append(f"\n{cell_text(cell)}{' (headline)' if cell == head else ''}{where}")
            for s in result.settings:
                if (s.suite, s.dataset, s.cell) == (suite, dataset, cell):
                    lines += _two_lines(s, f"Welch t over {len(s.seeds_a)} and {len(s.seeds_b)} seeds")
            for p in result.pairs:
                if (p.suite, p.dataset, p.cell) == (suite, dataset, cell):
                    lines += _two_lines(p, p.test + ("" if p.paired else f": {p.note}"))
    answers = result.answers()
    if answers:
        lines.append("\n" + "\n".join(f"answer: {a}" for a in answers))
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


def _two_lines(it: Any, test: str) -> list[str]:
    """A pair (or setting pair) as ``A vs B`` and a line of figures."""
    from ..reports.compare import p_text, points, sides

    (na, nb), (ma, mb) = sides(it)
    verdict = "shown" if it.significant else "not shown"
    return [f"  {na} vs {nb}",
            f"      {points(ma)} vs {points(mb)}: {points(it.difference, True)} points "
            f"[{points(it.ci_low)}, {points(it.ci_high)}], p = {p_text(it.p_value)}, Holm {p_text(it.p_holm)}, "
            f"{test}: {verdict}"]
