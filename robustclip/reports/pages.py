"""Reports: tables and seaborn figures from a sweep folder, as HTML and Markdown.

``render(sweep_dir, out)`` writes ``out/index.html`` (self-contained: images
embedded), ``out/README.md`` (the same content, for GitHub), ``out/table.csv``
(one row per method and λ/τ, mean, sample std and 95% t-interval over seeds),
``out/results.csv`` (every run × attack × ε) and PNG figures. Every figure has
a one-sentence caption. The report records the commit, versions, seeds,
hyperparameters and commands.

The page opens with a box of sanity warnings naming the runs (models near
chance, training that did not converge, gradient-masking signs; see
:mod:`robustclip.evaluation.sanity`) when there are any, then leads with a compact headline
table (the main methods; constant columns are said once in its text), then the
figures, then the full tables in horizontally scrollable containers, the
hyperparameters and the provenance (the exact command that regenerates the
sweep, the commit or "not a git checkout"), with a table of contents on top.
Figures are in percent, like the tables; accuracy axes start at 0.

Statistics over seeds are the same everywhere (tables, figures, CSV): the mean,
the sample standard deviation (ddof = 1) and the 95% Student-t interval
``mean ± t(0.975, n-1) · sd / sqrt(n)`` (:func:`seed_stats`); with one seed
there is no spread, and the std and interval are empty.
"""

from __future__ import annotations

import base64
import html
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..core import files as _io
from ..core.results import markdown_table
from ..errors import RobustclipError
from .figures import (
    Figure,
    fig_curves,
    fig_frontier,
    fig_history,
    fig_lambda,
    fig_regression,
    fig_tradeoff,
)
from .tables import (
    _exp,
    _fmt_table_md,
    _group_label,
    _setting,
    ci_cell,
    headline,
    headline_rows,
    hyperparameter_table,
    load_results,
    pct_cell,
    read_eval,
    selection_column,
    summary_table,
)


def certified_radius(df: pd.DataFrame, head: tuple[str, float] | None, keys: list[tuple[str, str, str]],
                     min_acc: float = 0.10) -> float | None:
    """The ε (headline norm) at which to show certified accuracy for the (experiment, label, setting) rows ``keys``:
    the largest ε where one of them certifies at least ``min_acc`` (mean over seeds, a fraction), else the ε where
    the most is certified; None when nothing certifies anywhere."""
    if head is None or "certified" not in set(df.attack):
        return None
    c = df[(df.attack == "certified") & (df.norm == head[0])]
    c = c[[(e, lab, st) in set(keys) for e, lab, st in zip(c[_exp(c)], c["label"], c["setting"])]]
    if c.empty:
        return None
    per = c.groupby([_exp(c), "label", "setting", "eps"]).accuracy.mean().groupby("eps").max()
    if per.max() <= 0:
        return None
    good = per[per >= min_acc]
    return float(good.index.max()) if len(good) else float(per.idxmax())


