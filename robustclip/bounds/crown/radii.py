"""Graph CROWN per sample batch: margins at one radius, and certificates at several radii from the smallest up.

CROWN's margins only shrink as the ball grows, so a sample not certified at a radius is not tried at any larger one
of the same norm (it would fail there too; skipping it can only leave a certificate out, never add a false one). On
the 2C2F nets of ``benchmarks/crown_cnn.py`` this did far less work than going from the largest radius down and
reusing its bounds (as an earlier version did), which certified one sample more of 1000 at the smallest radius of the
ReLU net (the reused bounds, intersected with the new ones, are a little tighter). Work is done per batch of samples,
so the memory is bounded by the batch, not by the data set.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .engine import MAX_ELEMS, GraphCrown
from .ir import Plan

Broken = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float, str], torch.Tensor]
"""``broken(x, y, todo, eps, norm)``: bool ``(N,)``, True where an attack found an adversarial example (so the
sample cannot be certified: skipping it only saves time)."""


def graph_margins(plan: Plan, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, *, batch_size: int = 50,
                  max_elems: int = MAX_ELEMS) -> torch.Tensor:
    """CROWN lower bounds ``(N, K)`` of ``f_y − f_j`` over the ε-ball ∩ [0,1] (``+inf`` at ``j = y``).

    ``x``: ``(N, *in_shape)`` in [0,1]; ``y``: ``(N,)`` labels; ``norm``: ``"L2"`` or ``"Linf"``.
    """
    K = plan.nodes[plan.spec].shape[0]
    out = []
    xs, ys = x.detach().cpu().double(), y.cpu()
    for s in range(0, xs.shape[0], batch_size):
        out.append(GraphCrown(plan, xs[s:s + batch_size], eps, norm, max_elems=max_elems).margins(ys[s:s + batch_size]))
    return torch.cat(out) if out else torch.zeros(0, K, dtype=torch.float64)


Runner = Callable[[torch.Tensor, float, str], torch.Tensor]


def certify_ascending(cells: list[tuple[str, float]], correct: torch.Tensor,
                      done: dict[tuple[str, float], torch.Tensor], run: Runner, *, x: torch.Tensor,
                      y: torch.Tensor, broken: Broken | None = None,
                      known_broken: dict[tuple[str, float], torch.Tensor] | None = None,
                      batch_size: int = 50) -> dict[tuple[str, float], torch.Tensor]:
    """Certified samples (bool ``(N,)``) per ``(norm, ε)`` cell, radii of each norm from the smallest up.

    ``run(idx, eps, norm)``: bool ``(len(idx),)``, the samples ``idx`` (indices into ``x``) a bound certifies at
    ``eps``; it is called on batches of at most ``batch_size`` samples. A sample is tried at ``eps`` when the model
    classifies it right (``correct``), it was certified at every smaller radius, ``done`` (cells certified by another
    method: counted as certified) does not hold it, ``known_broken`` (per cell, samples an attack already broke)
    does not hold it and ``broken`` (a cheap attack on the rest, per batch) does not break it.
    """
    n = correct.shape[0]
    xs, ys = x.detach().cpu(), y.cpu()
    got: dict[tuple[str, float], torch.Tensor] = {}
    for norm in ("L2", "Linf"):
        smaller = correct.cpu().clone()  # certified (by any method) at every smaller radius of this norm so far
        for eps in sorted({e for nm, e in cells if nm == norm}):
            ok = done[(norm, eps)].cpu().clone() if (norm, eps) in done else torch.zeros(n, dtype=torch.bool)
            todo = smaller & ~ok
            if known_broken is not None and (norm, eps) in known_broken:
                todo &= ~known_broken[(norm, eps)].cpu()
            pending = todo.nonzero().flatten()
            for s in range(0, pending.numel(), batch_size):  # full batches of the samples still to try
                sub = pending[s:s + batch_size]
                if broken is not None:
                    sub = sub[~broken(xs[sub], ys[sub], torch.ones(sub.numel(), dtype=torch.bool), eps, norm)]
                if sub.numel():
                    ok[sub] = run(sub, eps, norm)
            got[(norm, eps)] = ok
            smaller &= ok
    return got


def certify_cells(plan: Plan, x: torch.Tensor, y: torch.Tensor, cells: list[tuple[str, float]],
                  correct: torch.Tensor, done: dict[tuple[str, float], torch.Tensor], *,
                  broken: Broken | None = None, known_broken: dict[tuple[str, float], torch.Tensor] | None = None,
                  batch_size: int = 50, margin_tol: float = 1e-5,
                  max_elems: int = MAX_ELEMS) -> dict[tuple[str, float], torch.Tensor]:
    """Graph-CROWN certificates (bool ``(N,)``) per ``(norm, ε)`` cell, by :func:`certify_ascending`.

    ``correct``: bool ``(N,)``, samples the model classifies right (the others are never certified); ``done``:
    cells already certified by another method (skipped, counted as certified); ``known_broken``: per cell, samples
    an attack already broke (skipped, not certified), before ``broken`` looks at the rest. A sample counts as
    certified when every margin bound exceeds ``margin_tol``.
    """
    xs, ys = x.detach().cpu(), y.cpu()

    def run(sub: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
        g = GraphCrown(plan, xs[sub].double(), eps, norm, max_elems=max_elems)
        return (g.margins(ys[sub]) > margin_tol).all(dim=1)

    return certify_ascending(cells, correct, done, run, x=xs, y=ys, broken=broken, known_broken=known_broken,
                             batch_size=batch_size)
