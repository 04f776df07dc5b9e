"""Reports: tables and seaborn figures from a sweep folder, as HTML and Markdown.

``render(sweep_dir, out)`` writes ``out/index.html`` (self-contained: images
embedded), ``out/README.md`` (the same content, for GitHub), ``out/table.csv``
(one row per method and λ/τ, mean and std over seeds), ``out/results.csv``
(every run × attack × ε) and PNG figures. Every figure has a one-sentence
caption. The report records the commit, versions, seeds and commands.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import _io
from .errors import RobustclipError

METHOD_NAMES = {"none": "no regularisation", "weight": "weight regularisation", "clip": "CLIP"}


@dataclass
class Figure:
    file: str
    title: str
    caption: str


def _setting(row: pd.Series) -> str:
    if isinstance(row.get("tau"), (int, float)) and not pd.isna(row.get("tau")):
        return f"τ={row['tau']:g}"
    if row["method"] == "none":
        return "-"
    return f"λ={row['lam']:g}"


def _group_label(row: pd.Series) -> str:
    s = _setting(row)
    name = row["label"] if row["label"] not in METHOD_NAMES else METHOD_NAMES[row["label"]]
    return name if s == "-" else f"{name}, {s}"


def load_results(sweep_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The sweep's results table with ``setting`` and ``group`` columns added."""
    from .sweeps import gather

    p = Path(sweep_dir)
    if not (p / "sweep.json").is_file():
        raise RobustclipError(f"{p} is not a sweep folder (no sweep.json)", "pass the --out folder of robustclip sweep")
    df = gather(p)
    if df.empty:
        raise RobustclipError(f"sweep {p} has no finished runs", "run robustclip sweep first (it resumes)")
    df["setting"] = df.apply(_setting, axis=1)
    df["group"] = df.apply(_group_label, axis=1)
    return df


def headline(df: pd.DataFrame) -> tuple[str, float] | None:
    """The (norm, ε) of the headline: the suite's, else the largest L2 ε."""
    wc = df[df.attack == "worst_case"]
    if wc.empty:
        return None
    norm = "L2" if (wc.norm == "L2").any() else wc.norm.iloc[0]
    return norm, float(wc[wc.norm == norm].eps.max())


def summary_table(df: pd.DataFrame, head: tuple[str, float] | None) -> pd.DataFrame:
    """One row per (dataset, method, setting): accuracies at the headline ε and Lipschitz bounds, mean ± std over seeds."""
    recs = []
    for (dataset, label, setting), g in df.groupby([_exp(df), "label", "setting"], sort=False):
        runs = g.groupby("run")
        rec: dict[str, Any] = {"dataset": dataset, "method": label, "setting": setting, "seeds": runs.ngroups}

        def per_run(mask_fn) -> list[float]:
            vals = []
            for _, r in runs:
                sel = r[mask_fn(r)]
                vals.append(float(sel.accuracy.iloc[0]) if len(sel) else float("nan"))
            return vals

        cols: dict[str, Any] = {"clean": lambda r: r.attack == "clean", "clean_full": lambda r: r.attack == "clean_full",
                                "noise": lambda r: r.attack == "noise"}
        if head:
            n, e = head
            for name, key in (("fgsm", "fgsm"), ("authors_pgd", "authors_pgd"), ("pgd", "pgd"),
                              ("worst_case", "worst_case"), ("certified", "certified")):
                cols[name] = (lambda k: (lambda r: (r.attack == k) & (r.norm == n) & ((r.eps - e).abs() < 1e-9)))(key)
        for name, fn in cols.items():
            v = np.array(per_run(fn), dtype=float)
            if np.all(np.isnan(v)):
                continue
            rec[name] = float(np.nanmean(v))
            rec[f"{name}_std"] = float(np.nanstd(v)) if len(v) > 1 else 0.0
        first = runs.first()
        for k in ("lip_lower", "lip_upper", "lip_exact", "mse", "train_seconds", "final_lam"):
            v = pd.to_numeric(first[k], errors="coerce")
            if v.notna().any():
                rec[k] = float(v.mean())
                if k in ("lip_lower", "lip_upper", "lip_exact", "mse"):
                    rec[f"{k}_std"] = float(v.std(ddof=0)) if len(v) > 1 else 0.0
        recs.append(rec)
    return pd.DataFrame(recs)


