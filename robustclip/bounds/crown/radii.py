"""Graph CROWN per sample batch: margins at one radius, and certificates at several radii from the largest down.

A sample certified at a larger radius of a norm is certified at every smaller one (its ball ∩ [0,1] contains the
smaller one), so it is skipped there; a sample not certified keeps its node bounds from the larger radius, which
are sound for the smaller one too, so only neurons unstable under those bounds get CROWN again. Work is done per
batch of samples, so the memory is bounded by the batch, not by the data set.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .engine import MAX_ELEMS, Bounds, GraphCrown
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


def certify_cells(plan: Plan, x: torch.Tensor, y: torch.Tensor, cells: list[tuple[str, float]],
                  correct: torch.Tensor, done: dict[tuple[str, float], torch.Tensor], *,
                  broken: Broken | None = None, known_broken: dict[tuple[str, float], torch.Tensor] | None = None,
                  batch_size: int = 50, margin_tol: float = 1e-5,
                  max_elems: int = MAX_ELEMS) -> dict[tuple[str, float], torch.Tensor]:
    """Certified samples (bool ``(N,)``) per ``(norm, ε)`` cell.

    ``correct``: bool ``(N,)``, samples the model classifies right (the others are never certified); ``done``:
    cells already certified by another method (skipped, counted as certified); ``known_broken``: per cell, samples
    an attack already broke (skipped, not certified), before ``broken`` looks at the rest. A sample counts as
    certified when every margin bound exceeds ``margin_tol``.
    """
    n = x.shape[0]
    xs, ys = x.detach().cpu(), y.cpu()
    got: dict[tuple[str, float], torch.Tensor] = {}
    for norm in ("L2", "Linf"):
        radii = sorted({e for nm, e in cells if nm == norm}, reverse=True)
        for e in radii:
            got[(norm, e)] = torch.zeros(n, dtype=torch.bool)
        for s in range(0, n, batch_size):
            idx = torch.arange(s, min(n, s + batch_size))
            xb, yb = xs[idx], ys[idx]
            larger = torch.zeros(idx.numel(), dtype=torch.bool)
            cache: dict[tuple[str, int], Bounds] = {}
            for eps in radii:
                ok = larger.clone()
                if (norm, eps) in done:
                    ok |= done[(norm, eps)][idx]
                todo = correct[idx] & ~ok
                if known_broken is not None and (norm, eps) in known_broken:
                    todo &= ~known_broken[(norm, eps)].cpu()[idx]
                if broken is not None and bool(todo.any()):
                    todo &= ~broken(xb, yb, todo, eps, norm)
                sub = todo.nonzero().flatten()
                if sub.numel():
                    prior = {k: (lo[sub], hi[sub]) for k, (lo, hi) in cache.items()}
                    g = GraphCrown(plan, xb[sub].double(), eps, norm, prior=prior, max_elems=max_elems)
                    ok[sub] = (g.margins(yb[sub]) > margin_tol).all(dim=1)
                    for k, (lo, hi) in g.cache().items():
                        if k not in cache:
                            cache[k] = (torch.full((idx.numel(), *lo.shape[1:]), -torch.inf, dtype=torch.float64),
                                        torch.full((idx.numel(), *lo.shape[1:]), torch.inf, dtype=torch.float64))
                        cache[k][0][sub], cache[k][1][sub] = lo, hi
                got[(norm, eps)][idx] = ok
                larger = ok
    return got

