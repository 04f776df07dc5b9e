"""The report of evaluate folders: checkpoints from any source, compared on one page that leads with its answer.

``render_evaluations(dirs, out)`` reads the folders ``robustclip evaluate CKPT... --out DIR`` wrote (one call, several
calls under one parent, or several folders; see :mod:`robustclip.evaluation.folders`), labels each checkpoint from
its metadata (method, λ, seed) or the user's ``--label``, and writes ``out/index.html`` (self-contained),
``out/README.md``, ``out/results.csv`` (every checkpoint × attack × ε, fractions), ``out/table.csv`` (one row per
checkpoint), ``out/comparison.csv`` (every pair at every cell, fractions) and the sweep report's figures where they
apply: accuracy against ε per model, worst case and Lipschitz bounds against λ per method, attacked against
certified accuracy. The page opens with the answer of the paired comparison (:mod:`robustclip.reports.compare`)
and its table at the headline ε.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..core import files as _io
from ..core.results import markdown_table
from ..errors import RobustclipError
from ..evaluation.folders import expand, read_all
from . import labels as _labels
from .compare import ALPHA, Comparison, cell_text, compare_evaluations, pair_table, points
from .figures import Figure, fig_curves, fig_lambda, fig_sandwich

FILES = ("index.html", "README.md", "results.csv", "table.csv", "comparison.csv")
"""What :func:`render_evaluations` writes besides figures (``FIGURE_GLOBS``)."""
FIGURE_GLOBS = ("curve_*.png", "lambda_*.png", "sandwich_*.png")
TABLES_LINE = ("Tables: [table.csv](table.csv) (one row per checkpoint), [comparison.csv](comparison.csv) (every pair "
               "at every ε), [results.csv](results.csv) (one row per checkpoint × attack × ε).")


def results_frame(result: Comparison, labels: dict[str, _labels.Label]) -> pd.DataFrame:
    """The sweep-style results table of the compared checkpoints: one row per checkpoint × attack × ε with
    ``run`` (its key), ``label``/``method``/``lam``/``seed`` (from its label), ``group`` (its setting's text, which
    figures draw as one line, averaging seeds), the Lipschitz bounds, and ``model`` (its label's text)."""
    recs: list[dict[str, Any]] = []
    for e in result.entries:
        lab = labels[e.key]
        text = result.labels[e.key]
        group = lab.text() + (text[text.rindex(" ["):] if text.endswith("]") and " [" in text else "")
        lip = e.lipschitz
        for r in e.rows:
            recs.append({"run": e.key, "label": lab.method, "dataset": e.dataset, "method": lab.method,
                         "lam": math.nan if lab.lam is None else lab.lam, "tau": math.nan,
                         "seed": -1 if lab.seed is None else lab.seed, "attack": r.get("attack"),
                         "norm": r.get("norm"), "eps": float(r.get("eps") or 0.0), "accuracy": r.get("accuracy"),
                         "n": r.get("n"), "ci_low": r.get("ci_low"), "ci_high": r.get("ci_high"),
                         "lip_lower": lip.get("lower"), "lip_upper": lip.get("upper"), "lip_exact": math.nan,
                         "group": group, "model": text, "suite": result.groups.get(e.key, (e.suite, ""))[0],
                         "checkpoint": e.checkpoint})
    df = pd.DataFrame(recs)
    for c in ("accuracy", "ci_low", "ci_high", "lip_lower", "lip_upper"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    if len(set(zip(df.dataset, df.suite))) > 1:  # figures group by experiment: one per suite and dataset
        df["experiment"] = [_slug(f"{d}-{s}") for d, s in zip(df.dataset, df.suite)]
    return df


def _slug(text: str) -> str:
    """``text`` as a safe part of a file name (figures are named after their experiment)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")[:60] or "x"


def _checkpoint_table(result: Comparison, df: pd.DataFrame) -> pd.DataFrame:
    """One row per checkpoint: label, file, folder, n, clean and headline worst case (fractions), bounds."""
    recs = []
    for e in result.entries:
        head = result.headline_of(e.key) or e.headline
        mine = df[df.run == e.key]
        wc = mine[(mine.attack == "worst_case") & (mine.norm == (head or ("", 0))[0])
                  & ((mine.eps - (head or ("", 0.0))[1]).abs() < 1e-9)]
        recs.append({"checkpoint": result.labels[e.key], "file": e.checkpoint or e.name, "folder": str(e.folder),
                     "suite": result.groups.get(e.key, (e.suite, ""))[0], "dataset": e.dataset, "n": e.n,
                     "clean": e.accuracy(("clean", 0.0)), "headline": cell_text(head) if head else "",
                     "worst_case": float(wc.accuracy.iloc[0]) if len(wc) else math.nan,
                     "worst_case_ci_low": float(wc.ci_low.iloc[0]) if len(wc) else math.nan,
                     "worst_case_ci_high": float(wc.ci_high.iloc[0]) if len(wc) else math.nan,
                     "lip_lower": e.lipschitz.get("lower"), "lip_upper": e.lipschitz.get("upper"),
                     "images_sha256": e.images, "attack_seed": e.attack_seed})
    return pd.DataFrame(recs)


def _checkpoints_md(table: pd.DataFrame) -> str:
    def cell(r: pd.Series, c: str) -> str:
        v = r[c]
        if c in ("clean", "worst case"):
            return "" if pd.isna(v) else points(float(v))
        if c == "95% interval":
            return ("" if pd.isna(r["worst_case_ci_low"]) else
                    f"{points(r['worst_case_ci_low'])}–{points(r['worst_case_ci_high'])}")
        if c.startswith("Lipschitz"):
            return "" if v is None or pd.isna(v) else f"{float(v):.3g}"
        return str(v)

    t = table.rename(columns={"worst_case": "worst case", "lip_lower": "Lipschitz lower",
                              "lip_upper": "Lipschitz upper"})
    t["95% interval"] = ""
    cols = ["checkpoint", "file", "n", "clean", "headline", "worst case", "95% interval", "Lipschitz lower",
            "Lipschitz upper"]
    return ("Accuracies in % (the 95% Wilson interval of the worst case beside it); Lipschitz bounds for the L2 norm."
            "\n\n" + markdown_table(t, cols, cell))


def _pairs_md(items: Any, what: str) -> str:
    t = pair_table(items)
    return what + "\n\n" + markdown_table(t, list(t.columns), lambda r, c: str(r[c]))


def _answer_md(result: Comparison) -> str:
    lines = [f"- **{a}**" for a in result.answers()]
    how = (f"Each pair of checkpoints is compared on the same test images: the exact McNemar test on the samples "
           f"only one of them gets right, and Newcombe's paired 95% interval of the difference (points); "
           f"p-values are Holm-adjusted over the pairs at each ε, and a difference is shown when that p is below "
           f"{result.alpha:g}. Pairs evaluated on different images are compared unpaired (Fisher's exact test, "
           "Newcombe's unpaired interval) and say so; settings with several seeds are compared over seeds with "
           "Welch's t-interval.")
    out = "\n".join(lines) + "\n\n" + how
    if result.notes:
        out += "\n\n" + "\n".join(f"- {n}" for n in result.notes)
    return out


def _headline_pairs_md(result: Comparison) -> str:
    parts = []
    for (suite, dataset), cell in result.headlines.items():
        where = f" (suite {suite}, {dataset})" if len(result.headlines) > 1 else ""
        sets = [s for s in result.settings if (s.suite, s.dataset, s.cell) == (suite, dataset, cell)]
        if sets:
            parts.append(_pairs_md(sets, f"Settings over seeds at {cell_text(cell)}{where}, accuracies in %:"))
        parts.append(_pairs_md(result.at(cell) if len(result.headlines) == 1 else
                               [p for p in result.pairs if (p.suite, p.dataset, p.cell) == (suite, dataset, cell)],
                               f"Pairs of checkpoints at {cell_text(cell)}{where}, accuracies in %:"))
    return "\n\n".join(parts)


def comparison_frame(result: Comparison) -> pd.DataFrame:
    """Every pair at every cell (and every setting pair), as ``comparison.csv`` holds it (fractions)."""
    rows = [{k: v for k, v in p.to_dict().items() if k != "sentence"} for p in result.pairs]
    rows += [{**{k: v for k, v in s.to_dict().items() if k not in ("sentence", "seeds_a", "seeds_b")},
              "a_label": s.a, "b_label": s.b, "n_a": len(s.seeds_a), "n_b": len(s.seeds_b)} for s in result.settings]
    return pd.DataFrame(rows)


def render_evaluations(eval_dirs: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str], *,
                       labels: list[str] | None = None, group: bool = False, title: str | None = None,
                       alpha: float = ALPHA) -> Path:
    """Render the report of the evaluate folders ``eval_dirs`` into folder ``out``; returns ``out/index.html``.

    ``labels``: ``CKPT=METHOD:λ[:SEED]`` overriding the checkpoints' metadata; ``group``: compare within each suite
    and dataset (else mixed ones are refused). Every input is read and compared before anything is written.
    """
    from . import pages

    folders = expand(list(eval_dirs))
    entries = read_all(list(folders))  # unique keys across folders
    result = compare_evaluations(entries, labels=labels, group=group, alpha=alpha)
    lab = _labels.assign(entries, labels)
    df = results_frame(result, lab)
    table = _checkpoint_table(result, df)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _io.write_text(out / "results.csv", df.to_csv(index=False))
    _io.write_text(out / "table.csv", table.to_csv(index=False))
    _io.write_text(out / "comparison.csv", comparison_frame(result).to_csv(index=False))
    figs: list[Figure] = fig_curves(df, out)
    exp = "experiment" if "experiment" in df else "dataset"
    for _, sub in df.groupby(exp, sort=False):  # the λ figure at each suite's own headline
        first = sub.run.iloc[0]
        figs += fig_lambda(sub, result.headline_of(first), out)
    for norm in ("L2", "Linf"):
        try:
            figs += fig_sandwich(df, out, norm=norm)
        except RobustclipError:  # no certified rows at this norm: no sandwich
            pass
    per_run = {result.labels[e.key]: [str(f) for f in e.meta.get("flags") or []] for e in entries}
    per_run = {k: v for k, v in per_run.items() if v}
    box = pages.warning_box(per_run, len(entries))
    title = title or f"robustclip report: {', '.join(f.name for f in folders)[:80]}"
    prov = {"evaluation folders": ", ".join(str(f) for f in folders),
            "report commit": _io.git_commit() or pages.NOT_GIT,
            "versions": ", ".join(f"{k} {v}" for k, v in _io.versions().items()),
            "regenerate": "robustclip report " + " ".join(str(f) for f in folders)
            + "".join(f" --label {x}" for x in labels or []) + (" --group" if group else "") + f" --out {out}"}
    lead = [("Answer", _answer_md(result)), ("Paired comparison", _headline_pairs_md(result)),
            ("Checkpoints", _checkpoints_md(table))]
    cells = sorted({p.cell for p in result.pairs}, key=lambda c: (c != ("clean", 0.0), c))
    tables = [(f"Every pair at {cell_text(c)}", _pairs_md([p for p in result.pairs if p.cell == c],
                                                          "Accuracies in %, differences in points:"))
              for c in cells]
    tail = [("Warnings", "\n".join(f"- {k}: {f}" for k, fs in per_run.items() for f in fs))] if per_run else []
    lede = figs[0] if figs else None  # accuracy against ε per model, beside the answer
    pages.write_page(out, pages.Page(title, "", box, lead, lede, [], figs[1:], tables, tail, prov,
                                     tables_line=TABLES_LINE))
    return out / "index.html"