def _fmt_table_md(t: pd.DataFrame) -> str:
    if t.empty:
        return "_(no rows)_"
    show = [c for c in ("dataset", "method", "setting", "seeds", "clean_full", "clean", "noise", "fgsm", "authors_pgd", "pgd",
                        "worst_case", "certified", "lip_lower", "lip_upper", "lip_exact", "mse", "final_lam",
                        "train_seconds") if c in t.columns]
    lines = ["| " + " | ".join(show) + " |", "|" + "---|" * len(show)]
    for _, r in t.iterrows():
        cells = []
        for c in show:
            v = r[c]
            if isinstance(v, float):
                if math.isnan(v):
                    cells.append("")
                    continue
                if c in ("clean_full", "clean", "noise", "fgsm", "authors_pgd", "pgd", "worst_case", "certified"):
                    sd = r.get(f"{c}_std", 0.0)
                    cells.append(f"{100 * v:.1f}" + (f" ± {100 * sd:.1f}" if sd and r["seeds"] > 1 else ""))
                elif c == "train_seconds":
                    cells.append(f"{v:.0f}")
                else:
                    cells.append(f"{v:.3g}")
            else:
                cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- figures


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def _exp(df: pd.DataFrame) -> str:
    """The column that tells experiments apart (``experiment`` when the sweep recorded it)."""
    return "experiment" if "experiment" in df else "dataset"


def fig_curves(df: pd.DataFrame, out: Path) -> list[Figure]:
    plt, sns = _plt()
    figs = []
    cls = df[df.attack.isin(["worst_case", "clean"])]
    for dataset, d in cls.groupby(_exp(cls)):
        wc = d[d.attack == "worst_case"]
        for norm, g in wc.groupby("norm"):
            if g.eps.nunique() < 1:
                continue
            clean = d[d.attack == "clean"].assign(eps=0.0, norm=norm)
            g = pd.concat([clean, g])
            agg = g.groupby(["group", "eps"], sort=False).agg(acc=("accuracy", "mean"), lo=("ci_low", "mean"),
                                                              hi=("ci_high", "mean")).reset_index()
            fig, ax = plt.subplots(figsize=(7, 4.5))
            palette = sns.color_palette("tab10", agg.group.nunique())
            for color, (grp, a) in zip(palette, agg.groupby("group", sort=False)):
                a = a.sort_values("eps")
                ax.plot(a.eps, a.acc, marker="o", color=color, label=grp)
                ax.fill_between(a.eps, a.lo, a.hi, color=color, alpha=0.15)
            ax.set(xlabel=f"ε ({norm})", ylabel="accuracy (worst case over attacks)", ylim=(0, 1),
                   title=f"{dataset}: accuracy versus ε ({norm})")
            ax.legend(fontsize=8, loc="best")
            figs.append(_finish(fig, out, f"curve_{dataset}_{norm}.png", f"{dataset}: accuracy versus ε ({norm})",
                               f"Per-sample worst-case accuracy over the suite's {norm} attacks as ε grows (ε = 0 is "
                               "clean accuracy), one line per method and λ, mean over seeds, with 95% Wilson bands."))
    return figs


