"""Reports' figures: a sweep's seaborn PNGs (accuracy curves, λ, training history, trade-off, frontier, regression fits,
the attacked-versus-certified sandwich)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core import files as _io
from ..core.results import select
from ..errors import RobustclipError
from .tables import METHOD_NAMES, _exp, seed_stats


@dataclass
class Figure:
    """A written figure: its PNG file name in the report folder, title and caption; ``axes``: the matplotlib Axes it
    was drawn on (closed, but their limits, scales and labels stay readable, e.g. by tests)."""

    file: str
    title: str
    caption: str
    axes: list[Any] = field(default_factory=list, compare=False, repr=False)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def _agg(frame: pd.DataFrame, keys: list[str], value: str = "accuracy") -> pd.DataFrame:
    """Per ``keys`` group: :func:`seed_stats` of ``value`` over its rows (one row per run) as columns
    ``mean, sd, lo, hi, n`` (the same statistics as the tables)."""
    recs = []
    for k, g in frame.groupby(keys, sort=False):
        st = seed_stats(g[value])
        recs.append({**dict(zip(keys, k if isinstance(k, tuple) else (k,))), "mean": st.mean, "sd": st.sd,
                     "lo": st.lo, "hi": st.hi, "n": st.n})
    return pd.DataFrame(recs)


def _errorbars(ax: Any, x: Any, a: pd.DataFrame, color: Any, label: str, marker: str = "o") -> None:
    """Mean with 95% t-interval bars (no bars where one seed gives no interval)."""
    lo = (a["mean"] - a["lo"]).fillna(0.0).to_numpy()
    hi = (a["hi"] - a["mean"]).fillna(0.0).to_numpy()
    ax.errorbar(x, a["mean"], yerr=[lo, hi], marker=marker, color=color, label=label, capsize=3, lw=1.6)


def pct_top(values: Any) -> float:
    """The top of a percent axis that starts at 0: 100 when the data reach 60%, else the data's maximum plus 15%,
    rounded up to a multiple of 10 (at least 10). Accuracy axes always start at 0: never an unannounced zoom."""
    v = pd.to_numeric(pd.Series(np.asarray(values, dtype=float).ravel()), errors="coerce").dropna()
    top = float(v.max()) if len(v) else 100.0
    if top >= 60:
        return 100.0
    return float(max(10, math.ceil(top * 1.15 / 10) * 10))


def spans_decades(values: Any, decades: float = 2.0) -> bool:
    """True when the positive finite ``values`` span at least ``decades`` powers of ten (then a log axis helps)."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v) & (v > 0)]
    return bool(v.size >= 2 and math.log10(v.max() / v.min()) >= decades)