def _headline_md(table: pd.DataFrame, head_txt: str, keep: list[tuple[str, str, str]] | None,
                 extra: dict[tuple[str, str, str], dict[str, str]] | None, *, df: pd.DataFrame | None = None,
                 head: tuple[str, float] | None = None) -> str:
    """The headline's text and table. Columns that say nothing are left out of the table and said once in the text:
    one experiment, one seed count, a certified accuracy that is the same in every row (e.g. 0 at a radius where
    nothing certifies; certified accuracy is then shown at a radius where something does, from ``df``)."""
    rows = headline_rows(table, keep)
    cls = rows[rows["clean"].notna()] if "clean" in rows else rows.iloc[0:0]
    rows = cls if len(cls) else rows
    extra = extra or {}
    extra_cols = list(dict.fromkeys(k for v in extra.values() for k in v))
    cells: list[dict[str, str]] = []
    for _, r in rows.iterrows():
        key = (r["dataset"], r["method"], r["setting"])
        c = {"experiment": str(r["dataset"]), "method": str(r["method"]), "setting": str(r["setting"]),
             "seeds": str(r["seeds"])}
        if "clean" in r:
            clean = r.get("clean_full") if not pd.isna(r.get("clean_full", math.nan)) else r.get("clean")
            sd = r.get("clean_full_std") if not pd.isna(r.get("clean_full", math.nan)) else r.get("clean_std")
            c["clean"] = pct_cell(clean, sd)
            c["worst case"] = pct_cell(r.get("worst_case"), r.get("worst_case_std"))
            c["worst case, 95% CI"] = ci_cell(r.get("worst_case_ci_low"), r.get("worst_case_ci_high"))
            c["certified"] = pct_cell(r.get("certified"), r.get("certified_std"))
        else:
            c["mse"] = "" if pd.isna(r.get("mse", math.nan)) else f"{r['mse']:.3g}"
            c["exact Lipschitz"] = "" if pd.isna(r.get("lip_exact", math.nan)) else f"{r['lip_exact']:.3g}"
        c["Lipschitz upper"] = "" if pd.isna(r.get("lip_upper", math.nan)) else f"{r['lip_upper']:.3g}"
        c["train s"] = "" if pd.isna(r.get("train_seconds", math.nan)) else f"{r['train_seconds']:.0f}"
        for col in extra_cols:
            c[col] = extra.get(key, {}).get(col, "")
        cells.append(c)
    cols = [k for k in cells[0] if any(c[k] for c in cells)] if cells else []
    notes: list[str] = []
    if len(cells) > 1:  # a column with one value in every row is said once, in the text
        for k, what in (("experiment", "Experiment: {}."), ("seeds", "Seeds per setting: {}.")):
            if k in cols and len({c[k] for c in cells}) == 1:
                cols.remove(k)
                notes.append(what.format(cells[0][k]))
    if "certified" in cols and {c["certified"].split(" ±")[0] for c in cells} <= {"0.0", ""}:
        cols.remove("certified")
        notes.append(f"Certified accuracy at {head_txt} is 0% in every row (nothing is proven at this radius), so "
                     "it is left out here.")
        r_eps = certified_radius(df, head, [(str(r["dataset"]), str(r["method"]), str(r["setting"]))
                                            for _, r in rows.iterrows()]) if df is not None else None
        if r_eps is not None and head is not None and r_eps != head[1]:
            alt = summary_table(df, (head[0], r_eps)) if df is not None else pd.DataFrame()
            col = f"certified, ε = {r_eps:g}"
            for c, (_, r) in zip(cells, rows.iterrows()):
                m = alt[(alt.dataset == r["dataset"]) & (alt.method == r["method"]) & (alt.setting == r["setting"])]
                c[col] = pct_cell(m["certified"].iloc[0], m.get("certified_std", pd.Series([None])).iloc[0]) \
                    if len(m) and "certified" in m else ""
            cols.insert(cols.index("worst case, 95% CI") + 1 if "worst case, 95% CI" in cols else len(cols), col)
            notes.append(f"The column \"{col}\" shows certified accuracy at {head[0]} ε = {r_eps:g}, a radius where "
                         "something is certified.")
    frame = pd.DataFrame(cells)
    if selection_column(table) == "val_worst_case":
        how = ("the setting with the highest mean worst case on validation data (each run's own held-out "
               "split, PGD then APGD-CE; never test images)")
    else:
        how = ("the setting with the highest mean worst case: a choice made on the test set, so an optimistic one, "
               "fit to compare methods")
    text = (f"Accuracies in % at {head_txt}: mean ± sample std over seeds (ddof = 1) and the 95% t-interval of the "
            f"mean worst case (empty with one seed). Per method label, plain training and {how}; every "
            "setting is in the [full tables](#full-tables) below." + "".join(" " + n for n in notes))
    return text + "\n\n" + markdown_table(frame, cols, lambda r, c: str(r[c]))


PLAIN = ("none", "plain")


def _clean(r: pd.Series) -> float:
    """A headline row's clean accuracy as the headline table shows it: on the whole test set where measured."""
    full = r.get("clean_full", math.nan)
    return float(r["clean"] if pd.isna(full) else full)


def _interval(r: pd.Series, df: pd.DataFrame, head: tuple[str, float]) -> str:
    """The 95% interval of a headline row's worst case, in %: the t-interval over seeds, or with one seed the run's
    Wilson interval (from ``df``)."""
    lo, hi = r.get("worst_case_ci_low", math.nan), r.get("worst_case_ci_high", math.nan)
    if not (pd.isna(lo) or pd.isna(hi)):
        return f"95% interval [{100 * lo:.1f}, {100 * hi:.1f}] over {r['seeds']} seeds"
    e = _exp(df)
    m = df[(df[e] == r["dataset"]) & (df["label"] == r["method"]) & (df["setting"] == r["setting"])
           & (df.attack == "worst_case") & (df.norm == head[0]) & ((df.eps - head[1]).abs() < 1e-9)]
    if len(m) == 1 and "ci_low" in m and not pd.isna(m.ci_low.iloc[0]):
        return f"95% interval [{100 * m.ci_low.iloc[0]:.1f}, {100 * m.ci_high.iloc[0]:.1f}], one seed"
    return "no interval"


