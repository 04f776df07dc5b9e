"""Gradient-masking probes that run attacks of their own: PGD at a huge ε, zero input gradients, weak or black-box
attacks beating the iterative ones (the result-only checks live in :mod:`robustclip.evaluation.sanity`)."""

from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from ..attacks.kinds import ATTACKS, AttackSpec
from ..attacks.suites import Suite
from ..core.devices import device_of as _device_of
from . import sanity as sanity_mod
from .attacking import predict, run_attack


def sanity_flags(model: nn.Module, s: Suite, correct: dict[tuple[str, str | None, float | None], torch.Tensor],
                 x: torch.Tensor, y: torch.Tensor, frame: pd.DataFrame,
                 *, seed: int, batch_size: int, probe: int = 200) -> list[str]:
    """Signs of gradient masking, in the spirit of AutoAttack's checks.

    * accuracy that does not fall toward 0 at a very large ε (PGD, 20 steps,
      L2 ε = 10 / L∞ ε = 0.5 on ``probe`` samples);
    * zero input gradients of the loss on many inputs;
    * random noise or one-step FGSM breaking samples (more than 1%) that every iterative attack at the same
      (norm, ε) left robust;
    * a black-box attack (Square) breaking samples that every gradient attack left robust, or its accuracy more
      than 0.2 points below every white-box attack's (:func:`robustclip.evaluation.sanity.square_beats_whitebox`);
    * probability outputs instead of logits, and randomised outputs
    (:func:`robustclip.evaluation.sanity.output_checks`).

    Near-chance models are flagged by :func:`robustclip.evaluation.runner.evaluate` itself
    (:func:`robustclip.evaluation.sanity.near_chance`).
    """
    flags: list[str] = []
    dev = _device_of(model)
    xs, ys = x[:probe], y[:probe]
    flags += sanity_mod.output_checks(model, xs[:64].to(dev))
    flags += sanity_mod.square_beats_whitebox(frame)
    norms_used = sorted({a.norm for a in s.attacks if a.norm is not None and a.bounded}) or ["L2"]
    big = {"L2": 10.0, "Linf": 0.5}
    for norm in norms_used:
        spec = AttackSpec("pgd", "pgd-huge", norm, big[norm], {"steps": 20})
        ok, _ = run_attack(model, spec, xs, ys, n_classes=int(predict(model, xs[:1]).shape[1]), seed=seed,
                           batch_size=batch_size)
        acc = float(ok.float().mean())
        if acc > 0.15:
            flags.append(f"GRADIENT MASKING? accuracy stays at {acc:.1%} under PGD-{norm} at a huge ε={big[norm]} "
                         "(it should fall toward 0); gradient attacks may be failing")
    xi = xs.to(dev).clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(xi), ys.to(dev), reduction="sum")
    (g,) = torch.autograd.grad(loss, xi)
    zero = float((g.flatten(1).abs().max(dim=1).values == 0).float().mean())
    if zero > 0.1:
        flags.append(f"GRADIENT MASKING? the loss gradient is exactly zero on {zero:.0%} of inputs "
                     "(saturated outputs); gradient-based accuracies overstate robustness")
    for (norm, eps), specs in s.grid().items():
        # per sample: robust to every iterative gradient attack (in a cascade, the survivors of all of them)
        grad_robust = correct[("clean", None, None)].clone()
        iterative = [a for a in specs if ATTACKS[a.type].role == "iterative"]
        for a in iterative:
            grad_robust &= correct[(a.label, norm, eps)]
        n = max(1, grad_robust.numel())
        for a in (b for b in specs if ATTACKS[b.type].role == "weak") if iterative else ():
            missed = int((grad_robust & ~correct[(a.label, norm, eps)]).sum())
            if missed > max(1, 0.01 * n):
                flags.append(f"GRADIENT MASKING? {a.type} beats iterative attacks at {norm} ε={eps}: it broke "
                             f"{missed} samples ({missed / n:.1%}) that every iterative attack left robust")
        for a in (b for b in specs if ATTACKS[b.type].role == "blackbox") if iterative else ():
            missed = int((grad_robust & ~correct[(a.label, norm, eps)]).sum())
            if missed > max(1, 0.005 * n):
                flags.append(f"GRADIENT MASKING? {a.label} (no gradients) broke {missed} samples that every "
                             f"gradient attack missed at {norm} ε={eps}; the gradient attacks' numbers overstate "
                             "robustness")
    return flags