def _integer_ticks(ax: Any) -> None:
    """Whole-number ticks on the x-axis (epochs)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def fig_curves(df: pd.DataFrame, out: Path) -> list[Figure]:
    plt, sns = _plt()
    figs = []
    cls = df[df.attack.isin(["worst_case", "clean"])]
    for dataset, d in cls.groupby(_exp(cls)):
        wc = d[d.attack == "worst_case"]
        for norm, g in wc.groupby("norm"):
            if g.eps.nunique() < 2:
                continue  # one ε and clean accuracy joined by a line is not a curve
            clean = d[d.attack == "clean"].assign(eps=0.0, norm=norm)
            g = pd.concat([clean, g])
            agg = _agg(g, ["group", "eps"])
            wilson = g.groupby(["group", "eps"], sort=False).agg(wlo=("ci_low", "mean"), whi=("ci_high", "mean"))
            agg = agg.join(wilson, on=["group", "eps"])
            fig, ax = plt.subplots(figsize=(7, 4.5))
            palette = sns.color_palette("tab10", agg.group.nunique())
            for color, (grp, a) in zip(palette, agg.groupby("group", sort=False)):
                a = a.sort_values("eps")
                ax.plot(a.eps, 100 * a["mean"], marker="o", color=color, label=grp)
                lo = a["lo"].where(a.n > 1, a.wlo)
                hi = a["hi"].where(a.n > 1, a.whi)
                ax.fill_between(a.eps, 100 * lo.clip(0, 1), 100 * hi.clip(0, 1), color=color, alpha=0.15)
            ax.set(xlabel=f"ε ({norm})", ylabel="accuracy (%), worst case over attacks", ylim=(0, 100),
                   title=f"{dataset}: accuracy versus ε ({norm})")
            ax.legend(fontsize=8, loc="best")
            figs.append(_finish(fig, out, f"curve_{dataset}_{norm}.png", f"{dataset}: accuracy versus ε ({norm})",
                               f"Per-sample worst-case accuracy over the suite's {norm} attacks as ε grows (ε = 0 is "
                               "clean accuracy), one line per method and λ, mean over seeds; bands are 95% "
                               "t-intervals "
                               "over seeds (for a single seed, the 95% Wilson interval of its test sample)."))
    return figs


def _family(method: str, tau: Any) -> str:
    """The λ-figure panel of a run: its method, and whether λ was fixed or set by the discrepancy principle."""
    name = METHOD_NAMES.get(method, method)
    return f"{name}: target τ" if isinstance(tau, (int, float)) and not pd.isna(tau) else f"{name}: fixed λ"


def fig_lambda(df: pd.DataFrame, head: tuple[str, float] | None, out: Path) -> list[Figure]:
    """Per experiment, one column of panels per method family (weight λ, CLIP λ, CLIP τ, adversarial λ, ...):
    worst-case accuracy (top; mean and 95% t-interval over seeds) and Lipschitz bounds (bottom) against that
    family's own x-axis (λ, or the target τ of the discrepancy principle)."""
    from ..data.datasets import is_regression

    plt, sns = _plt()
    figs = []
    for dataset, d in df.groupby(_exp(df)):
        reg = d[d.method != "none"].copy()
        if reg.empty:
            continue
        reg["family"] = [_family(m, t) for m, t in zip(reg.method, reg.tau)]
        reg["x"] = [t if "τ" in f else lam for f, t, lam in zip(reg.family, reg.tau, reg.lam)]
        reg["x"] = reg["x"].astype(float)
        # a panel only where there is something to compare: a family with one λ (or τ) is a single point
        families = [f for f in dict.fromkeys(reg.family) if reg[reg.family == f].x.nunique() > 1]
        if not families:
            continue
        regression = bool(d.dataset.map(is_regression).all())
        with_rob = bool(head) and not regression
        nrows = 2 if with_rob else 1
        fig, axes = plt.subplots(nrows, len(families), figsize=(4.6 * len(families), 3.6 * nrows), squeeze=False)
        base = select(d[d.method == "none"], "worst_case", *head) if with_rob and head else pd.DataFrame()
        for j, fam in enumerate(families):
            f = reg[reg.family == fam]
            tau_axis = "τ" in fam
            xlabel = "target training accuracy τ" if tau_axis else "λ"
            logx = not tau_axis and bool((f.x > 0).all()) and f.x.nunique() > 1
            labels = list(dict.fromkeys(f.label))
            palette = sns.color_palette("tab10", max(len(labels), 1))
            if with_rob and head:
                ax = axes[0, j]
                rob = select(f, "worst_case", *head)
                for color, lab in zip(palette, labels):
                    a = _agg(rob[rob.label == lab], ["x"]).sort_values("x")
                    _errorbars(ax, a.x, a.assign(**{c: 100 * a[c] for c in ("mean", "lo", "hi")}), color, lab)
                if len(base):
                    ax.axhline(100 * seed_stats(base.accuracy).mean, color="grey", ls="--", label="no regularisation")
                ax.set(xscale="log" if logx else "linear", xlabel=xlabel, ylim=(0, 100), title=fam,
                       ylabel=f"worst case (%), {head[0]} ε={head[1]:g}" if j == 0 else "")
                ax.legend(fontsize=7)
            ax = axes[nrows - 1, j]
            per_run = f.drop_duplicates("run")
            bounds = pd.concat([pd.to_numeric(per_run[b], errors="coerce") for b in ("lip_upper", "lip_lower",
                                                                                      "lip_exact") if b in per_run])
            for color, lab in zip(palette, labels):
                r = per_run[per_run.label == lab]
                for bound, marker, ls in (("lip_upper", "^", "-"), ("lip_lower", "v", "--"), ("lip_exact", "o", ":")):
                    v = r.dropna(subset=[bound])
                    if v.empty:
                        continue
                    a = _agg(v, ["x"], bound).sort_values("x")
                    ax.plot(a.x, a["mean"], marker=marker, ls=ls, color=color, label=f"{lab} {bound[4:]}")
            ax.set(xscale="log" if logx else "linear", yscale="log" if spans_decades(bounds) else "linear",
                   xlabel=xlabel,
                   ylabel="Lipschitz bound (L2)" if j == 0 else "", title="" if with_rob else fam)
            ax.legend(fontsize=7)
        cap = ("One column per method family, each on its own axis (λ, or the target τ of the discrepancy "
               "principle). "
               + ("Top: worst-case accuracy at the headline ε, mean over seeds with 95% t-interval bars (dashed: no "
                  "regularisation); bottom: " if with_rob else "")
               + "Lipschitz bounds over seeds (upper: layer norms; lower: pair and Jacobian ascent"
               + ("; exact: max |f'|" if regression else "") + ").")
        figs.append(_finish(fig, out, f"lambda_{dataset}.png", f"{dataset}: robustness and Lipschitz bounds versus λ",
                            cap))
    return figs


