"""The summary of an evaluation: the tidy frame (one row per attack, norm and ε, with Wilson intervals), the
per-sample worst case and certified rows, and the invariant certified ≤ worst case checked per sample."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from ..attacks.suites import Suite
from ..stats import wilson

COLUMNS = ["model", "dataset", "attack", "norm", "eps", "accuracy", "n", "ci_low", "ci_high"]


class InvariantError(AssertionError):
    """A sample certified robust was broken by an attack: a certificate (or an attack's check) is wrong."""


def first_breaks(per_sample: pd.DataFrame, kept: dict[tuple[str, str | None, float | None], dict[int, torch.Tensor]]
                  ) -> list[tuple[int, str, str, float, torch.Tensor]]:
    """The kept adversarial example of each sample's ``broken_by`` attack at ``broken_at_eps``, once per norm."""
    out: list[tuple[int, str, str, float, torch.Tensor]] = []
    rows = per_sample[(per_sample.broken_by != "") & (per_sample.broken_by != "clean")]
    for i, a, nm, e in rows.drop_duplicates(["sample", "norm"])[["sample", "broken_by", "norm",
                                                                  "broken_at_eps"]].itertuples(index=False):
        t = kept.get((str(a), str(nm), float(e)), {}).get(int(i))
        if t is not None:
            out.append((int(i), str(a), str(nm), float(e), t))
    return out


def worst_case_masks(s: Suite, correct: dict[tuple[str, str | None, float | None], torch.Tensor], *,
                     partial: bool = False) -> dict[tuple[str, float], torch.Tensor]:
    """Per (norm, ε) cell of the suite, bool ``(N,)``: classified right clean and by every attack at every ε' ≤ ε of
    that norm (the per-sample worst case; a sample broken at a smaller ε is broken at a larger one too).

    ``partial``: some attacks have not run yet (their rows are missing from ``correct``); the masks then hold the
    samples no attack broke so far."""
    out: dict[tuple[str, float], torch.Tensor] = {}
    for norm in ("L2", "Linf"):
        running = correct[("clean", None, None)].clone()
        for eps in sorted(e for (nm, e) in s.grid() if nm == norm):
            for a in s.grid()[(norm, eps)]:
                key = (a.label, norm, eps)
                if partial and key not in correct:
                    continue
                running &= correct[key]
            out[(norm, eps)] = running.clone()
    return out


def summarise(s: Suite, correct: dict[tuple[str, str | None, float | None], torch.Tensor], logits: torch.Tensor,
               y: torch.Tensor, cert: dict[str, dict[tuple[str, float], torch.Tensor]], model_name: str,
               dataset: str, *, per_method: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """The tidy frame and flags. ``cert``: per-method certificates
    (see :func:`robustclip.evaluation.certification.certificates`).

    Raises :class:`InvariantError` when a certified sample was broken by an
    attack at the same or a smaller ε: certified ≤ worst case must hold per sample.
    """
    n = int(y.shape[0])
    rows: list[dict[str, Any]] = []
    flags: list[str] = []

    def add(attack: str, norm: str | None, eps: float | None, ok: torch.Tensor) -> None:
        k = int(ok.sum())
        lo, hi = wilson(k, n)
        rows.append({"model": model_name, "dataset": dataset, "attack": attack, "norm": norm or "none",
                     "eps": float(eps) if eps is not None else 0.0, "accuracy": k / n if n else float("nan"),
                     "n": n, "ci_low": lo, "ci_high": hi})

    clean_ok = correct[("clean", None, None)]
    add("clean", None, None, clean_ok)
    for (label, norm, eps), ok in correct.items():
        if label != "clean":
            add(label, norm, eps, ok)
    robust = worst_case_masks(s, correct)
    for norm in ("L2", "Linf"):
        for eps in sorted(e for (nm, e) in s.grid() if nm == norm):
            running = robust[(norm, eps)]
            add("worst_case", norm, eps, running)
            if not cert:
                continue
            best = torch.zeros(n, dtype=torch.bool)
            for method, got in cert.items():
                ok = clean_ok & got[(norm, eps)].cpu()
                broken = ok & ~running
                if bool(broken.any()):
                    i = int(broken.nonzero()[0])
                    raise InvariantError(f"{int(broken.sum())} samples (first: index {i}) certified by {method} at "
                                         f"{norm} ε={eps} but broken by an attack at ε ≤ {eps}; a certificate "
                                         "or an attack's ε check is wrong")
                best |= ok
            add("certified", norm, eps, best)
            if per_method:
                for method, got in cert.items():
                    add(f"certified-{method}", norm, eps, clean_ok & got[(norm, eps)].cpu())
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame, flags
