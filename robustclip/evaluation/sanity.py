"""Sanity warnings on results: models near chance, training that did not converge, gradient-masking signs, and
the one invariant that is a bug rather than a warning (a worst case above clean accuracy).

Every check returns plain strings that start with an upper-case tag (``NEAR CHANCE:``, ``NOT CONVERGED:``,
``GRADIENT MASKING?``) so that the same warning found twice (by the evaluation and again by a report reading old
files) is shown once (:func:`dedup`). Accuracies are fractions in [0, 1]; the messages print them in percent.

The gradient-masking checks follow the signs that AutoAttack's ``checks.py`` looks for: outputs that are
probabilities instead of logits, outputs that change between two identical forward passes, and a black-box attack
(Square) beating every white-box attack by more than 0.2 points. The other signs (zero gradients, an ε-curve that
does not fall at a huge ε) live in :func:`robustclip.evaluation.masking.sanity_flags`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..core.modes import eval_mode

NEAR_CHANCE_POINTS = 0.10
"""A model whose clean accuracy is at most ``1/classes`` plus this (10 points) is called near chance."""
LOSS_CHANCE_FRACTION = 0.9
"""A final training loss of at least this fraction of ``ln(classes)`` (the loss of a uniform guess) is near chance."""
FALLING_FAST = 0.05
"""Training has not converged when the loss fell by more than this fraction (5%) in the last epoch."""
SQUARE_MARGIN = 0.002
"""Square beating every white-box attack's accuracy by more than this (0.2 points) hints at gradient masking."""

TAGS = ("NEAR CHANCE:", "NOT CONVERGED:", "GRADIENT MASKING?", "ATTACK MALFUNCTION:")


class ResultBug(AssertionError):
    """Results that cannot be right (e.g. a worst case above clean accuracy): a bug in robustclip, exit status 3."""


def near_chance(clean: float | None, n_classes: int | None, final_loss: float | None = None) -> list[str]:
    """Warnings for a classifier near chance.

    ``clean``: clean accuracy, a fraction in [0, 1] (None: unknown); ``n_classes``: the number of classes (None or
    < 2: no check); ``final_loss``: the last epoch's training cross-entropy in nats (None: unknown). Near chance
    means ``clean <= 1/classes + 0.10`` or ``final_loss >= 0.9 · ln(classes)``.
    """
    if not n_classes or n_classes < 2:
        return []
    chance = 1.0 / n_classes
    why = []
    if clean is not None and math.isfinite(clean) and clean <= chance + NEAR_CHANCE_POINTS:
        why.append(f"clean accuracy {100 * clean:.1f}% (chance is {100 * chance:.1f}%)")
    ln_k = math.log(n_classes)
    if final_loss is not None and math.isfinite(final_loss) and final_loss >= LOSS_CHANCE_FRACTION * ln_k:
        why.append(f"final training loss {final_loss:.3f} (chance is ln {n_classes} = {ln_k:.3f})")
    if not why:
        return []
    return [f"NEAR CHANCE: the model looks untrained: {' and '.join(why)}; its robustness numbers mean nothing -- "
            "train longer or check the learning rate and data"]


def not_converged(losses: Iterable[float | None]) -> list[str]:
    """A warning when the training loss (one value per epoch, in order) still fell by more than 5% in the last
    epoch; nothing with fewer than two finite values."""
    v = [float(x) for x in losses if x is not None and math.isfinite(float(x))]
    if len(v) < 2 or v[-2] <= 0:
        return []
    drop = (v[-2] - v[-1]) / v[-2]
    if drop <= FALLING_FAST:
        return []
    return [f"NOT CONVERGED: the training loss still fell {100 * drop:.0f}% in the last epoch ({v[-2]:.3g} -> "
            f"{v[-1]:.3g}); results describe a model mid-training -- train more epochs"]


def output_checks(model: nn.Module, x: torch.Tensor) -> list[str]:
    """Gradient-masking signs in the outputs of ``model`` on ``x`` ``(N, ...)`` in [0, 1] (a few dozen samples
    suffice): probabilities instead of logits (every row non-negative and summing to 1), and randomised outputs
    (two identical eval-mode passes disagree). The model is left in the mode it was in."""
    flags: list[str] = []
    with eval_mode(model), torch.no_grad():
        a = model(x).double()
        b = model(x).double()
    if a.dim() == 2 and a.shape[1] > 1 and bool((a >= 0).all()) and \
            bool(torch.allclose(a.sum(1), torch.ones_like(a[:, 0]), atol=1e-4)):
        flags.append("GRADIENT MASKING? the model outputs probabilities (rows are non-negative and sum to 1), not "
                     "logits; cross-entropy attacks on a softmax output are weakened -- return the logits")
    if not torch.equal(a, b):
        diff = float((a - b).abs().max())
        flags.append(f"GRADIENT MASKING? the outputs are randomised: two identical clean passes differ by up to "
                     f"{diff:.3g}; attacks on a random model need expectation over transformation (EOT)")
    return flags