def fig_history(histories: dict[str, list[dict[str, Any]]], df: pd.DataFrame, out: Path) -> list[Figure]:
    """Training curves from each run's stored per-epoch history: validation accuracy (or training loss where there
    is no validation set) and training loss per epoch, one line per method and setting, mean over seeds with 95%
    t-interval bands."""
    plt, sns = _plt()
    figs: list[Figure] = []
    runs = df.drop_duplicates("run").set_index("run")
    rows = []
    for run, hist in histories.items():
        if run not in runs.index:
            continue
        r = runs.loc[run]
        for h in hist:
            rows.append({"exp": r[_exp(df)] if _exp(df) in r else r["dataset"], "group": r["group"], "run": run,
                         "epoch": h.get("epoch"), "val_acc": h.get("val_acc"), "train_loss": h.get("train_loss"),
                         "train_acc": h.get("train_acc")})
    if not rows:
        return figs
    hist_df = pd.DataFrame(rows)
    for exp, d in hist_df.groupby("exp", sort=False):
        panels = [c for c in ("val_acc", "train_loss") if pd.to_numeric(d[c], errors="coerce").notna().any()]
        if not panels:
            continue
        fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
        groups = list(dict.fromkeys(d.group))
        palette = sns.color_palette("tab10", len(groups))
        for ax, col in zip(axes[0], panels):
            scale = 100.0 if col == "val_acc" else 1.0  # accuracies in percent, as in the tables
            v = d.assign(**{col: scale * pd.to_numeric(d[col], errors="coerce")}).dropna(subset=[col])
            for color, grp in zip(palette, groups):
                a = _agg(v[v.group == grp], ["epoch"], col).sort_values("epoch")
                if a.empty:
                    continue
                ax.plot(a.epoch, a["mean"], color=color, label=grp, lw=1.5)
                if (a.n > 1).any():
                    ax.fill_between(a.epoch, a["lo"], a["hi"], color=color, alpha=0.15)
            ax.set(xlabel="epoch", ylabel={"val_acc": "validation accuracy (%)",
                                           "train_loss": "training loss (data term)"}[col],
                   title=f"{exp}: {'validation accuracy' if col == 'val_acc' else 'training loss'}")
            _integer_ticks(ax)
            if col == "val_acc":
                ax.set_ylim(0, pct_top(v[col]))
            elif spans_decades(v[col]):  # linear unless the loss spans decades
                ax.set_yscale("log")
            else:
                ax.set_ylim(0, None)
            ax.legend(fontsize=7, loc="lower left" if col == "train_loss" else "best")
        figs.append(_finish(fig, out, f"history_{exp}.png", f"{exp}: training curves",
                            "Per-epoch validation accuracy and training loss (the data term, without the penalty) from "
                            "each run's stored history, mean over seeds with 95% t-interval bands."))
    return figs


