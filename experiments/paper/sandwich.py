"""The paper report's sandwich: attacked and certified accuracy against L2 ε for every committed checkpoint.

Every ``*.safetensors`` under ``reports/paper/checkpoints/`` is on the figure and in the table: the ones the sweep
chooses (plain, weight regularisation, CLIP, adversarial training, CLIP + adversarial training) and the ones other
scripts make (certified training: ``benchmarks/certified_training.py``, and its CLIP hybrid:
``benchmarks/clip_in_certified_training.py``), in :data:`ORDER`. This module names them, writes the section's text
and describes the checkpoints that do not come from the sweep; ``experiment.py`` evaluates them (cached).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from robustclip.core.results import markdown_table

TITLE = "Attacked and certified accuracy against ε"
"""The heading of the sandwich section in the report."""

ORDER = ("mnist-plain-best", "mnist-weight-best", "mnist-clip-best", "mnist-adversarial-best",
         "mnist-clip-adversarial-best", "mnist-certified-best", "mnist-clip-certified-best")
"""The committed checkpoints in the order of the figure's legend and the table; others follow by name."""

MADE_BY = {"mnist-certified-best": "benchmarks/certified_training.py",
           "mnist-clip-certified-best": "benchmarks/clip_in_certified_training.py"}
"""The scripts that make the committed checkpoints the sweep does not choose."""


def committed(ckpt_dir: Path, picks: dict[str, str] | None = None) -> dict[str, Path]:
    """Every committed checkpoint, ``{name: path}`` in :data:`ORDER`: the sweep's ``picks`` (name → run id) and every
    other ``*.safetensors`` in ``ckpt_dir``."""
    names = set(picks or {}) | {p.stem for p in ckpt_dir.glob("*.safetensors")}
    rank = {n: i for i, n in enumerate(ORDER)}
    return {n: ckpt_dir / f"{n}.safetensors" for n in sorted(names, key=lambda n: (rank.get(n, len(ORDER)), n))}


def origin(path: Path) -> str:
    """How a checkpoint that the sweep did not choose was trained, from its own metadata: method, model and epochs."""
    from robustclip.checkpoints import format as checkpoints

    meta = checkpoints.read_meta(path)
    train = meta.get("train") or {}
    spec = meta.get("model") or {}
    model = spec.get("arch", "?") + (f" ({spec['activation']})" if spec.get("activation") else "")
    made = MADE_BY.get(path.stem)
    return (f"not from the sweep: `{train.get('reg', '?')}`, {model} net, {train.get('epochs_run', '?')} epochs "
            f"(epoch {train.get('best_epoch', '?')} kept on validation), {float(train.get('seconds', 0)) / 60:.1f} "
            "minutes of training" + (f"; made by `{made}`" if made else ""))


def section_text(rows: pd.DataFrame, suite_name: str) -> str:
    """The section beside the figure: per committed checkpoint, clean accuracy and, per L2 ε, the worst case over
    the suite's attacks / the certified accuracy (in %), then which sound methods certified each model.

    ``rows``: tidy rows of ``experiment.evaluate_cached`` (``model`` = checkpoint name, ``seconds`` its wall time).
    """
    models = list(dict.fromkeys(rows.model))
    wc = rows[(rows.attack == "worst_case") & (rows.norm == "L2")].pivot_table(index="model", columns="eps",
                                                                                values="accuracy")
    cert = rows[(rows.attack == "certified") & (rows.norm == "L2")].pivot_table(index="model", columns="eps",
                                                                                values="accuracy")
    clean = rows[rows.attack == "clean"].drop_duplicates("model").set_index("model").accuracy
    eps = sorted(set(wc.columns) | set(cert.columns))
    t = pd.DataFrame({"model": models, "clean": [_pct(clean.get(m)) for m in models]})
    for e in eps:
        t[f"ε={e:g}"] = [f"{_cell(wc, m, e)} / {_cell(cert, m, e)}" for m in models]
    n = int(rows.n.max()) if len(rows) else 0
    secs = rows.groupby("model", sort=False)["seconds"].first() if "seconds" in rows else pd.Series(dtype=float)
    timing = ("" if secs.empty else " Attacking and certifying took " + ", ".join(
        f"{s:.0f} s ({m})" for m, s in secs.items()) + f" ({torch.get_num_threads()} torch threads).")
    methods = {m: sorted(a.removeprefix("certified-") for a in set(rows[rows.model == m].attack)
                         if a.startswith("certified-")) for m in models}
    lip_only = [m for m in models if methods[m] == ["lipschitz"]]
    how = ("" if not lip_only else " Certified by per-class-pair Lipschitz margins only (CROWN here relaxes "
           "elementwise activations of MLPs and declines these models): " + ", ".join(f"`{m}`" for m in lip_only)
           + ".")
    return (f"Every committed checkpoint on the first {n:,} test images under `attacks/{suite_name}.toml`: clean "
            "accuracy, then per L2 ε the worst case over its attacks (an upper bound on robust accuracy) / the "
            "accuracy certified by the best sound method, per-class-pair Lipschitz margins or CROWN per sample (a "
            "lower bound), in %. The true robust accuracy lies between the two. GloRo nets report 62.8% certified at "
            f"ε = 1.58 on MNIST with a larger network built for certification.{how}{timing}\n\n"
            + markdown_table(t, list(t.columns), lambda r, c: str(r[c])))


def checkpoints_text(picks: dict[str, str], paths: dict[str, Path]) -> str:
    """The "Checkpoints" section: each committed checkpoint, the sweep run it comes from (or how it was made), and
    the command that re-evaluates it."""
    lines = []
    for name, path in paths.items():
        where = f"run `{picks[name]}`" if name in picks else origin(path)
        suite = "paper-mnist" if name in picks else "certify-l2"
        lines.append(f"- `checkpoints/{name}.safetensors`: {where}; re-evaluate with `robustclip evaluate "
                     f"reports/paper/checkpoints/{name}.safetensors --suite attacks/{suite}.toml --out runs/re-eval`")
    return "\n".join(lines)


def _cell(t: pd.DataFrame, model: str, eps: float) -> str:
    return _pct(t.loc[model, eps]) if model in t.index and eps in t.columns else ""


def _pct(v: float | None) -> str:
    return "" if v is None or pd.isna(v) else f"{100 * v:.1f}"
