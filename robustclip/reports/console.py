"""Console tables of evaluation results that fit the terminal: one row per model and ε with the columns that matter.

The command line prints accuracies in percent (the Python API returns fractions in [0, 1]); the per-attack
details go behind ``--verbose`` and into the result files. Tables are cut to the terminal's width
(:func:`shutil.get_terminal_size`): long model names are shortened, and a wide verbose table is wrapped into
blocks of columns.
"""

from __future__ import annotations

import shutil

import pandas as pd

UNITS_NOTE = "accuracies in % (the Python API returns fractions in [0, 1])"


def width() -> int:
    """The terminal's width in characters (80 when unknown, at least 40)."""
    return max(40, shutil.get_terminal_size((80, 24)).columns)


def _pct(v: object) -> str:
    return "" if v is None or pd.isna(v) else f"{100 * float(v):.1f}"  # type: ignore[arg-type]


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, norm, ε) of a tidy evaluation frame (accuracies as fractions): ``clean``, ``worst case``
    and, where the frame has them, ``certified`` and ``noise``, all in percent as strings. A model evaluated
    without norm-bounded attacks gets one row with its clean accuracy."""
    recs: list[dict[str, str]] = []
    has_cert = bool((frame.attack == "certified").any())
    for model, g in frame.groupby("model", sort=False):
        clean = g[g.attack == "clean"].accuracy
        c = _pct(clean.iloc[0]) if len(clean) else ""
        wc = g[g.attack == "worst_case"].sort_values(["norm", "eps"])
        if wc.empty:
            recs.append({"model": str(model), "norm": "", "ε": "", "clean": c, "worst case": ""})
            continue
        for _, r in wc.iterrows():
            rec = {"model": str(model), "norm": str(r["norm"]), "ε": f"{float(r['eps']):g}", "clean": c,
                   "worst case": _pct(r["accuracy"])}
            if has_cert:
                cert = g[(g.attack == "certified") & (g.norm == r["norm"]) & ((g.eps - r["eps"]).abs() < 1e-9)]
                rec["certified"] = _pct(cert.accuracy.iloc[0]) if len(cert) else ""
            recs.append(rec)
    return pd.DataFrame(recs)


def shorten(text: str, room: int) -> str:
    """``text`` cut to ``room`` characters with ``…`` in the middle (both ends say the most about a name)."""
    if len(text) <= room:
        return text
    keep = max(room, 3) - 1
    return text[: keep // 2] + "…" + text[len(text) - (keep - keep // 2):]


def fit(text_table: pd.DataFrame, cols: int | None = None, name_col: str = "model") -> str:
    """``text_table`` (string cells) as aligned text no wider than ``cols`` (default: the terminal): the
    ``name_col`` column is shortened (``…`` in the middle) when the rest would not fit; a table too wide even then
    is wrapped into blocks of columns."""
    cols = cols or width()
    t = text_table.copy()
    text = t.to_string(index=False, justify="left")
    excess = max((len(x) for x in text.splitlines()), default=0) - cols
    if excess > 0 and name_col in t and len(t):
        room = max(8, int(t[name_col].map(len).max()) - excess)
        t[name_col] = [shorten(v, room) for v in t[name_col]]
        text = t.to_string(index=False, justify="left")
    if max((len(x) for x in text.splitlines()), default=0) > cols:
        text = t.to_string(index=False, justify="left", line_width=cols)
    return text


def table(frame: pd.DataFrame, *, verbose: bool = False, cols: int | None = None) -> str:
    """The console table of a tidy evaluation frame: :func:`summary` rows, or with ``verbose`` every attack and ε
    (one row per model, wrapped to the terminal width); the first line states the units."""
    if verbose:
        blocks, w = [], cols or width()
        for (model, norm), g in frame.groupby(["model", "norm"], sort=False):
            if norm == "none":
                blocks.append(shorten(f"{model}: " + ", ".join(f"{a} {100 * float(v):.1f}" for a, v in
                                                                zip(g.attack, g.accuracy)), w))
                continue
            piv = g.pivot_table(index="attack", columns="eps", values="accuracy", sort=False)
            piv.columns = [f"ε={e:g}" for e in piv.columns]
            piv.index.name = None
            blocks.append(shorten(f"{model} ({norm})", w) + "\n" + (piv * 100).round(1).to_string(line_width=w))
        body = "\n\n".join(blocks)
    else:
        body = fit(summary(frame), cols)
    return f"{UNITS_NOTE}\n{body}"