def _bounds(text: str) -> tuple[float, float] | None:
    import re

    m = re.search(r"\[([-\d.]+), ([-\d.]+)\]", text)
    return (float(m.group(1)), float(m.group(2))) if m else None


def sweep_answer(table: pd.DataFrame, df: pd.DataFrame, head: tuple[str, float] | None) -> tuple[str, str | None]:
    """The answer a sweep page leads with (Markdown bullets) and the experiment of its first bullet.

    Per classification experiment (those with the most runs first), at the headline ε: the setting with the highest
    worst case among the headline's picks (each method's setting chosen on validation data where the runs have it),
    its interval, its clean accuracy and plain training's worst case, and whether their intervals overlap. Per
    regression experiment: how far each method's exact Lipschitz constant moves over its λ."""
    lines: list[tuple[int, str, str]] = []
    runs = df.groupby(_exp(df)).run.nunique().to_dict()
    rows = headline_rows(table)
    by = selection_column(table)
    chosen = "chosen on validation data" if by == "val_worst_case" else "chosen on the test set"
    for exp, t in rows.groupby("dataset", sort=False):
        if head is not None and "worst_case" in t and t["worst_case"].notna().any():
            t = t[t["worst_case"].notna()]
            others = t[~t["method"].isin(PLAIN)]
            plain = t[t["method"].isin(PLAIN)]
            if len(others):
                best = others.loc[pd.to_numeric(others[by if by in others else "worst_case"],
                                                 errors="coerce").fillna(-1).idxmax()]
                iv = _interval(best, df, head)
                txt = (f"**{exp}, {head[0]} ε = {head[1]:g}:** {best['method']} {best['setting']} is the most robust "
                       f"of the settings {chosen}: {100 * best['worst_case']:.1f}% worst case ({iv}) at "
                       f"{100 * _clean(best):.1f}% clean")
                if len(plain):
                    p = plain.iloc[0]
                    piv = _interval(p, df, head)
                    txt += f", against {100 * p['worst_case']:.1f}% for plain training ({piv})"
                    a, b = _bounds(iv), _bounds(piv)
                    if a and b:
                        txt += (": the intervals overlap, no clear difference" if a[0] <= b[1] and b[0] <= a[1]
                                else "; the intervals do not overlap")
                lines.append((runs.get(exp, 0), str(exp), txt + "."))
            elif len(plain):
                p = plain.iloc[0]
                lines.append((runs.get(exp, 0), str(exp),
                              f"**{exp}, {head[0]} ε = {head[1]:g}:** plain training only: "
                              f"{100 * p['worst_case']:.1f}% worst case at {100 * _clean(p):.1f}% clean."))
            continue
        full = table[table["dataset"] == exp]
        if "lip_exact" not in full:
            continue
        parts = []
        for method, g in full.groupby("method", sort=False):
            g = g[g["lip_exact"].notna()]
            if "final_lam" in g:
                g = g.sort_values("final_lam")
            if len(g) >= 2:
                parts.append(f"with {method}, {g['lip_exact'].iloc[0]:.3g} at {g['setting'].iloc[0]} to "
                             f"{g['lip_exact'].iloc[-1]:.3g} at {g['setting'].iloc[-1]}")
        if parts:
            lines.append((-1, str(exp), f"**{exp}:** the fitted function's exact Lipschitz constant goes "
                          + "; ".join(parts) + "."))
    lines.sort(key=lambda x: -x[0])  # stable: the experiment with the most runs first, regressions last
    if not lines:
        return "No result to compare: see the tables below.", None
    return "\n".join(f"- {t}" for _, _, t in lines), lines[0][1]


def _lede_figure(frontier: list[Figure], figs: list[Figure], exp: str | None) -> Figure | None:
    """The figure shown beside the answer: the frontier of ``exp``, else the first frontier, else the first figure."""
    for f in frontier:
        if exp is not None and f.file == f"frontier_{exp}.png":
            return f
    return frontier[0] if frontier else (figs[0] if figs else None)


