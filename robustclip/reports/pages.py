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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import stats
from ..core import files as _io
from ..core.results import markdown_table, select
from ..errors import RobustclipError
from ..training.regularizers.registry import REGISTRY

METHOD_NAMES = {name: entry.label or name for name, entry in REGISTRY.items()}
"""Each regulariser's name in reports: its registry entry's label."""

@dataclass(frozen=True)
class SeedStats:
    """Mean, sample std (ddof = 1) and 95% t-interval of one quantity over ``n`` seeds (std, lo, hi NaN if n < 2)."""

    n: int
    mean: float
    sd: float
    lo: float
    hi: float

    @property
    def half(self) -> float:
        """Half-width of the 95% interval (NaN with one seed)."""
        return (self.hi - self.lo) / 2


def seed_stats(values: Any) -> SeedStats:
    """:class:`SeedStats` of the finite entries of ``values`` (one per seed); all NaN when none is finite."""
    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return SeedStats(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(v.mean())
    if n < 2:
        return SeedStats(1, mean, math.nan, math.nan, math.nan)
    sd = float(v.std(ddof=1))
    half = stats.mean_halfwidth(sd, n, 0.95)
    return SeedStats(n, mean, sd, mean - half, mean + half)


@dataclass
class Figure:
    """A written figure: its PNG file name in the report folder, title and caption; ``axes``: the matplotlib Axes it
    was drawn on (closed, but their limits, scales and labels stay readable, e.g. by tests)."""

    file: str
    title: str
    caption: str
    axes: list[Any] = field(default_factory=list, compare=False, repr=False)


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


_MAX_EVAL_BYTES = 64 * 1024 * 1024
_ROW_KEYS = ("run", "label", "dataset", "method", "seed", "attack", "norm", "eps", "accuracy")
_REDO = "rerun robustclip sweep on the same folder (it redoes the run), or delete that run's folder"


def read_eval(path: Path) -> dict[str, Any]:
    """A run's ``eval.json``, checked: a bounded regular file holding a JSON object whose ``rows`` are complete.

    A truncated or hand-edited file is a :class:`RobustclipError` naming it, never a traceback, and never a run
    (a seed) silently left out of the report.
    """
    from ..core import validate

    raw = validate.read_bytes(path, "run results", max_bytes=_MAX_EVAL_BYTES)
    try:
        doc = _io.loads_json_bounded(raw, max_depth=32, max_bytes=_MAX_EVAL_BYTES, what=str(path))
    except ValueError as exc:
        raise RobustclipError(f"{path} is not valid JSON (truncated or corrupt): {str(exc).splitlines()[0]}",
                              _REDO) from None
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not rows:
        raise RobustclipError(f"{path} holds no result rows", _REDO)
    for i, r in enumerate(rows):
        missing = [k for k in _ROW_KEYS if not isinstance(r, dict) or k not in r]
        if missing:
            raise RobustclipError(f"{path}: row {i} lacks {', '.join(missing)}", _REDO)
        for k in ("seed", "eps"):
            if isinstance(r[k], bool) or not isinstance(r[k], (int, float)):
                raise RobustclipError(f"{path}: row {i} has {k} {r[k]!r:.40}, not a number", _REDO)
        acc = r["accuracy"]
        if acc is not None and (isinstance(acc, bool) or not isinstance(acc, (int, float))):
            raise RobustclipError(f"{path}: row {i} has accuracy {r['accuracy']!r:.40}, not a number", _REDO)
    if not isinstance(doc.get("flags", []), list):
        raise RobustclipError(f"{path}: flags is not a list", _REDO)
    return doc


def load_results(sweep_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """The sweep's results table with ``setting`` and ``group`` columns added.

    ``sweep.json`` and every finished run's files are checked first: against the digests of the run's manifest
    (:func:`robustclip.sweeps.planning.verify_run`; an edited ``eval.json`` is refused, naming it), then ``eval.json``'s
    content (:func:`read_eval`). A bad one stops the report with a one-line error, never a KeyError and never a
    silently dropped seed or edited number.
    """
    from ..sweeps.planning import finished_runs, gather, read_info, verify_run

    p = Path(sweep_dir)
    read_info(p)
    for d in finished_runs(p):
        verify_run(d)
        read_eval(d / "eval.json")
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
    """One row per (dataset, method, setting): accuracies at the headline ε and Lipschitz bounds over seeds.

    Each accuracy ``c`` in [0, 1] comes as ``c`` (mean), ``c_std`` (sample std, ddof = 1) and ``c_ci_low`` /
    ``c_ci_high`` (95% t-interval), all from :func:`seed_stats`; NaN spread with one seed.
    """
    recs = []
    for (dataset, label, setting), g in df.groupby([_exp(df), "label", "setting"], sort=False):
        runs = g.groupby("run")
        rec: dict[str, Any] = {"dataset": dataset, "method": label, "setting": setting, "seeds": runs.ngroups}

        def per_run(mask_fn: Callable[[pd.DataFrame], Any], runs: Any = runs) -> list[float]:
            vals = []
            for _, r in runs:
                sel = r[mask_fn(r)]
                vals.append(float(sel.accuracy.iloc[0]) if len(sel) else float("nan"))
            return vals

        cols: dict[str, Any] = {"clean": lambda r: r.attack == "clean",
                                "clean_full": lambda r: r.attack == "clean_full",
                                "noise": lambda r: r.attack == "noise"}
        if head:
            n, e = head
            for name, key in (("fgsm", "fgsm"), ("authors_pgd", "authors_pgd"), ("pgd", "pgd"),
                              ("worst_case", "worst_case"), ("certified", "certified")):
                cols[name] = _row_mask(key, n, e)
        cols["val_clean"] = lambda r: r.attack == "val_clean"
        cols["val_worst_case"] = lambda r: r.attack == "val_worst_case"
        for name, fn in cols.items():
            st = seed_stats(per_run(fn))
            if st.n == 0:
                continue
            rec[name], rec[f"{name}_std"] = st.mean, st.sd
            rec[f"{name}_ci_low"], rec[f"{name}_ci_high"] = st.lo, st.hi
        first = runs.first()
        for k in ("lip_lower", "lip_upper", "lip_exact", "mse", "train_seconds", "final_lam"):
            v = pd.to_numeric(first[k], errors="coerce")
            if v.notna().any():
                st = seed_stats(v)
                rec[k] = st.mean
                if k in ("lip_lower", "lip_upper", "lip_exact", "mse"):
                    rec[f"{k}_std"] = st.sd
        recs.append(rec)
    return pd.DataFrame(recs)


def _row_mask(attack: str, norm: str, eps: float) -> Callable[[pd.DataFrame], Any]:
    """A mask function: which rows of a run's frame are ``attack`` at ``norm`` and ``eps``."""
    return lambda r: r.index.isin(select(r, attack, norm, eps).index)


_PCT_COLUMNS = ("clean_full", "clean", "noise", "fgsm", "authors_pgd", "pgd", "worst_case", "certified", "val_clean",
                "val_worst_case")


def _md_cell(r: pd.Series, c: str) -> str:
    v = r[c]
    if not isinstance(v, float):
        return str(v)
    if math.isnan(v):
        return ""
    if c in _PCT_COLUMNS:
        return pct_cell(v, r.get(f"{c}_std"))
    return f"{v:.0f}" if c == "train_seconds" else f"{v:.3g}"


def pct_cell(mean: Any, sd: Any = None) -> str:
    """``"38.9 ± 3.7"`` (percent) from a mean and a sample std in [0, 1]; no ``±`` when the std is missing."""
    if mean is None or pd.isna(mean):
        return ""
    ok = sd is not None and not pd.isna(sd)
    return f"{100 * mean:.1f}" + (f" ± {100 * sd:.1f}" if ok else "")


def ci_cell(lo: Any, hi: Any) -> str:
    """``"[29.7, 48.1]"`` (percent) from a 95% interval in [0, 1]; empty when it is missing (one seed)."""
    if lo is None or hi is None or pd.isna(lo) or pd.isna(hi):
        return ""
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]"


def _fmt_table_md(t: pd.DataFrame) -> str:
    t = t.copy()
    if "worst_case_ci_low" in t:
        t["worst_case 95% CI"] = [ci_cell(a, b) for a, b in zip(t.worst_case_ci_low, t.worst_case_ci_high)]
    show = [c for c in ("dataset", "method", "setting", "seeds", *_PCT_COLUMNS, "worst_case 95% CI", "lip_lower",
                        "lip_upper", "lip_exact", "mse", "final_lam", "train_seconds") if c in t.columns]
    return markdown_table(t, show, _md_cell)


def selection_column(table: pd.DataFrame) -> str:
    """What settings are chosen by: ``val_worst_case`` (validation data) when every classifier row has it, else
    ``worst_case`` (test data: an optimistic choice, said so on the page)."""
    if "val_worst_case" in table and "worst_case" in table:
        cls = table[table["worst_case"].notna()]
        if len(cls) and cls["val_worst_case"].notna().all():
            return "val_worst_case"
    return "worst_case"


def headline_rows(table: pd.DataFrame, keep: list[tuple[str, str, str]] | None = None) -> pd.DataFrame:
    """The main rows of :func:`summary_table`, for the page's headline: per experiment, plain training and, for every
    other method label, its setting with the highest mean worst case on validation data (:func:`selection_column`;
    highest mean clean accuracy where no worst case exists), plus the (experiment, label, setting) rows in
    ``keep``."""
    keep_set = set(keep or [])
    rows: list[Any] = []
    by = selection_column(table)
    for _, t in table.groupby("dataset", sort=False):
        for _, g in t.groupby("method", sort=False):
            score = g[by] if by in g and g[by].notna().any() else \
                g.get("clean", pd.Series(dtype=float))
            score = pd.to_numeric(score, errors="coerce") if score is not None else None
            pick = {g.index[0]} if score is None or score.isna().all() else {score.idxmax()}
            pick |= {i for i, r in g.iterrows() if (r["dataset"], r["method"], r["setting"]) in keep_set}
            rows += sorted(pick)
    order = {k: i for i, k in enumerate(METHOD_NAMES)}
    out = table.loc[rows]
    exps = {e: i for i, e in enumerate(dict.fromkeys(out["dataset"]))}
    rank = [(exps[e], order.get(next((k for k in order if str(m).startswith(k)), ""), len(order)), i)
            for i, (e, m) in enumerate(zip(out["dataset"], out["method"]))]
    return out.iloc[[r[-1] for r in sorted(rank)]] if len(out) else out


# --------------------------------------------------------------------------- figures


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt, sns


def _exp(df: pd.DataFrame) -> str:
    """The column that tells experiments apart (``experiment`` when the sweep recorded it)."""
    return "experiment" if "experiment" in df else "dataset"


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
        is_regression = bool((d.dataset == "regression").all())
        with_rob = bool(head) and not is_regression
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
               + ("; exact: max |f'|" if is_regression else "") + ").")
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
    if not head:
        return []
    plt, sns = _plt()
    figs = []
    n, e = head
    for dataset, d in df[df.dataset != "regression"].groupby(_exp(df)):
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

    ``df``: tidy evaluation rows (columns of :data:`robustclip.evaluation.runner.COLUMNS`)
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
            ax.plot(a.eps, 100 * a.accuracy, style, marker="o", color=color, label=f"{model}: {label}")
            ax.fill_between(a.eps, 100 * a.ci_low, 100 * a.ci_high, color=color, alpha=0.12)
        both = d[d.model == model].pivot_table(index="eps", columns="attack", values="accuracy")
        if {"worst_case", "certified"} <= set(both.columns):
            ax.fill_between(both.index, 100 * both.certified, 100 * both.worst_case, color=color, alpha=0.08)
    ax.set(xlabel=f"ε ({norm})", ylabel="accuracy (%)", ylim=(0, 100),
           title=f"attacked versus certified accuracy ({norm})")
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
    axes = list(fig.axes)
    plt.close(fig)
    return Figure(name, title, caption, axes)