def square_beats_whitebox(frame: pd.DataFrame) -> list[str]:
    """A warning per (norm, ε) where a Square attack's accuracy is more than 0.2 points below that of every
    white-box attack in ``frame`` (the tidy evaluation frame, accuracies in [0, 1])."""
    flags: list[str] = []
    if frame.empty or not {"attack", "accuracy", "norm", "eps"} <= set(frame.columns):
        return flags
    atk = frame[~frame.attack.isin(["clean", "clean_full", "noise", "worst_case", "val_clean", "val_worst_case"])
                & ~frame.attack.astype(str).str.startswith("certified")]
    for (norm, eps), g in atk.groupby(["norm", "eps"], sort=False):
        sq = g[g.attack.astype(str).str.contains("square")]
        white = g[~g.attack.astype(str).str.contains("square|noise|fgsm")]
        if sq.empty or white.empty:
            continue
        best_white = float(white.accuracy.min())
        s = float(sq.accuracy.min())
        if s < best_white - SQUARE_MARGIN:
            flags.append(f"GRADIENT MASKING? Square (no gradients) reaches {100 * s:.1f}% at {norm} ε={eps:g}, below "
                         f"every white-box attack (best {100 * best_white:.1f}%); the gradient attacks overstate "
                         "robustness")
    return flags


def check_worst_case(frame: pd.DataFrame, where: str = "results") -> None:
    """Raise :class:`ResultBug` when a ``worst_case`` row of ``frame`` exceeds its model's ``clean`` accuracy.

    ``frame``: tidy rows with ``attack`` and ``accuracy`` (fractions), grouped by ``model`` or ``run`` when present.
    The worst case is taken over clean inputs too, so it can never be above clean: if it is, a number is wrong.
    """
    key = "run" if "run" in frame else "model" if "model" in frame else None
    groups = frame.groupby(key, sort=False) if key else [(None, frame)]
    for name, g in groups:
        clean = g[g.attack == "clean"].accuracy
        wc = g[g.attack == "worst_case"]
        if clean.empty or wc.empty:
            continue
        c = float(clean.iloc[0])
        bad = wc[pd.to_numeric(wc.accuracy, errors="coerce") > c + 1e-9]
        if len(bad):
            r = bad.iloc[0]
            raise ResultBug(f"{where}: {name or 'model'} has worst case {100 * float(r.accuracy):.1f}% at "
                            f"{r.get('norm', '')} ε={r.get('eps', '')} above its clean accuracy {100 * c:.1f}%")


def run_warnings(rows: list[dict[str, Any]], history: list[dict[str, Any]] | None, n_classes: int | None,
                 flags: Iterable[str] = ()) -> list[str]:
    """All warnings for one trained run: its evaluation ``flags`` plus near chance and not converged, computed
    from its result ``rows`` (dicts with ``attack`` and ``accuracy``) and per-epoch ``history`` (``train_loss``),
    without repeats (:func:`dedup`)."""
    clean = next((float(r["accuracy"]) for r in rows if r.get("attack") == "clean" and r.get("accuracy") is not None),
                 None)
    losses = [h.get("train_loss") for h in history or []]
    final = next((float(v) for v in reversed(losses) if v is not None), None)
    return dedup([*flags, *near_chance(clean, n_classes, final), *not_converged(losses)])


def dedup(flags: Iterable[str]) -> list[str]:
    """``flags`` without repeats; of two ``NEAR CHANCE:`` warnings (one from the evaluation, one from the history)
    the longer one, which says more, is kept."""
    out: list[str] = []
    for f in flags:
        if f in out:
            continue
        if f.startswith("NEAR CHANCE:"):
            prev = next((i for i, g in enumerate(out) if g.startswith("NEAR CHANCE:")), None)
            if prev is not None:
                if len(f) > len(out[prev]):
                    out[prev] = f
                continue
        out.append(f)
    return out