def render(sweep_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, title: str | None = None,
           intro: str = "", extra_sections: list[tuple[str, str]] | None = None,
           lead_sections: list[tuple[str, str]] | None = None,
           headline_keep: list[tuple[str, str, str]] | None = None,
           headline_extra: dict[tuple[str, str, str], dict[str, str]] | None = None,
           extra_figs: list[Figure] | None = None) -> Path:
    """Render the report of ``sweep_dir`` into folder ``out``; returns ``out/index.html``.

    Page order: title, intro, contents, the headline (a compact table of the main methods, then
    ``lead_sections``), the figures, the full tables (the summary, then ``extra_sections``), the hyperparameters,
    warnings and provenance. ``headline_keep`` adds (experiment, label, setting) rows to the headline table and
    ``headline_extra`` adds columns to its rows (e.g. the authors' published figures beside ours). ``extra_figs``:
    figures already written into ``out`` (e.g. the paper's sandwich figure), placed after the sweep's own.
    """
    sweep_dir, out = Path(sweep_dir), Path(out)
    df = load_results(sweep_dir)
    from ..sweeps.records import read_info

    sweep = read_info(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    head = headline(df)
    table = summary_table(df, head)
    _io.write_text(out / "results.csv", df.drop(columns=["group"]).to_csv(index=False))
    _io.write_text(out / "table.csv", table.to_csv(index=False))
    from ..sweeps.records import finished_runs

    histories, trains = {}, {}
    for d in finished_runs(sweep_dir):
        ev = read_eval(d / "eval.json")
        histories[d.name] = ev.get("history") or []
        trains[d.name] = ev.get("train") or {}
    per_run = run_warnings(sweep_dir)
    flags = [f"{run}: {f}" for run, ws in per_run.items() for f in ws]
    box = warning_box(per_run, df.run.nunique())
    frontier = fig_frontier(df, head, out)  # shown in the headline, not among the figures
    figs = (fig_curves(df, out) + fig_lambda(df, head, out) + fig_tradeoff(df, head, out)
            + fig_history(histories, df, out) + fig_regression(sweep_dir, df, out) + list(extra_figs or []))
    title = title or f"robustclip report: {sweep['sweep'].get('name', sweep_dir.name)}"
    seeds = sorted(df.seed.unique().tolist())
    prov = {"sweep folder": str(sweep_dir), "commit": sweep.get("commit") or NOT_GIT,
            "report commit": _io.git_commit() or NOT_GIT, "seeds": ", ".join(map(str, seeds)),
            "versions": ", ".join(f"{k} {v}" for k, v in sweep.get("versions", _io.versions()).items()),
            "regenerate": regenerate_command(sweep, sweep_dir, out)}
    head_txt = f"{head[0]} ε = {head[1]:g}" if head else "n/a"
    parts = []
    for dataset, t in table.groupby("dataset", sort=False):
        t = t.dropna(axis=1, how="all")
        parts.append(f"**{dataset}**\n\n" + _fmt_table_md(t))
    answer, main_exp = sweep_answer(table, df, head)
    lede = _lede_figure(frontier, figs, main_exp)
    lead = [("Answer", answer),
            ("Headline", _headline_md(table, head_txt, headline_keep, headline_extra, df=df, head=head)),
            *(lead_sections or [])]
    summary = ("Summary", f"Accuracies are percentages at {head_txt} (mean ± sample std over seeds, ddof = 1; the "
               "95% t-interval of the worst case beside it); `clean_full` is clean accuracy on the whole test set, "
               "the other columns use the suite's samples; `worst_case` is the per-sample worst case over every "
               "attack of the suite at that ε, `certified` is guaranteed by the Lipschitz upper bound. Lipschitz "
               "bounds are for the L2 norm; for the regression, `lip_exact` is max |f'| on a fine grid and `mse` the "
               "test error against the true function.\n\n" + "\n\n".join(parts))
    tables = [summary] + list(extra_sections or [])
    hp = hyperparameter_table(trains, df)
    hyper = ("Hyperparameters", "The training settings of every experiment and method, read from each run's stored "
             "config (values that differ between runs are separated by \"; \"; `method settings` are the "
             "regulariser's full settings, defaults included).\n\n"
             + markdown_table(hp, list(hp.columns), lambda r, c: str(r[c])))
    tail = [hyper] + ([("Warnings", "\n".join(f"- {f}" for f in flags))] if flags else [])
    write_page(out, Page(title, intro, box, lead, lede, [f for f in frontier if f is not lede], figs, tables, tail,
                         prov))
    return out / "index.html"


def _anchor(heading: str) -> str:
    """The id of a heading (GitHub's rule for ASCII headings: lower case, spaces to dashes, punctuation dropped)."""
    import re

    return re.sub(r"[^\w\- ]", "", heading.lower()).strip().replace(" ", "-")


NOT_GIT = "not a git checkout"


def run_warnings(sweep_dir: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Per finished run of a sweep folder, its sanity warnings (run id -> warnings; runs without any are left out):
    the evaluation's flags and, from its stored history, near chance and not converged
    (:mod:`robustclip.evaluation.sanity`).
    Raises :class:`robustclip.evaluation.sanity.ResultBug` (exit status 3) when a run's worst case is above its clean
    accuracy."""
    from ..data import datasets as data
    from ..evaluation import sanity
    from ..sweeps.records import finished_runs

    out: dict[str, list[str]] = {}
    for d in finished_runs(Path(sweep_dir)):
        ev = read_eval(d / "eval.json")
        rows = ev["rows"]
        sanity.check_worst_case(pd.DataFrame(rows).assign(run=d.name), str(d / "eval.json"))
        k = data.classes(str(rows[0].get("dataset", "")))
        ws = sanity.run_warnings(rows, ev.get("history"), k, ev.get("flags", []))
        if ws:
            out[d.name] = ws
    return out


def warning_box(per_run: dict[str, list[str]], n_runs: int, max_runs: int = 6) -> list[str]:
    """The lines of the warning box at the top of a report: per kind of warning (its tag), how many of the
    ``n_runs`` runs have it, which (the first ``max_runs``), and the first such message."""
    from ..evaluation.sanity import TAGS

    kinds: dict[str, list[tuple[str, str]]] = {}
    for run, ws in per_run.items():
        for w in ws:
            tag = next((t for t in TAGS if w.startswith(t)), "WARNING:")
            kinds.setdefault(tag, []).append((run, w))
    lines = []
    for tag, items in kinds.items():
        runs = list(dict.fromkeys(r for r, _ in items))
        names = ", ".join(f"`{r}`" for r in runs[:max_runs]) + (f" and {len(runs) - max_runs} more"
                                                                 if len(runs) > max_runs else "")
        first = items[0][1][len(tag):].strip() if items[0][1].startswith(tag) else items[0][1]
        lines.append(f"**{tag.rstrip(':?')}** in {len(runs)} of {n_runs} runs ({names}): {first}"
                     + (" ([each run's message](#warnings))" if len(items) > 1 else " ([Warnings](#warnings))"))
    return lines


def regenerate_command(sweep: dict[str, Any], sweep_dir: Path, out: Path) -> str:
    """The exact command that reproduces the sweep and this report: the sweep file, the demo or paper command, or
    for a sweep given by flags, those flags rebuilt from the stored plan
    (:func:`robustclip.sweeps.planning.flags_command`)."""
    source = sweep.get("source")
    if source in ("<demo>",):
        return "robustclip demo"
    if source and source.endswith(("presets/paper.toml", "experiments/paper/paper.toml")):
        return "robustclip paper"
    if source == "<flags>":
        from ..sweeps.planning import flags_command

        return f"{flags_command(sweep['sweep'], sweep_dir)} && robustclip report {sweep_dir} --out {out}"
    src = source if source and not source.startswith("<") else "SWEEP.toml"
    return f"robustclip sweep {src} --out {sweep_dir} && robustclip report {sweep_dir} --out {out}"


def _md_inline(text: str) -> str:
    import re

    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)
    t = re.sub(r"\[([^\]]+)\]\((#[\w-]+|[\w.-]+\.(?:csv|md|png))\)", r'<a href="\2">\1</a>', t)
    return t


def _md_block(text: str) -> str:
    """Tiny Markdown subset: paragraphs, '- ' lists and pipe tables."""
    parts, lines = [], text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                if not set(lines[i]) <= set("|-: "):
                    rows.append([c.strip() for c in lines[i].strip("|").split("|")])
                i += 1
            head, body = rows[0], rows[1:]
            parts.append('<div class="scroll"><table><thead><tr>' + "".join(f"<th>{_md_inline(c)}</th>" for c in head)
                         + "</tr></thead><tbody>"
                         + "".join("<tr>" + "".join(f"<td>{_md_inline(c)}</td>" for c in r) + "</tr>" for r in body)
                         + "</tbody></table></div>")
            continue
        if line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_md_inline(lines[i][2:])}</li>")
                i += 1
            parts.append("<ul>" + "".join(items) + "</ul>")
            continue
        if line.strip():
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("|", "- ")):
                para.append(lines[i])
                i += 1
            parts.append(f"<p>{_md_inline(' '.join(para))}</p>")
            continue
        i += 1
    return "\n".join(parts)


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1220px;margin:1em auto;padding:0 1em;color:#222;"
        "line-height:1.4}"
        "h1{font-size:1.6em;margin:.2em 0}h2{margin:1.2em 0 .4em}"
        "header.top{display:flex;justify-content:space-between;align-items:baseline;gap:1em}"
        "details.toc{position:relative;flex:none;font-size:14px}details.toc summary{cursor:pointer;color:#2a5db0}"
        "details.toc>ol{position:absolute;right:0;z-index:2;width:22em;max-height:75vh;overflow-y:auto;margin:.3em 0;"
        "padding:.5em 1em .5em 2.2em;background:#fff;border:1px solid #ddd;box-shadow:0 2px 8px rgba(0,0,0,.15)}"
        "details.toc li{margin:.1em 0}details.toc li ol{padding-left:1.2em}"
        ".lede{display:grid;grid-template-columns:minmax(0,5fr) minmax(0,6fr);gap:2em;align-items:start}"
        ".lede h2{margin-top:.3em}.lede figure{margin:.3em 0}.lede figure h3{margin:.3em 0;font-size:1em}"
        ".answer ul{padding-left:1.2em}.answer li{margin:.4em 0}"
        "@media (max-width:900px){.lede{display:block}}"
        ".scroll{overflow-x:auto;max-width:100%;margin:1em 0}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 5px;"
        "text-align:right;white-space:nowrap}"
        "th{white-space:normal;vertical-align:bottom;background:#f3f3f3;position:sticky;top:0}"
        "tbody tr:nth-child(even){background:#fafafa}"
        "figure{margin:2em 0}figcaption{color:#555;font-style:italic}img{max-width:100%;height:auto}"
        "code{background:#f5f5f5;padding:0 3px;overflow-wrap:anywhere}td code{overflow-wrap:normal}"
        ".warnbox{border-left:4px solid #c0392b;background:#fdf0ed;padding:.2em .8em;margin:.5em 0;font-size:13px}"
        ".warnbox ul{margin:.1em 0;padding-left:1.2em}")


def _figure_html(f: Figure, out: Path) -> str:
    b64 = base64.b64encode((out / f.file).read_bytes()).decode()
    return (f'<figure id="{html.escape(f.file)}"><h3 id="{_anchor(f.title)}">{html.escape(f.title)}</h3>'
            f'<img alt="{html.escape(f.title)}" data-file="{html.escape(f.file)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")


TABLES_LINE = ("Tables: [table.csv](table.csv) (one row per method and setting), [results.csv](results.csv) "
               "(one row per run × attack × ε).")


@dataclass
class Page:
    """What a report page shows, in order: ``title``; ``intro`` (Markdown); ``box`` (the warning lines,
    :func:`warning_box`); ``lead`` (sections, the first of them the answer, shown beside ``lede``, the headline
    figure); ``lead_figs`` (figures in the second lead section); ``figs``; ``tables`` (the full tables, level-3
    sections); ``tail`` (level-2 sections after them); ``prov`` (provenance); ``tables_line`` (the closing line)."""

    title: str
    intro: str
    box: list[str]
    lead: list[tuple[str, str]]
    lede: Figure | None
    lead_figs: list[Figure]
    figs: list[Figure]
    tables: list[tuple[str, str]]
    tail: list[tuple[str, str]]
    prov: dict[str, Any]
    tables_line: str = TABLES_LINE


def _fig_md(f: Figure) -> list[str]:
    return [f"### {f.title}", "", f"![{f.title}]({f.file})", "", f"*{f.caption}*", ""]


def page_markdown(page: Page) -> str:
    """README.md of ``page``: the same content as index.html, in the same order."""
    md = [f"# {page.title}", ""] + ([page.intro, ""] if page.intro else [])
    if page.box:
        md += ["> **Warnings**", ">"] + [f"> - {line}" for line in page.box] + [""]
    toc = [h for h, _ in page.lead] + ["Figures", "Full tables"] + [h for h, _ in page.tail] + ["Provenance"]
    md += ["**Contents:** " + " · ".join(f"[{h}](#{_anchor(h)})" for h in toc), ""]
    for i, (h, body) in enumerate(page.lead):
        md += [f"## {h}", "", body, ""]
        if i == 0 and page.lede is not None:
            md += _fig_md(page.lede)
        for f in page.lead_figs if i == 1 else []:
            md += _fig_md(f)
    md += ["## Figures", ""]
    for f in page.figs:
        md += _fig_md(f)
    md += ["## Full tables", ""]
    for h, body in page.tables:
        md += [f"### {h}", "", body, ""]
    for h, body in page.tail:
        md += [f"## {h}", "", body, ""]
    md += ["## Provenance", ""] + [f"- **{k}**: `{v}`" for k, v in page.prov.items()] + [""]
    md += [page.tables_line, ""]
    return "\n".join(md)


def write_page(out: Path, page: Page) -> None:
    """Write ``out/README.md`` and ``out/index.html`` of ``page`` (its figures are already in ``out``)."""
    _io.write_text(out / "README.md", page_markdown(page))
    _io.write_text(out / "index.html", _html(page, out))


def _html(page: Page, out: Path) -> str:
    """The self-contained page. The first screen (1280 × 900) holds the title, the contents (collapsed), the
    warnings (one compact line per kind, linked to each run's message) and the answer beside its headline figure;
    then the intro, the other lead sections (headline tables that fit the page), the figures, the full tables
    (scrollable), the tail sections and the provenance."""
    toc: list[tuple[str, list[str]]] = ([(h, []) for h, _ in page.lead]
                                        + [("Figures", [f.title for f in page.figs]),
                                           ("Full tables", [h for h, _ in page.tables])]
                                        + [(h, []) for h, _ in page.tail] + [("Provenance", [])])
    items = []
    for h, subs in toc:
        sub = ("<ol>" + "".join(f'<li><a href="#{_anchor(x)}">{html.escape(x)}</a></li>' for x in subs) + "</ol>"
               if subs else "")
        items.append(f'<li><a href="#{_anchor(h)}">{html.escape(h)}</a>{sub}</li>')
    body = [f'<header class="top"><h1>{html.escape(page.title)}</h1>'
            f'<details class="toc"><summary>Contents</summary><ol>{"".join(items)}</ol></details></header>']
    if page.box:
        body.append('<div class="warnbox" role="note"><b>Warnings</b><ul>'
                    + "".join(f"<li>{_md_inline(line)}</li>" for line in page.box) + "</ul></div>")
    for i, (h, text) in enumerate(page.lead):
        section = f'<h2 id="{_anchor(h)}">{html.escape(h)}</h2>{_md_block(text)}'
        if i == 0:
            fig = _figure_html(page.lede, out) if page.lede is not None else ""
            body.append(f'<section class="lede"><div class="answer">{section}</div>{fig}</section>')
            if page.intro:
                body.append(f'<div class="intro">{_md_block(page.intro)}</div>')
            continue
        body.append(section)
        body += [_figure_html(f, out) for f in (page.lead_figs if i == 1 else [])]
    body.append('<h2 id="figures">Figures</h2>')
    body += [_figure_html(f, out) for f in page.figs]
    body.append('<h2 id="full-tables">Full tables</h2>')
    for h, text in page.tables:
        body.append(f'<h3 id="{_anchor(h)}">{html.escape(h)}</h3>{_md_block(text)}')
    for h, text in page.tail:
        body.append(f'<h2 id="{_anchor(h)}">{html.escape(h)}</h2>{_md_block(text)}')
    body.append('<h2 id="provenance">Provenance</h2><ul>' + "".join(
        f"<li><b>{html.escape(k)}</b>: <code>{html.escape(str(v))}</code></li>" for k, v in page.prov.items())
        + "</ul>")
    body.append(f"<p>{_md_inline(page.tables_line)}</p>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>{html.escape(page.title)}</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")


_FIG_MD = r"^### ([^\n]+)\n\n!\[[^\]]*\]\(([^)\s]+\.png)\)\n\n\*([^\n]*)\*\n"


def _split_figures(body: str) -> tuple[str, list[Figure]]:
    """A section's Markdown without its figure blocks (``### title``, image, caption), and those figures."""
    import re

    figs = [Figure(m.group(2), m.group(1), m.group(3), []) for m in re.finditer(_FIG_MD, body + "\n", re.M)]
    return re.sub(_FIG_MD, "", body + "\n", flags=re.M).strip(), figs


def relayout(out: str | os.PathLike[str]) -> Path:
    """Lay out again the rendered sweep report in ``out`` with this version's page, from its own README.md,
    results.csv and figures, without the sweep folder behind it (e.g. the committed paper report after a change of
    layout, ``robustclip paper --refresh page``); returns ``out/index.html``.

    Every section, table, figure and provenance line is kept as it is; a page rendered before pages led with their
    answer gains the answer (:func:`sweep_answer`, from results.csv) beside its headline figure. A folder without
    README.md or results.csv is a one-line error, before anything is written."""
    import re

    out = Path(out)
    for need in ("README.md", "results.csv", "index.html"):
        if not (out / need).is_file():
            raise RobustclipError(f"no {need} in {out}: no rendered report there",
                                  "render the whole report first (robustclip report, or robustclip paper)")
    text = (out / "README.md").read_text(encoding="utf-8")
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        raise RobustclipError(f"{out / 'README.md'} does not start with the report's title",
                              "render the whole report again (robustclip report, or robustclip paper)")
    title = lines[0][2:].strip()
    first = next((i for i, ln in enumerate(lines) if ln.startswith("## ")), len(lines))
    intro = "\n".join(ln for ln in lines[1:first] if not ln.startswith((">", "**Contents:**"))).strip()
    sections: list[tuple[str, str]] = []
    for m in re.finditer(r"^## ([^\n]+)\n(.*?)(?=^## |\Z)", "\n".join(lines[first:]) + "\n", re.S | re.M):
        sections.append((m.group(1).strip(), m.group(2)))
    names = [h for h, _ in sections]
    for need in ("Figures", "Full tables", "Provenance"):
        if need not in names:
            raise RobustclipError(f"{out / 'README.md'} has no section {need!r}",
                                  "render the whole report again (robustclip report, or robustclip paper)")
    i_fig, i_tab, i_prov = names.index("Figures"), names.index("Full tables"), names.index("Provenance")
    lead: list[tuple[str, str]] = []
    lead_figs: list[Figure] = []
    lede: Figure | None = None
    for n, (h, body) in enumerate(sections[:i_fig]):
        rest, fs = _split_figures(body)
        lead.append((h, rest))
        if n == 0 and h == "Answer":
            lede = fs[0] if fs else None
            fs = fs[1:]
        lead_figs += fs
    _, figs = _split_figures(sections[i_fig][1])
    tables = [(m.group(1).strip(), m.group(2).strip()) for m in
              re.finditer(r"^### ([^\n]+)\n(.*?)(?=^### |\Z)", sections[i_tab][1], re.S | re.M)]
    tail = [(h, body.strip()) for h, body in sections[i_tab + 1:i_prov]]
    prov_body = sections[i_prov][1]
    prov = {m.group(1): m.group(2) for m in re.finditer(r"^- \*\*([^*]+)\*\*: `(.*)`$", prov_body, re.M)}
    closing = [ln for ln in prov_body.splitlines() if ln.startswith("Tables:")]
    df = pd.read_csv(out / "results.csv")
    if "setting" not in df:
        df["setting"] = df.apply(_setting, axis=1)
    df["setting"] = df["setting"].astype(str)
    df["group"] = df.apply(_group_label, axis=1)
    if not lead or lead[0][0] != "Answer":
        head = headline(df)
        answer, main_exp = sweep_answer(summary_table(df, head), df, head)
        lede = _lede_figure(lead_figs, figs, main_exp)
        lead_figs = [f for f in lead_figs if f is not lede]
        lead.insert(0, ("Answer", answer))
    warns = dict(tail).get("Warnings", "")
    per_run: dict[str, list[str]] = {}
    for ln in warns.splitlines():
        run, sep, msg = ln[2:].partition(": ") if ln.startswith("- ") else ("", "", "")
        if sep:
            per_run.setdefault(run, []).append(msg)
    box = warning_box(per_run, int(df.run.nunique()))
    write_page(out, Page(title, intro, box, lead, lede, lead_figs, figs, tables, tail, prov,
                         tables_line=closing[0] if closing else TABLES_LINE))
    return out / "index.html"