# --------------------------------------------------------------------------- rendering


def hyperparameter_table(trains: dict[str, dict[str, Any]], df: pd.DataFrame) -> pd.DataFrame:
    """One row per (experiment, method label): the training settings its runs used (``trains``: run → the ``train``
    block of its eval.json). Settings that differ between the runs of a row are listed, separated by "; "."""
    runs = df.drop_duplicates("run").set_index("run")
    per: dict[tuple[str, str], list[dict[str, str]]] = {}
    for run, t in trains.items():
        if run not in runs.index:
            continue
        r = runs.loc[run]
        spec = t.get("model") or {}
        sizes = spec.get("sizes")
        model = " ".join(str(x) for x in (spec.get("arch", "?"), "-".join(map(str, sizes)) if sizes else "",
                                            spec.get("activation", ""),
                                            "+ output sigmoid" if spec.get("output_activation") == "sigmoid" else "")
                         if x)
        if t.get("reg") == "none":
            lam = "-"
        elif t.get("target_acc") is not None:
            lam = (f"τ={t['target_acc']:g} (λ0={t.get('lam', 0):g}, dλ={t.get('lam_step', 0):g}, "
                   f"warm-up {t.get('warmup', 0)})")
        else:
            lam = f"λ={t.get('lam', 0):g}" + (f", warm-up {t['warmup']}" if t.get("warmup") else "")
        regcfg = {k: v for k, v in (t.get("regularizer") or {}).items() if k != "name" and v is not None}
        settings = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in regcfg.items()) or "-"
        opt = str(t.get("optimizer", "?"))
        if opt == "sgd":
            opt += f" (momentum {t.get('momentum', 0):g})"
        per.setdefault((str(r[_exp(df)] if _exp(df) in r else r["dataset"]), str(r["label"])), []).append({
            "model": model, "epochs": str(t.get("epochs", "")), "optimiser": opt, "lr": f"{t.get('lr', 0):g}",
            "batch": str(t.get("batch_size", "")), "n_train": str(t.get("n_train") or "all"), "λ / τ": lam,
            "method settings": settings, "seed": str(t.get("seed", ""))})
    recs = []
    for (exp, label), items in per.items():
        rec: dict[str, Any] = {"experiment": exp, "method": label, "runs": len(items)}
        for k in items[0]:
            if k == "seed":
                rec["seeds"] = ", ".join(sorted(dict.fromkeys(i["seed"] for i in items), key=lambda v: (len(v), v)))
                continue
            rec[k] = "; ".join(dict.fromkeys(i[k] for i in items))
        recs.append(rec)
    return pd.DataFrame(recs)


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
    from ..sweeps.planning import read_info

    sweep = read_info(sweep_dir)
    out.mkdir(parents=True, exist_ok=True)
    head = headline(df)
    table = summary_table(df, head)
    _io.write_text(out / "results.csv", df.drop(columns=["group"]).to_csv(index=False))
    _io.write_text(out / "table.csv", table.to_csv(index=False))
    from ..sweeps.planning import finished_runs

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
    lead = [("Headline", _headline_md(table, head_txt, headline_keep, headline_extra, df=df, head=head)),
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
    md = [f"# {title}", "", intro, ""] if intro else [f"# {title}", ""]
    if box:
        md += ["> **Warnings**", ">"] + [f"> - {line}" for line in box] + [""]
    toc = [h for h, _ in lead] + ["Figures", "Full tables"] + [h for h, _ in tail] + ["Provenance"]
    md += ["**Contents:** " + " · ".join(f"[{h}](#{_anchor(h)})" for h in toc), ""]
    for i, (h, body) in enumerate(lead):
        md += [f"## {h}", "", body, ""]
        for f in frontier if i == 0 else []:
            md += [f"### {f.title}", "", f"![{f.title}]({f.file})", "", f"*{f.caption}*", ""]
    md += ["## Figures", ""]
    for f in figs:
        md += [f"### {f.title}", "", f"![{f.title}]({f.file})", "", f"*{f.caption}*", ""]
    md += ["## Full tables", ""]
    for h, body in tables:
        md += [f"### {h}", "", body, ""]
    for h, body in tail:
        md += [f"## {h}", "", body, ""]
    md += ["## Provenance", ""] + [f"- **{k}**: `{v}`" for k, v in prov.items()] + [""]
    md += ["Tables: [table.csv](table.csv) (one row per method and setting), [results.csv](results.csv) "
           "(one row per run × attack × ε).", ""]
    _io.write_text(out / "README.md", "\n".join(md))
    _io.write_text(out / "index.html", _html(title, intro, lead, figs, tables, tail, prov, out, lead_figs=frontier,
                                             box=box))
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
    from ..sweeps.planning import finished_runs

    out: dict[str, list[str]] = {}
    for d in finished_runs(Path(sweep_dir)):
        ev = read_eval(d / "eval.json")
        rows = ev["rows"]
        sanity.check_worst_case(pd.DataFrame(rows).assign(run=d.name), str(d / "eval.json"))
        k = data.NUM_CLASSES.get(str(rows[0].get("dataset", "")))
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
                     + (" (each run's message is under [Warnings](#warnings))" if len(items) > 1 else ""))
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


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;"
        "line-height:1.45}"
        ".scroll{overflow-x:auto;max-width:100%;margin:1em 0}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;"
        "text-align:right;white-space:nowrap}"
        "th{white-space:normal;vertical-align:bottom;background:#f3f3f3;position:sticky;top:0}"
        "tbody tr:nth-child(even){background:#fafafa}"
        "nav.toc{background:#f7f7f7;border:1px solid #e3e3e3;padding:.5em 1em;margin:1em 0}"
        "nav.toc ol{margin:.3em 0;padding-left:1.4em}nav.toc li{margin:.1em 0}"
        "figure{margin:2em 0}figcaption{color:#555;font-style:italic}img{max-width:100%;height:auto}"
        "code{background:#f5f5f5;padding:0 3px;overflow-wrap:anywhere}td code{overflow-wrap:normal}"
        ".warnbox{border:2px solid #c0392b;background:#fdf0ed;padding:.5em 1em;margin:1em 0}"
        ".warnbox ul{margin:.3em 0;padding-left:1.4em}")