def fig_lambda(df: pd.DataFrame, head: tuple[str, float] | None, out: Path) -> list[Figure]:
    plt, sns = _plt()
    figs = []
    for dataset, d in df.groupby(_exp(df)):
        reg = d[d.method != "none"].copy()
        if reg.empty:
            continue
        reg["λ"] = reg.final_lam.astype(float)
        per_run = reg.drop_duplicates("run")
        is_regression = bool((d.dataset == "regression").all())
        ncols = 2 if (head and not is_regression) else 1
        fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4.2), squeeze=False)
        ax_i = 0
        if ncols == 2 and head:
            n, e = head
            rob = reg[(reg.attack == "worst_case") & (reg.norm == n) & ((reg.eps - e).abs() < 1e-9)]
            sns.lineplot(data=rob, x="λ", y="accuracy", hue="label", style="label", markers=True, ax=axes[0, 0],
                         errorbar=("sd", 1) if rob.seed.nunique() > 1 else None)
            base = d[(d.method == "none") & (d.attack == "worst_case") & (d.norm == n) & ((d.eps - e).abs() < 1e-9)]
            if len(base):
                axes[0, 0].axhline(base.accuracy.mean(), color="grey", ls="--", label="no regularisation")
            axes[0, 0].set(xscale="log", ylabel=f"worst-case accuracy at {n} ε={e:g}", ylim=(0, 1),
                           title=f"{dataset}: robustness versus λ")
            axes[0, 0].legend(fontsize=8)
            ax_i = 1
        ax = axes[0, ax_i]
        long = per_run.melt(id_vars=["label", "λ", "seed"], value_vars=[c for c in ("lip_lower", "lip_upper", "lip_exact")
                                                                         if per_run[c].notna().any()],
                            var_name="bound", value_name="Lipschitz")
        long = long.dropna()
        sns.lineplot(data=long, x="λ", y="Lipschitz", hue="label", style="bound", markers=True, ax=ax,
                     errorbar=None)
        ax.set(xscale="log", yscale="log", title=f"{dataset}: Lipschitz bounds versus λ")
        ax.legend(fontsize=7)
        cap = ("Left: worst-case robust accuracy at the headline ε against the final λ of each run (dashed: no "
               "regularisation); right: " if ncols == 2 else "") + \
              ("empirical lower bound (pair and Jacobian ascent), layer-norm upper bound" +
               (" and exact constant" if is_regression else "") + " of the Lipschitz constant against λ.")
        figs.append(_finish(fig, out, f"lambda_{dataset}.png", f"{dataset}: robustness and Lipschitz bounds versus λ",
                            cap[0].upper() + cap[1:]))
    return figs


