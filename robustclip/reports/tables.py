"""Reports' tables: a sweep's checked results, statistics over seeds (mean, sample std, 95% t-interval) and the summary,
headline and hyperparameter tables."""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
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
    (:func:`robustclip.sweeps.records.verify_run`; an edited ``eval.json`` is refused, naming it), then ``eval.json``'s
    content (:func:`read_eval`). A bad one stops the report with a one-line error, never a KeyError and never a
    silently dropped seed or edited number.
    """
    from ..sweeps.records import finished_runs, gather, read_info, verify_run

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


def _exp(df: pd.DataFrame) -> str:
    """The column that tells experiments apart (``experiment`` when the sweep recorded it)."""
    return "experiment" if "experiment" in df else "dataset"


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
