"""The attack-kind registry: what one suite entry builds (:class:`AttackSpec`) and every attack type the suite
language knows (:data:`ATTACKS`, one :class:`AttackKind` entry each: its settings, builder, label, role and cost)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torchattacks
from torch import nn

from .custom import AuthorsPGDL2, BallNoise


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a suite at one ε: everything needed to build it."""

    type: str
    label: str
    norm: str | None
    eps: float | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def bounded(self) -> bool:
        """True when its outputs lie within ``eps`` (in ``norm``) of the clean input."""
        return self.norm is not None and self.eps is not None

    def build(self, model: nn.Module, *, n_classes: int, seed: int) -> torchattacks.attack.Attack | None:
        """The torchattacks object (None for ``clean``)."""
        return ATTACKS[self.type].build(self, model, n_classes, seed)

    @property
    def restarts(self) -> int:
        """Independent runs with different seeds (for kinds that do not restart internally; else 1)."""
        return int(self.params.get("restarts", 1)) if ATTACKS[self.type].outer_restarts else 1


Builder = Callable[[AttackSpec, nn.Module, int, int], "torchattacks.attack.Attack | None"]


@dataclass(frozen=True)
class AttackKind:
    """One attack type of the suite language: adding an attack is one :data:`ATTACKS` entry.

    ``keys``: the settings a suite may give it (besides ``type``). ``build(spec, model, n_classes, seed)``: the
    torchattacks object. ``label(params)``: its default row label. ``outer_restarts``: the evaluation repeats it
    ``restarts`` times with new seeds (kinds that restart internally, like APGD, say False). ``role``: ``weak``
    (a baseline that must not beat the iterative attacks, else gradients are masked), ``iterative`` (a strong
    gradient attack), ``blackbox`` (a query attack without gradients: breaking what the gradient attacks could not
    is a sign of gradient masking), or ``other``. ``cost(params)``: model evaluations per sample it spends, restarts
    included (for the suite's budget cap).
    """

    keys: frozenset[str]
    build: Builder
    label: Callable[[dict[str, Any]], str] | None = None
    outer_restarts: bool = False
    role: str = "other"
    cost: Callable[[dict[str, Any]], int] = lambda p: int(p.get("steps", 1)) * int(p.get("restarts", 1))


def _pgd(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    eps = float(s.eps or 0.0)
    steps = s.params.get("steps", 50)
    cls = torchattacks.PGD if s.norm == "Linf" else torchattacks.PGDL2
    return cls(m, eps=eps, alpha=s.params.get("step_size", 2.5 * eps / steps), steps=steps, random_start=True)


def _fgsm(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    if s.norm == "Linf":
        return torchattacks.FGSM(m, eps=s.eps)
    return torchattacks.PGDL2(m, eps=s.eps, alpha=s.eps, steps=1, random_start=False)


def _noise(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    if "sigma" in s.params:
        return torchattacks.GN(m, std=s.params["sigma"])
    return BallNoise(m, eps=float(s.eps or 0.0), norm=s.norm or "L2")


def _apgd(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    return torchattacks.APGD(m, norm=s.norm, eps=s.eps, steps=s.params.get("steps", 100),
                             n_restarts=s.params.get("restarts", 1), seed=seed, loss=s.params.get("loss", "ce"))


TARGETS = 9
"""Target classes of the targeted attacks (APGD-T, FAB-T), as AutoAttack's standard version: the 9 classes with
the highest logits after the true one (fewer when the model has fewer than 10 classes)."""


def _target_arg(k: int) -> int:
    """torchattacks' ``n_classes`` argument of its targeted attacks: they attack ``n_classes - 1`` targets."""
    return min(TARGETS, k - 1) + 1


def _apgdt(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    return torchattacks.APGDT(m, norm=s.norm, eps=s.eps, steps=s.params.get("steps", 100),
                              n_restarts=s.params.get("restarts", 1), seed=seed, n_classes=_target_arg(k))


def _fabt(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    # multi_targeted: for each of the top-9 wrong classes in turn, FAB searches the closest boundary to it
    return torchattacks.FAB(m, norm=s.norm, eps=s.eps, steps=s.params.get("steps", 100),
                            n_restarts=s.params.get("restarts", 1), seed=seed, multi_targeted=True,
                            n_classes=_target_arg(k))


def _autoattack(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    return torchattacks.AutoAttack(m, norm=s.norm, eps=s.eps, version=s.params.get("version", "standard"),
                                   n_classes=_target_arg(k), seed=seed)


def _square(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    return torchattacks.Square(m, norm=s.norm, eps=s.eps, n_queries=s.params.get("n_queries", 5000),
                               n_restarts=s.params.get("restarts", 1), p_init=s.params.get("p_init", 0.8),
                               resc_schedule=s.params.get("rescale_schedule", True), seed=seed)


def _authors_pgd(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    return AuthorsPGDL2(m, eps=float(s.eps or 0.0), alpha=s.params.get("step_size", 0.5),
                        steps=s.params.get("steps", 100))


def _keys(*names: str) -> frozenset[str]:
    return frozenset({"label", *names})


def _steps(default: int, targets: int = 1) -> Callable[[dict[str, Any]], int]:
    return lambda p: int(p.get("steps", default)) * int(p.get("restarts", 1)) * targets


ATTACKS: dict[str, AttackKind] = {
    "clean": AttackKind(_keys(), lambda s, m, k, seed: None, cost=lambda p: 0),
    "noise": AttackKind(_keys("sigma", "norm", "eps", "samples"), _noise, role="weak",
                        cost=lambda p: int(p.get("samples", 1))),
    "fgsm": AttackKind(_keys("norm", "eps"), _fgsm, role="weak", cost=lambda p: 1),
    "pgd": AttackKind(_keys("norm", "eps", "steps", "step_size", "restarts"), _pgd, outer_restarts=True,
                      role="iterative", cost=_steps(50)),
    "apgd": AttackKind(_keys("norm", "eps", "steps", "restarts", "loss"), _apgd,
                       label=lambda p: f"apgd-{p.get('loss', 'ce')}", role="iterative", cost=_steps(100)),
    "apgdt": AttackKind(_keys("norm", "eps", "steps", "restarts"), _apgdt, role="iterative",
                        cost=_steps(100, targets=TARGETS)),
    # FAB-T: per target, one forward and one backward pass per step (plus a few for the final search)
    "fabt": AttackKind(_keys("norm", "eps", "steps", "restarts"), _fabt, role="iterative",
                       cost=_steps(100, targets=TARGETS)),
    # APGD-CE + APGD-T (9 targets) + FAB-T + Square (5,000 queries), rounded up
    "autoattack": AttackKind(_keys("norm", "eps", "version"), _autoattack, role="iterative",
                             cost=lambda p: 10_000),
    "square": AttackKind(_keys("norm", "eps", "n_queries", "restarts", "p_init", "rescale_schedule"), _square,
                         role="blackbox",
                         cost=lambda p: int(p.get("n_queries", 5000)) * int(p.get("restarts", 1))),
    "authors_pgd": AttackKind(_keys("norm", "eps", "steps", "step_size", "restarts"), _authors_pgd,
                              outer_restarts=True, role="iterative", cost=_steps(100)),
}
ATTACK_TYPES = tuple(ATTACKS)


def attack_cost(a: AttackSpec) -> int:
    """Gradient steps (or forward passes, or queries) one attack spends per sample, restarts included."""
    return int(ATTACKS[a.type].cost(a.params))