def fig_tradeoff(df: pd.DataFrame, head: tuple[str, float] | None, out: Path) -> list[Figure]:
    if not head:
        return []
    plt, sns = _plt()
    figs = []
    n, e = head
    for dataset, d in df[df.dataset != "regression"].groupby(_exp(df)):
        clean = d[d.attack == "clean"].set_index("run").accuracy.rename("clean accuracy")
        rob = d[(d.attack == "worst_case") & (d.norm == n) & ((d.eps - e).abs() < 1e-9)].set_index("run")
        pts = rob.join(clean)[["clean accuracy", "accuracy", "label", "setting"]].rename(
            columns={"accuracy": f"worst-case accuracy ({n} ε={e:g})"})
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        sns.scatterplot(data=pts, x="clean accuracy", y=pts.columns[1], hue="label", style="label", s=80, ax=ax)
        for _, r in pts.iterrows():
            ax.annotate(r["setting"], (r["clean accuracy"], r.iloc[1]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set(title=f"{dataset}: clean versus robust accuracy")
        figs.append(_finish(fig, out, f"tradeoff_{dataset}.png", f"{dataset}: the clean-versus-robust trade-off",
                           f"Each point is one run: clean accuracy against worst-case accuracy at {n} ε={e:g}; "
                           "up and to the right is better."))
    return figs


def fig_regression(sweep_dir: Path, df: pd.DataFrame, out: Path) -> list[Figure]:
    import torch

    from . import checkpoints, data

    reg = df[df.dataset == "regression"].drop_duplicates("run")
    if reg.empty:
        return []
    plt, sns = _plt()
    train = data.regression("train")
    grid = torch.linspace(0, 1, 400).unsqueeze(1)
    labels = list(dict.fromkeys(reg.label))
    fig, axes = plt.subplots(1, len(labels), figsize=(5.5 * len(labels), 4.2), squeeze=False, sharey=True)
    for ax, label in zip(axes[0], labels):
        rr = reg[reg.label == label].sort_values("lam")
        colors = sns.color_palette("viridis", len(rr))
        for color, (_, r) in zip(colors, rr.iterrows()):
            model, _ = checkpoints.load(sweep_dir / "runs" / r["run"] / "model.safetensors")
            with torch.no_grad():
                ax.plot(grid[:, 0], model(grid)[:, 0], color=color, lw=1.8,
                        label=f"{r['setting']} (Lip {r['lip_exact']:.2g})")
        ax.plot(grid[:, 0], data.regression_target(grid)[:, 0], color="black", ls=":", lw=1.2, label="true g(x)")
        ax.scatter(train.x[:, 0], train.y[:, 0], s=14, color="black", alpha=0.6, label="noisy data")
        ax.set(title=METHOD_NAMES.get(label, label), xlabel="x", ylabel="f(x)")
        ax.legend(fontsize=7)
    return [_finish(fig, out, "regression_fits.png", "Regression: fitted functions for each λ",
                   "The fitted functions over the noisy training data for each method and λ (dotted: the true "
                   "function); the legend gives each fit's exact Lipschitz constant, max |f'|.")]


def fig_sandwich(df: pd.DataFrame, out: Path, *, norm: str = "L2", name: str | None = None) -> list[Figure]:
    """Attacked worst case (above) and certified accuracy (below) against ε, one colour per model.

    ``df``: tidy evaluation rows (columns of :data:`robustclip.evaluation.COLUMNS`)
    for one or more models, with ``worst_case`` and ``certified`` rows at
    ``norm``. The true robust accuracy lies between the two lines of a model.
    Writes ``out/sandwich_<norm>.png`` (or ``name``); returns its :class:`Figure`.
    Raises :class:`RobustclipError` when there are no such rows.
    """
    d = df[(df.norm == norm) & df.attack.isin(["worst_case", "certified"])]
    if d.empty or (d.attack == "certified").sum() == 0:
        raise RobustclipError(f"no worst_case and certified rows at {norm} to plot",
                              "evaluate with a suite that has certify = true (e.g. attacks/certify-l2.toml)")
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    models = list(dict.fromkeys(d.model))
    palette = sns.color_palette("tab10", len(models))
    for color, model in zip(palette, models):
        for attack, style, label in (("worst_case", "-", "attacked (worst case)"), ("certified", "--", "certified")):
            a = d[(d.model == model) & (d.attack == attack)].sort_values("eps")
            if a.empty:
                continue
            ax.plot(a.eps, a.accuracy, style, marker="o", color=color, label=f"{model}: {label}")
            ax.fill_between(a.eps, a.ci_low, a.ci_high, color=color, alpha=0.12)
        both = d[d.model == model].pivot_table(index="eps", columns="attack", values="accuracy")
        if {"worst_case", "certified"} <= set(both.columns):
            ax.fill_between(both.index, both.certified, both.worst_case, color=color, alpha=0.08)
    ax.set(xlabel=f"ε ({norm})", ylabel="accuracy", ylim=(0, 1), title=f"attacked versus certified accuracy ({norm})")
    ax.legend(fontsize=8, loc="best")
    file = name or f"sandwich_{norm}.png"
    return [_finish(fig, out, file, f"Attacked versus certified accuracy ({norm})",
                    f"Per model, the worst case over the suite's {norm} attacks (solid, an upper bound on robust "
                    "accuracy) and the accuracy certified by the best sound method (dashed, a lower bound) against ε, "
                    "with 95% Wilson bands; the true robust accuracy lies in the shaded band between them.")]


def _finish(fig: Any, out: Path, name: str, title: str, caption: str) -> Figure:
    """Lay out, save atomically as ``out/name`` and close ``fig``; return its :class:`Figure`."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with _io.atomic_path(out / name) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Figure(name, title, caption)


# --------------------------------------------------------------------------- rendering


def render(sweep_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, title: str | None = None,
           intro: str = "", extra_sections: list[tuple[str, str]] | None = None) -> Path:
    """Render the report of ``sweep_dir`` into folder ``out``; returns ``out/index.html``."""
    sweep_dir, out = Path(sweep_dir), Path(out)
    df = load_results(sweep_dir)
    sweep = json.loads((sweep_dir / "sweep.json").read_text())
    out.mkdir(parents=True, exist_ok=True)
    head = headline(df)
    table = summary_table(df, head)
    _io.write_text(out / "results.csv", df.drop(columns=["group"]).to_csv(index=False))
    _io.write_text(out / "table.csv", table.to_csv(index=False))
    figs = (fig_curves(df, out) + fig_lambda(df, head, out) + fig_tradeoff(df, head, out)
            + fig_regression(sweep_dir, df, out))
    title = title or f"robustclip report: {sweep['sweep'].get('name', sweep_dir.name)}"
    seeds = sorted(df.seed.unique().tolist())
    flags = []
    from .sweeps import finished_runs

    for d in finished_runs(sweep_dir):
        for f in json.loads((d / "eval.json").read_text()).get("flags", []):
            flags.append(f"{d.name}: {f}")
    prov = {"sweep folder": str(sweep_dir), "commit": sweep.get("commit") or _io.git_commit(),
            "report commit": _io.git_commit(), "seeds": ", ".join(map(str, seeds)),
            "versions": ", ".join(f"{k} {v}" for k, v in sweep.get("versions", _io.versions()).items()),
            "regenerate": _regenerate_command(sweep.get("source"), sweep_dir, out)}
    head_txt = f"{head[0]} ε = {head[1]:g}" if head else "n/a"
    parts = []
    for dataset, t in table.groupby("dataset", sort=False):
        t = t.dropna(axis=1, how="all")
        parts.append(f"**{dataset}**\n\n" + _fmt_table_md(t))
    sections: list[tuple[str, str]] = [("Summary", f"Accuracies are percentages at {head_txt} (mean ± std over seeds); "
                                        "`clean_full` is clean accuracy on the whole test set, the other columns use "
                                        "the suite's samples; `worst_case` is the per-sample worst case over every "
                                        "attack of the suite at that ε, `certified` is guaranteed by the Lipschitz "
                                        "upper bound. Lipschitz bounds are for the L2 norm; for the regression, "
                                        "`lip_exact` is max |f'| on a fine grid and `mse` the test error against the "
                                        "true function.\n\n" + "\n\n".join(parts))]
    sections += extra_sections or []
    if flags:
        sections.append(("Warnings", "\n".join(f"- {f}" for f in flags)))
    md = [f"# {title}", "", intro, ""] if intro else [f"# {title}", ""]
    for h, body in sections:
        md += [f"## {h}", "", body, ""]
    md += ["## Figures", ""]
    for f in figs:
        md += [f"### {f.title}", "", f"![{f.title}]({f.file})", "", f"*{f.caption}*", ""]
    md += ["## Provenance", ""] + [f"- **{k}**: `{v}`" for k, v in prov.items()] + [""]
    md += ["Tables: [table.csv](table.csv) (one row per method and setting), [results.csv](results.csv) "
           "(one row per run × attack × ε).", ""]
    _io.write_text(out / "README.md", "\n".join(md))
    _io.write_text(out / "index.html", _html(title, intro, sections, figs, prov, out))
    return out / "index.html"


def _regenerate_command(source: str | None, sweep_dir: Path, out: Path) -> str:
    if source in ("<demo>",):
        return "robustclip demo"
    if source and source.endswith("presets/paper.toml"):
        return "robustclip paper"
    src = source if source and not source.startswith("<") else "SWEEP.toml"
    return f"robustclip sweep {src} --out {sweep_dir} && robustclip report {sweep_dir} --out {out}"


def _md_inline(text: str) -> str:
    import re

    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)
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
            parts.append("<table><thead><tr>" + "".join(f"<th>{_md_inline(c)}</th>" for c in head) + "</tr></thead><tbody>"
                         + "".join("<tr>" + "".join(f"<td>{_md_inline(c)}</td>" for c in r) + "</tr>" for r in body)
                         + "</tbody></table>")
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


def _html(title: str, intro: str, sections, figs: list[Figure], prov: dict[str, Any], out: Path) -> str:
    css = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
           "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 7px;"
           "text-align:right}th{background:#f3f3f3}figure{margin:2em 0}figcaption{color:#555;font-style:italic}"
           "img{max-width:100%}code{background:#f5f5f5;padding:0 3px}")
    body = [f"<h1>{html.escape(title)}</h1>"]
    if intro:
        body.append(_md_block(intro))
    for h, text in sections:
        body.append(f"<h2>{html.escape(h)}</h2>{_md_block(text)}")
    body.append("<h2>Figures</h2>")
    for f in figs:
        b64 = base64.b64encode((out / f.file).read_bytes()).decode()
        body.append(f'<figure id="{html.escape(f.file)}"><h3>{html.escape(f.title)}</h3>'
                    f'<img alt="{html.escape(f.title)}" data-file="{html.escape(f.file)}" src="data:image/png;base64,{b64}">'
                    f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")
    body.append("<h2>Provenance</h2><ul>" + "".join(f"<li><b>{html.escape(k)}</b>: <code>{html.escape(str(v))}</code></li>"
                                                   for k, v in prov.items()) + "</ul>")
    body.append('<p>Tables: <a href="table.csv">table.csv</a>, <a href="results.csv">results.csv</a>.</p>')
    return f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{css}</style></head><body>{''.join(body)}</body></html>\n"