def _figure_html(f: Figure, out: Path) -> str:
    b64 = base64.b64encode((out / f.file).read_bytes()).decode()
    return (f'<figure id="{html.escape(f.file)}"><h3 id="{_anchor(f.title)}">{html.escape(f.title)}</h3>'
            f'<img alt="{html.escape(f.title)}" data-file="{html.escape(f.file)}" src="data:image/png;base64,{b64}">'
            f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")


def _html(title: str, intro: str, lead: list[tuple[str, str]], figs: list[Figure], tables: list[tuple[str, str]],
          tail: list[tuple[str, str]], prov: dict[str, Any], out: Path, lead_figs: list[Figure] | None = None,
          box: list[str] | None = None) -> str:
    """The self-contained page: contents, headline (with ``lead_figs``), figures, full tables (scrollable),
    hyperparameters, provenance."""
    toc: list[tuple[str, list[str]]] = ([(h, []) for h, _ in lead] + [("Figures", [f.title for f in figs]),
                                                                       ("Full tables", [h for h, _ in tables])]
           + [(h, []) for h, _ in tail] + [("Provenance", [])])
    body = [f"<h1>{html.escape(title)}</h1>"]
    if box:
        body.append('<div class="warnbox" role="alert"><b>Warnings</b><ul>'
                    + "".join(f"<li>{_md_inline(line)}</li>" for line in box) + "</ul></div>")
    if intro:
        body.append(_md_block(intro))
    items = []
    for h, subs in toc:
        sub = ("<ol>" + "".join(f'<li><a href="#{_anchor(x)}">{html.escape(x)}</a></li>' for x in subs) + "</ol>"
               if subs else "")
        items.append(f'<li><a href="#{_anchor(h)}">{html.escape(h)}</a>{sub}</li>')
    body.append(f'<nav class="toc"><b>Contents</b><ol>{"".join(items)}</ol></nav>')
    for i, (h, text) in enumerate(lead):
        body.append(f'<h2 id="{_anchor(h)}">{html.escape(h)}</h2>{_md_block(text)}')
        body += [_figure_html(f, out) for f in (lead_figs or [] if i == 0 else [])]
    body.append('<h2 id="figures">Figures</h2>')
    body += [_figure_html(f, out) for f in figs]
    body.append('<h2 id="full-tables">Full tables</h2>')
    for h, text in tables:
        body.append(f'<h3 id="{_anchor(h)}">{html.escape(h)}</h3>{_md_block(text)}')
    for h, text in tail:
        body.append(f'<h2 id="{_anchor(h)}">{html.escape(h)}</h2>{_md_block(text)}')
    body.append('<h2 id="provenance">Provenance</h2><ul>' + "".join(
        f"<li><b>{html.escape(k)}</b>: <code>{html.escape(str(v))}</code></li>" for k, v in prov.items()) + "</ul>")
    body.append('<p>Tables: <a href="table.csv">table.csv</a>, <a href="results.csv">results.csv</a>.</p>')
    return (f"<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
