"""How long an evaluation will take, from a short timed probe, and what would make it cheaper.

:func:`probe_rate` times a few forward and backward passes of the model on real inputs (well under a second) and
returns its speed in multiply-accumulates per second on this machine and device. :func:`estimate_seconds` prices
the suite's attacks (per attack: samples x steps x restarts x a forward and a backward pass; gradient-free
Square: one forward per query) and the Lipschitz ascent (its plan's MACs) at that speed. The figure is an upper
estimate for cascaded suites (later attacks see only the samples still robust) and leaves out the upper bound and
certificates. :func:`advice` is the line printed before long work.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from ..bounds.budget import forward_macs
from ..core.devices import device_of
from ..core.modes import eval_mode

LONG = 20.0
"""Seconds from which an evaluation counts as long work (the estimate is printed)."""


def probe_rate(model: nn.Module, x: torch.Tensor, *, batch: int = 64, reps: int = 3) -> float:
    """Multiply-accumulates per second of forward plus backward passes of ``model`` on inputs ``x`` ``(N, ...)``
    in [0,1] (the first ``batch`` of them, ``reps`` timed passes after one warm-up)."""
    dev = device_of(model)
    xb = x[:batch].to(dev).clone().requires_grad_(True)
    macs = forward_macs(model, tuple(x.shape[1:])) * xb.shape[0] * 3  # a backward costs about two forwards
    try:
        with eval_mode(model):
            model(xb).sum().backward()  # warm-up
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            t0 = time.perf_counter()
            for _ in range(reps):
                model(xb).sum().backward()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            secs = max(time.perf_counter() - t0, 1e-6)
    finally:
        model.zero_grad(set_to_none=True)
    return macs * reps / secs


def attack_passes(spec: Any) -> float:
    """Forward-plus-backward passes per sample of one attack (Square: forward passes per query, counted as a third)."""
    if spec.type == "clean":
        return 0.0
    if "n_queries" in spec.params:
        return float(spec.params["n_queries"]) / 3.0
    steps = float(spec.params.get("steps", 1))
    return steps * float(spec.restarts) * float(spec.params.get("n_restarts", 1))


def estimate_seconds(model: nn.Module, suite: Any, n: int, rate: float, in_shape: tuple[int, ...],
                     plan: Any = None) -> dict[str, float]:
    """``{"attacks": s, "lipschitz": s, "total": s}``: the estimated wall time of an evaluation of ``n`` samples
    under ``suite`` at ``rate`` MAC/s (from :func:`probe_rate`), with the Lipschitz ascent of ``plan``."""
    macs = forward_macs(model, in_shape) * 3
    attacks = sum(attack_passes(a) for a in suite.attacks) * n * macs / rate
    lip = 0.0 if plan is None else float(plan.cost) / rate
    return {"attacks": attacks, "lipschitz": lip, "total": attacks + lip}


def advice(est: dict[str, float], *, n: int, lipschitz: str) -> str:
    """The line printed before long work: the estimate and the settings that would make it cheaper."""
    cheaper = [f"--n {max(n // 5, 1)} (fewer images)"]
    if lipschitz == "full":
        cheaper.append("--lipschitz fast")
    if lipschitz != "off":
        cheaper.append("--lipschitz off")
    return (f"estimated time: about {est['total']:.0f} s (attacks {est['attacks']:.0f} s on {n} images, Lipschitz "
            f"ascent {est['lipschitz']:.0f} s; upper bound and certificates extra) from a timed probe; cheaper: "
            + ", ".join(cheaper))
