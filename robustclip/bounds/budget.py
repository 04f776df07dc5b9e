"""How much the Lipschitz lower-bound ascent may cost: a cost model and a budget per ``--lipschitz`` mode.

The ascents of :func:`robustclip.bounds.lipschitz.estimate` (pair ascent on difference quotients, Jacobian power
iteration with double backward) cost about ``points × steps × (one forward pass)`` each, and one forward pass of
a network costs its multiply-accumulates (MACs). :func:`forward_macs` counts a model's MACs per sample (Linear and
Conv layers, from one forward pass on a zero input); :func:`plan_ascent` prices the mode's default settings and, when
they exceed the mode's budget (:data:`BUDGETS`, in MACs), scales the points and steps down to fit.

The plan depends only on the model's architecture and the input shape, never on a clock: the same network gets
the same settings, hence comparable estimates, on every machine and device (the CI gate relies on this). The
paper's MNIST net (784-200-80-10, about 0.17 M MACs per sample) runs unscaled in both modes, so its estimates are
those of every earlier release; a 2-conv, 2-linear strided CNN (about 0.6 M MACs) is scaled to about 40%.

>>> from torch import nn
>>> plan = plan_ascent(nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), (1, 28, 28), "full")
>>> (plan.pairs, plan.steps, plan.scaled)
(64, 50, False)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..core.devices import device_of
from ..core.modes import eval_mode

DEFAULTS: dict[str, dict[str, int]] = {
    "full": {"pairs": 64, "steps": 50, "jac_points": 64, "jac_steps": 10, "jac_iters": 10},
    "fast": {"pairs": 16, "steps": 15, "jac_points": 16, "jac_steps": 10, "jac_iters": 10},
}
"""Unscaled ascent settings per mode (those of every release before the budget existed)."""
BUDGETS: dict[str, float] = {"full": 30e9, "fast": 5e9}
"""Most multiply-accumulates one lower-bound estimate may cost, per mode (30 and 5 GMAC)."""
FLOORS: dict[str, int] = {"pairs": 8, "steps": 5, "jac_points": 8, "jac_steps": 2, "jac_iters": 5}
"""Fewest points and steps a scaled plan keeps (below these an ascent finds little)."""
PASSES_PER_PAIR_STEP = 5.0
"""Forward-pass equivalents per point and step of the pair ascent (a forward and a backward for the gradient, a
forward for the candidate, a forward for the kept quotients; a backward counts as two forwards)."""
PASSES_PER_POWER_ITER = 7.0
"""Forward-pass equivalents per point and power iteration (forward, double backward for ``J v``, ``Jᵀ J v``)."""
PASSES_PER_JAC_STEP = 6.0
"""Forward-pass equivalents per point for the ascent move of the Jacobian norm (a double backward)."""


def leaf_outputs(model: nn.Module, in_shape: tuple[int, ...]) -> list[tuple[nn.Module, tuple[int, ...]]]:
    """Each Linear and Conv layer of ``model`` with its output shape, in call order, for one input of shape
    ``in_shape`` (forward hooks on a zero input, on the model's device, without gradients; the mode is restored)."""
    seen: list[tuple[nn.Module, tuple[int, ...]]] = []

    def hook(mod: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            seen.append((mod, tuple(out.shape)))

    leaves = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with eval_mode(model), torch.no_grad():
            model(torch.zeros((1, *in_shape), device=device_of(model)))
    finally:
        for h in handles:
            h.remove()
    return seen


def forward_macs(model: nn.Module, in_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass of ``model`` on one input of shape ``in_shape`` (Linear and Conv
    layers; elementwise layers are free), from :func:`leaf_outputs`."""
    total = 0
    for mod, shape in leaf_outputs(model, in_shape):
        numel = math.prod(shape)
        if isinstance(mod, nn.Linear):
            total += numel * mod.in_features
        elif isinstance(mod, nn.modules.conv._ConvNd):
            total += numel * (mod.in_channels // mod.groups) * math.prod(mod.kernel_size)
    return max(total, 1)


def settings_cost(macs: int, s: dict[str, int]) -> float:
    """MACs of one lower-bound estimate with settings ``s`` (pair ascent from two inits, then the Jacobian ascent)."""
    pair = 2 * (2 * s["pairs"]) * (s["steps"] * PASSES_PER_PAIR_STEP + 1)
    jac = (s["jac_steps"] + 1) * s["jac_points"] * (s["jac_iters"] * PASSES_PER_POWER_ITER + PASSES_PER_JAC_STEP)
    return float(macs) * (pair + jac)


@dataclass(frozen=True)
class AscentPlan:
    """The settings one lower-bound estimate runs with, and why.

    ``pairs``/``steps``: pair ascent; ``jac_points``/``jac_steps``/``jac_iters``: Jacobian ascent (start points,
    ascent moves, power iterations per move). ``macs``: MACs per sample of the model; ``cost``: MACs of the
    estimate with these settings; ``full_cost``: at the mode's defaults; ``budget``: the mode's budget (MACs).
    """

    mode: str
    pairs: int
    steps: int
    jac_points: int
    jac_steps: int
    jac_iters: int
    macs: int
    cost: float
    full_cost: float
    budget: float

    @property
    def scaled(self) -> bool:
        """True when the settings were cut below the mode's defaults to fit the budget."""
        return self.settings() != DEFAULTS[self.mode]

    def settings(self) -> dict[str, int]:
        """The ascent settings alone (what decides the estimate's numbers besides the model and seed)."""
        return {k: getattr(self, k) for k in DEFAULTS[self.mode]}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the settings, costs and ``scaled``."""
        return {**asdict(self), "scaled": self.scaled}

    def describe(self) -> str:
        """One line for the console: the budget and what it did."""
        head = (f"Lipschitz lower bound ({self.mode}): budget {self.budget / 1e9:.0f} GMAC, this model "
                f"{self.macs / 1e6:.2f} MMAC/sample")
        if not self.scaled:
            return f"{head}, {self.cost / 1e9:.1f} GMAC at the default settings (unscaled)"
        return (f"{head}: the default settings would cost {self.full_cost / 1e9:.1f} GMAC, scaled to {self.pairs} "
                f"pairs x {self.steps} steps and {self.jac_points} Jacobian points x {self.jac_steps} moves x "
                f"{self.jac_iters} power iterations ({self.cost / 1e9:.1f} GMAC)"
                + ("; --lipschitz fast is cheaper still" if self.mode == "full" else "")
                + ("; --lipschitz off skips it" if self.mode == "fast" else ""))


def plan_ascent(model: nn.Module, in_shape: tuple[int, ...], mode: str = "full", *,
                budget: float | None = None) -> AscentPlan:
    """The ascent settings of ``mode`` (``full`` or ``fast``) for ``model`` on inputs ``in_shape``, within budget.

    When the defaults cost more than ``budget`` (default :data:`BUDGETS`), points and steps are cut by the same
    factor ``sqrt(budget / cost)`` each (never below :data:`FLOORS`; the power iterations are cut only when the
    rest sits at its floors). Deterministic in the architecture and input shape.
    """
    if mode not in DEFAULTS:
        raise ValueError(f"unknown Lipschitz mode {mode!r}; use full or fast")
    macs = forward_macs(model, tuple(in_shape))
    cap = float(BUDGETS[mode] if budget is None else budget)
    base = dict(DEFAULTS[mode])
    full_cost = settings_cost(macs, base)
    s = dict(base)
    if full_cost > cap:
        f = math.sqrt(cap / full_cost)
        for key in ("pairs", "steps", "jac_points", "jac_steps"):
            s[key] = max(FLOORS[key], min(base[key], int(base[key] * f)))
        while settings_cost(macs, s) > cap and s["jac_iters"] > FLOORS["jac_iters"]:
            s["jac_iters"] -= 1
    return AscentPlan(mode=mode, macs=macs, cost=settings_cost(macs, s), full_cost=full_cost, budget=cap, **s)


def default_settings(mode: str) -> dict[str, int]:
    """The unscaled settings of ``mode`` (what a baseline without a recorded plan was made with)."""
    return dict(DEFAULTS[mode])
