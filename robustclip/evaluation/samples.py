"""Per-sample outcomes of an evaluation: a tidy table, robust accuracy per class, and the adversarial examples.

The table has one row per (sample, norm, ε) of the suite's grid (one row per sample when the suite has no
norm-bounded attack), with the columns of :data:`SAMPLE_COLUMNS`:

* ``sample``: index into the evaluated inputs; ``label``, ``prediction``: true and clean predicted class;
* ``clean_correct``; ``robust``: correct under every attack at this norm and every ε up to this one (the worst
  case); ``broken_by``: the first attack in suite order that broke it, at the smallest ε ("clean" when the
  clean input is already wrong, empty when robust, which pandas reads from the CSV as NaN); ``broken_at_eps``:
  that ε (0 for "clean", NaN when robust);
* ``certified``: proven robust at this ε by any certification method asked for;
  ``certified_radius``: the radius in this norm the global Lipschitz margin proves, ``min_j (f_y − f_j) / L_yj``
  (L2; divided by ``√d`` for L∞), NaN where no sound Lipschitz certificate exists (CROWN's radius is not
  searched here);
* ``min_adv_norm``: the smallest perturbation norm (in this norm) of an attack output that fooled the model,
  over every attack and ε; NaN if none did.

pandas reads it in one line: ``pd.read_csv("samples.csv")``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..attacks.suites import Suite
from ..core import files as _io

SAMPLE_COLUMNS = ["sample", "label", "prediction", "clean_correct", "norm", "eps", "robust", "broken_by",
                  "broken_at_eps", "certified", "certified_radius", "min_adv_norm"]
Key = tuple[str, "str | None", "float | None"]


def lipschitz_radius(logits: torch.Tensor, y: torch.Tensor, pairs: torch.Tensor, *, margin_tol: float = 1e-5
                     ) -> torch.Tensor:
    """Certified L2 radius ``(N,)`` float64 from per-class-pair constants: ``min_{j≠y} (f_y − f_j − tol) / L_yj``.

    ``logits``: ``(N, K)``; ``y``: ``(N,)``; ``pairs``: ``(K, K)`` upper bounds on the L2 Lipschitz constants of
    ``f_y − f_j``. 0 for misclassified samples. Consistent with
    :func:`robustclip.bounds.certify.lipschitz_certified`: a sample is certified at radius r only if r < its radius.
    """
    lg = logits.double().cpu()
    yc = y.cpu().long()
    gap = lg.gather(1, yc.view(-1, 1)) - lg - margin_tol  # (N, K)
    L = pairs.double()[yc]
    r = torch.where(L > 0, gap / L.clamp_min(1e-300), torch.where(gap > 0, math.inf, 0.0))
    r[torch.arange(lg.shape[0]), yc] = math.inf
    out = r.min(dim=1).values.clamp_min(0.0)
    return torch.where(lg.argmax(1) == yc, out, torch.zeros_like(out))


def frame(s: Suite, correct: dict[Key, torch.Tensor], logits: torch.Tensor, y: torch.Tensor,
          certified: dict[tuple[str, float], torch.Tensor], norms: dict[Key, torch.Tensor],
          radius_l2: torch.Tensor | None, dim: int) -> pd.DataFrame:
    """The tidy per-sample table (see the module docstring).

    ``correct``: per attack key ``(label, norm, ε)``, bool ``(N,)``; ``certified``: per (norm, ε) cell, the union
    over methods; ``norms``: per attack key, float ``(N,)`` perturbation norms of fooling outputs (NaN
    elsewhere); ``radius_l2``: ``(N,)`` or None; ``dim``: input size per sample (for the L∞ radius).
    """
    n = int(y.shape[0])
    yc = y.cpu().long()
    pred = logits.argmax(1).cpu()
    clean_ok = correct[("clean", None, None)].cpu()
    base = {"sample": torch.arange(n).numpy(), "label": yc.numpy(), "prediction": pred.numpy(),
            "clean_correct": clean_ok.numpy()}
    grid = s.grid()
    parts: list[pd.DataFrame] = []
    nan = torch.full((n,), math.nan, dtype=torch.float64)
    for norm in ("L2", "Linf"):
        cells = sorted(e for (nm, e) in grid if nm == norm)
        if not cells:
            continue
        found = [v for (a, nm, e), v in norms.items() if nm == norm]
        min_adv = torch.stack(found).nan_to_num(math.inf).min(dim=0).values if found else nan.clone()
        min_adv = torch.where(torch.isinf(min_adv), nan, min_adv)
        radius = nan if radius_l2 is None else (radius_l2 if norm == "L2" else radius_l2 / math.sqrt(dim))
        running = clean_ok.clone()
        by = ["" if ok else "clean" for ok in clean_ok.tolist()]
        at = [math.nan if ok else 0.0 for ok in clean_ok.tolist()]
        for eps in cells:
            for a in grid[(norm, eps)]:
                fooled = running & ~correct[(a.label, norm, eps)].cpu()
                for i in fooled.nonzero().flatten().tolist():
                    by[i], at[i] = a.label, eps
                running &= ~fooled
            cert = certified.get((norm, eps))
            parts.append(pd.DataFrame({**base, "norm": norm, "eps": eps, "robust": running.numpy().copy(),
                                       "broken_by": list(by), "broken_at_eps": list(at),
                                       "certified": (cert.cpu() & clean_ok).numpy() if cert is not None
                                       else torch.zeros(n, dtype=torch.bool).numpy(),
                                       "certified_radius": radius.numpy(), "min_adv_norm": min_adv.numpy()}))
    if not parts:
        parts.append(pd.DataFrame({**base, "norm": "none", "eps": 0.0, "robust": clean_ok.numpy(),
                                   "broken_by": ["" if ok else "clean" for ok in clean_ok.tolist()],
                                   "broken_at_eps": [math.nan if ok else 0.0 for ok in clean_ok.tolist()],
                                   "certified": torch.zeros(n, dtype=torch.bool).numpy(),
                                   "certified_radius": nan.numpy(), "min_adv_norm": nan.numpy()}))
    out = pd.concat(parts, ignore_index=True)[SAMPLE_COLUMNS]
    return out.sort_values(["sample", "norm", "eps"], kind="stable").reset_index(drop=True)


def per_class(samples: pd.DataFrame, headline: tuple[str, float] | None) -> list[dict[str, Any]]:
    """Accuracy per true class: ``n``, ``clean`` and, per (norm, ε) of the grid, ``robust`` (fractions).

    One dict per class present, sorted by class: ``{"class", "n", "clean", "robust": {"L2|1.0": acc, ...},
    "headline": acc at the suite's headline (norm, ε) or None}``.
    """
    rows: list[dict[str, Any]] = []
    first = samples.drop_duplicates("sample")
    cells = samples[samples.norm != "none"]
    for c, grp in first.groupby("label", sort=True):
        ids = set(grp["sample"].tolist())
        mine = cells[cells["sample"].isin(ids)]
        robust = {f"{nm}|{e}": float(g["robust"].mean()) for (nm, e), g in mine.groupby(["norm", "eps"], sort=True)}
        head = robust.get(f"{headline[0]}|{headline[1]}") if headline else None
        rows.append({"class": int(c), "n": int(len(grp)), "clean": float(grp["clean_correct"].mean()),
                     "robust": robust, "headline": head})
    return rows


def per_class_table(rows: list[dict[str, Any]], headline: tuple[str, float] | None) -> str:
    """A plain-text table of clean and headline robust accuracy per class (percent)."""
    head = f"robust {headline[0]} ε={headline[1]:g}" if headline else "robust"
    lines = [f"{'class':>5}  {'n':>6}  {'clean':>7}  {head}"]
    for r in rows:
        rob = "-" if r["headline"] is None else f"{100 * r['headline']:.1f}%"
        lines.append(f"{r['class']:>5}  {r['n']:>6}  {100 * r['clean']:>6.1f}%  {rob}")
    return "\n".join(lines)


def save_adversarial(path: str | Path, adversarial: list[tuple[int, str, str, float, torch.Tensor]], *,
                     sample_shape: tuple[int, ...], model: str, suite: str) -> int:
    """Write adversarial examples to a safetensors file; return how many.

    ``adversarial``: ``(sample index, attack label, norm, ε, example (...))`` per example. The file holds
    ``x_adv`` ``(M, ...)`` float32 in [0,1], ``sample`` int64 ``(M,)``, ``eps`` float64 ``(M,)``, ``attack`` and
    ``norm`` int64 ``(M,)`` indices into the JSON lists ``attacks`` and ``norms`` of its metadata (which also
    names the model and suite). Written atomically (a temporary file renamed into place).
    """
    from safetensors.torch import save

    attacks = sorted({a for _, a, _, _, _ in adversarial})
    norms = sorted({nm for _, _, nm, _, _ in adversarial})
    m = len(adversarial)
    x = (torch.stack([t.float() for *_, t in adversarial]) if m else torch.zeros((0, *sample_shape)))
    tensors = {"x_adv": x.contiguous(),
               "sample": torch.tensor([i for i, *_ in adversarial], dtype=torch.int64),
               "attack": torch.tensor([attacks.index(a) for _, a, _, _, _ in adversarial], dtype=torch.int64),
               "norm": torch.tensor([norms.index(nm) for _, _, nm, _, _ in adversarial], dtype=torch.int64),
               "eps": torch.tensor([e for _, _, _, e, _ in adversarial], dtype=torch.float64)}
    meta = {"attacks": json.dumps(attacks), "norms": json.dumps(norms), "model": model, "suite": suite,
            "format": "robustclip adversarial examples v1"}
    # serialised in memory, then the one atomic writer: a full disk is a one-line OutputError, never a partial file
    _io.write_bytes(path, save(tensors, metadata=meta))
    return m