def fig_tradeoff(df: pd.DataFrame, head: tuple[str, float] | None, out: Path) -> list[Figure]:
    from ..data.datasets import is_regression

    if not head:
        return []
    plt, sns = _plt()
    figs = []
    n, e = head
    for dataset, d in df[~df.dataset.map(is_regression).astype(bool)].groupby(_exp(df)):
        clean = d[d.attack == "clean"].set_index("run").accuracy.rename("clean accuracy")
        rob = select(d, "worst_case", n, e).set_index("run")
        pts = rob.join(clean)[["clean accuracy", "accuracy", "label", "setting"]].rename(
            columns={"accuracy": f"worst-case accuracy (%, {n} ε={e:g})", "clean accuracy": "clean accuracy (%)"})
        pts[pts.columns[:2]] = 100 * pts[pts.columns[:2]]
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        sns.scatterplot(data=pts, x="clean accuracy (%)", y=pts.columns[1], hue="label", style="label", s=80, ax=ax)
        for _, r in pts.iterrows():
            ax.annotate(r["setting"], (r["clean accuracy (%)"], r.iloc[1]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set(title=f"{dataset}: clean versus robust accuracy", xlim=(0, 100), ylim=(0, pct_top(pts.iloc[:, 1])))
        figs.append(_finish(fig, out, f"tradeoff_{dataset}.png", f"{dataset}: the clean-versus-robust trade-off",
                           f"Each point is one run: clean accuracy against worst-case accuracy at {n} ε={e:g}, in "
                           "%, both axes from 0; up and to the right is better."))
    return figs


def frontier_points(df: pd.DataFrame, head: tuple[str, float]) -> pd.DataFrame:
    """Per experiment and (label, setting): mean training seconds and worst-case accuracy over seeds, with the 95%
    t-interval of the worst case, and ``frontier`` True for the points no other point beats on both (less time and
    more robustness), i.e. the robustness-versus-training-time Pareto frontier."""
    n, e = head
    wc = select(df, "worst_case", n, e)
    exp = _exp(df)
    recs = []
    for (x, label, setting), g in wc.groupby([exp, "label", "setting"], sort=False):
        secs = pd.to_numeric(g["train_seconds"], errors="coerce").dropna()
        if secs.empty:
            continue
        st = seed_stats(g["accuracy"])
        recs.append({"experiment": x, "label": label, "setting": setting, "group": g["group"].iloc[0],
                     "seconds": float(secs.mean()), "worst_case": st.mean, "lo": st.lo, "hi": st.hi, "seeds": st.n})
    pts = pd.DataFrame(recs)
    if pts.empty:
        return pts
    frontier = []
    for _, r in pts.iterrows():
        same = pts[pts.experiment == r.experiment]
        beaten = ((same.seconds <= r.seconds) & (same.worst_case >= r.worst_case)
                  & ((same.seconds < r.seconds) | (same.worst_case > r.worst_case)))
        frontier.append(not bool(beaten.any()))
    pts["frontier"] = frontier
    return pts


def fig_frontier(df: pd.DataFrame, head: tuple[str, float] | None, out: Path) -> list[Figure]:
    """Per experiment: worst-case accuracy against training seconds, one point per method and setting (mean over
    seeds, 95% t-interval bars), the Pareto frontier drawn through the points nothing beats."""
    if not head or "train_seconds" not in df:
        return []
    pts = frontier_points(df, head)
    if pts.empty:
        return []
    plt, sns = _plt()
    n, e = head
    figs = []
    for x, d in pts.groupby("experiment", sort=False):
        if len(d) < 2:
            continue  # one point: nothing to compare
        fig, ax = plt.subplots(figsize=(7, 4.5))
        palette = sns.color_palette("tab10", d.label.nunique())
        for color, (label, g) in zip(palette, d.groupby("label", sort=False)):
            yerr = [(g.worst_case - g.lo.fillna(g.worst_case)).clip(lower=0),
                    (g.hi.fillna(g.worst_case) - g.worst_case).clip(lower=0)]
            ax.errorbar(g.seconds, 100 * g.worst_case, yerr=[100 * v for v in yerr], fmt="o", color=color,
                        capsize=3, label=METHOD_NAMES.get(label, label))
            for _, r in g.iterrows():
                if r.setting != "-":
                    ax.annotate(r.setting, (r.seconds, 100 * r.worst_case), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
        f = d[d.frontier].sort_values("seconds")
        ax.step(f.seconds, 100 * f.worst_case, where="post", color="0.4", linestyle="--", linewidth=1,
                label="frontier")
        ax.set(xlabel="training seconds (mean over seeds)", ylabel=f"worst-case accuracy (%, {n} ε={e:g})",
               xlim=(0, float(d.seconds.max()) * 1.1 or 1.0), ylim=(0, pct_top(100 * d.hi.fillna(d.worst_case))),
               title=f"{x}: robustness against training time")
        ax.legend(fontsize=8, loc="best")
        figs.append(_finish(fig, out, f"frontier_{x}.png", f"{x}: robustness versus training time",
                            f"Each point is one method and setting: mean training seconds against mean worst-case "
                            f"accuracy at {n} ε={e:g} over seeds, with the 95% t-interval; the dashed line joins the "
                            "points that no other point beats on both axes. Up and to the left is better."))
    return figs


def fig_regression(sweep_dir: Path, df: pd.DataFrame, out: Path) -> list[Figure]:
    import torch

    from ..checkpoints import format as checkpoints
    from ..data import datasets as data

    reg = df[df.dataset.map(data.is_regression).astype(bool)].drop_duplicates("run")
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
    """Attacked worst case (solid) and certified accuracy (dashed) against ε, one colour per model, on one axis.

    ``df``: tidy evaluation rows (columns of :data:`robustclip.evaluation.runner.COLUMNS`)
    for one or more models, with ``worst_case`` and ``certified`` rows at
    ``norm``; a model's ``clean`` row, when present, is its point at ε = 0 on both
    lines (nothing to attack or certify there). The true robust accuracy lies
    between the two lines of a model. The caption states the widest 95% Wilson
    half-width of the plotted points instead of drawing a band per line.
    Writes ``out/sandwich_<norm>.png`` (or ``name``); returns its :class:`Figure`.
    Raises :class:`RobustclipError` when there are no such rows.
    """
    from matplotlib.lines import Line2D

    d = df[(df.norm == norm) & df.attack.isin(["worst_case", "certified"])]
    if d.empty or (d.attack == "certified").sum() == 0:
        raise RobustclipError(f"no worst_case and certified rows at {norm} to plot",
                              "evaluate with a suite that has certify = true (e.g. attacks/certify-l2.toml)")
    plt, sns = _plt()
    fig, ax = plt.subplots(figsize=(9, 5))
    models = list(dict.fromkeys(d.model))
    clean = df[df.attack == "clean"].drop_duplicates("model").set_index("model")
    palette = sns.color_palette("tab10", len(models))
    shown = []
    for color, model in zip(palette, models):
        lines = {}
        for attack, style in (("worst_case", "-"), ("certified", "--")):
            a = d[(d.model == model) & (d.attack == attack)].sort_values("eps")
            if a.empty:
                continue
            if model in clean.index:  # ε = 0: both are the clean accuracy
                a = pd.concat([clean.loc[[model]].assign(eps=0.0), a], ignore_index=True)
            ax.plot(a.eps, 100 * a.accuracy, style, marker="o", ms=3.5, color=color)
            lines[attack] = a.set_index("eps").accuracy
            shown.append(a)
        if len(lines) == 2:
            both = pd.DataFrame(lines).dropna()
            ax.fill_between(both.index, 100 * both.certified, 100 * both.worst_case, color=color, alpha=0.07)
    pts = pd.concat(shown, ignore_index=True)
    half = float(np.nanmax(np.maximum(pts.accuracy - pts.ci_low, pts.ci_high - pts.accuracy))) * 100 \
        if {"ci_low", "ci_high"} <= set(pts.columns) else float("nan")
    handles = [Line2D([], [], color=c, lw=2, label=m) for c, m in zip(palette, models)]
    handles += [Line2D([], [], color="black", ls="-", label="attacked (worst case)"),
                Line2D([], [], color="black", ls="--", label="certified")]
    ax.set(xlabel=f"ε ({norm})", ylabel="accuracy (%)", ylim=(0, 100), xlim=(0, float(pts.eps.max()) * 1.02),
           title=f"attacked versus certified accuracy ({norm})")
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    file = name or f"sandwich_{norm}.png"
    bands = "" if np.isnan(half) else f" The 95% Wilson intervals of the points are at most ±{half:.1f} points wide."
    return [_finish(fig, out, file, f"Attacked versus certified accuracy ({norm})",
                    f"Per model (one colour), the worst case over the suite's {norm} attacks (solid, an upper bound on "
                    "robust accuracy) and the accuracy certified by the best sound method (dashed, a lower bound) "
                    "against ε, from clean accuracy at ε = 0; the true robust accuracy lies in the shaded band "
                    f"between them.{bands}")]


def _finish(fig: Any, out: Path, name: str, title: str, caption: str) -> Figure:
    """Lay out, save atomically as ``out/name`` and close ``fig``; return its :class:`Figure`."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with _io.atomic_path(out / name) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    axes = list(fig.axes)
    plt.close(fig)
    return Figure(name, title, caption, axes)
