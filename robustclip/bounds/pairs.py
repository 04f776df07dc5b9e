"""Pair geometry shared by CLIP and the lower bounds: pair sets, difference quotients and pair ascent.

Conventions: inputs ``x`` are batches ``(N, *in_shape)`` in ``[0, 1]``; a pair
set is one tensor ``P`` of shape ``(2m, *in_shape)`` whose first half holds the
``x`` and second half the ``x'`` of the m pairs. The difference quotient of
pair i is ``||f(x_i) - f(x'_i)||_2 / ||x_i - x'_i||_2`` (L2 in and out, over
the flattened tensors), so every quotient is a lower bound on the L2 Lipschitz
constant of ``f``.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.modes import frozen

MIN_DIST = 1e-4  # pairs closer than this (L2) are pushed apart, so x != x'


def split_pairs(P: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """View a pair set ``(2m, ...)`` as ``(x, x')``, each ``(m, ...)``."""
    m = P.shape[0] // 2
    return P[:m], P[m:]


def quotients_from_outputs(out: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """Quotients ``(m,)`` from outputs ``(2m, k)`` of the pair set ``P`` ``(2m, ...)``.

    The input distance is taken without gradient: the quotient's gradient with
    respect to the weights is unaffected, and the ascent direction is that of
    the output gap, the cheap and stable choice.
    """
    m = P.shape[0] // 2
    num = (out[:m] - out[m:]).flatten(1).norm(dim=1)
    den = (P[:m] - P[m:]).detach().flatten(1).norm(dim=1).clamp_min(MIN_DIST)
    return num / den


def quotients(model: nn.Module, P: torch.Tensor) -> torch.Tensor:
    """Difference quotients ``(m,)`` of ``model`` on pair set ``P`` ``(2m, ...)``."""
    return quotients_from_outputs(model(P), P)


def init_pairs(x: torch.Tensor, m: int, *, mode: str = "partial_random", radius: float = 0.5,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """A pair set ``(2m, ...)`` in [0,1] drawn from data ``x`` ``(N, ...)``.

    ``mode``: ``plain`` pairs two different samples; ``partial_random`` pairs a
    sample with itself moved by L2 distance ``radius`` in a random direction
    (then clipped to [0,1]); ``noise`` draws both points uniformly from [0,1].
    """
    n = x.shape[0]
    dev = x.device
    idx = torch.randint(0, n, (m,), generator=generator, device="cpu").to(dev)
    if mode == "plain":
        other = (idx + 1 + torch.randint(0, max(n - 1, 1), (m,), generator=generator).to(dev)) % n
        a, b = x[idx], x[other]
    elif mode == "partial_random":
        a = x[idx]
        u = torch.randn(a.shape, generator=generator).to(dev)
        u = u / u.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (a.dim() - 1)))
        b = (a + radius * u).clamp(0.0, 1.0)
    elif mode == "noise":
        a = torch.rand((m, *x.shape[1:]), generator=generator).to(dev)
        b = torch.rand((m, *x.shape[1:]), generator=generator).to(dev)
    else:
        raise ValueError(f"unknown pair init {mode!r}; use plain, partial_random or noise")
    P = torch.cat([a, b]).detach().clone()
    separate(P, generator=generator)
    return P


@torch.no_grad()
def separate(P: torch.Tensor, *, generator: torch.Generator | None = None) -> None:
    """Keep ``x != x'`` in place: move ``x'`` of too-close pairs by ``10·MIN_DIST``."""
    a, b = split_pairs(P)
    close = (a - b).flatten(1).norm(dim=1) < MIN_DIST
    if bool(close.any()):
        u = torch.randn(b[close].shape, generator=generator).to(P.device)
        u = u / u.flatten(1).norm(dim=1).view(-1, *([1] * (u.dim() - 1)))
        moved = b[close] + 10 * MIN_DIST * u
        # reflect into [0,1] so the clamp cannot undo the move
        b[close] = torch.where((moved < 0) | (moved > 1), b[close] - 10 * MIN_DIST * u, moved).clamp(0, 1)


@torch.no_grad()
def ascent_move(P: torch.Tensor, grad: torch.Tensor, eta: torch.Tensor) -> torch.Tensor:
    """One projected ascent move: each pair goes ``eta_i`` along its normalised gradient.

    ``P``, ``grad``: ``(2m, ...)``; ``eta``: ``(m,)`` L2 step lengths of the
    joint move of ``(x_i, x'_i)``. Returns the new pair set, clipped to [0,1].
    """
    m = eta.shape[0]
    g = grad.reshape(2, m, -1)
    scale = eta / g.square().sum(dim=(0, 2)).sqrt_().clamp_min_(1e-30)
    return P.reshape(2, m, -1).addcmul(g, scale.view(1, m, 1)).clamp_(0.0, 1.0).view_as(P)


def pair_ascent(model: nn.Module, P: torch.Tensor, *, steps: int, eta: float | torch.Tensor = 0.1,
                grow: float = 1.2, shrink: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Maximise the quotients of pair set ``P`` for a fixed ``model``.

    Each step proposes a move along the normalised gradient, keeps it for the
    pairs whose quotient rose (growing their step by ``grow``) and rejects it
    for the others (shrinking their step by ``shrink``). So no quotient, and
    hence not the set's best, ever falls; pairs stay in [0,1] with ``x != x'``.
    Returns ``(P, q)``: the new pairs ``(2m, ...)`` and their quotients ``(m,)``.
    """
    P = P.detach().clone()
    m = P.shape[0] // 2
    eta_t = eta.clone() if isinstance(eta, torch.Tensor) else torch.full((m,), float(eta), device=P.device)
    with frozen(model):
        P.requires_grad_(True)
        q = quotients(model, P)
        for _ in range(steps):
            (grad,) = torch.autograd.grad(q.sum(), P)
            cand = ascent_move(P.detach(), grad, eta_t)
            separate(cand)
            cand.requires_grad_(True)
            q_c = quotients(model, cand)
            up = q_c.detach() > q.detach()
            eta_t = torch.where(up, eta_t * grow, eta_t * shrink).clamp(1e-6, 10.0)
            keep = up.repeat(2).view(-1, *([1] * (P.dim() - 1)))
            P = torch.where(keep, cand.detach(), P.detach()).requires_grad_(True)
            q = quotients(model, P)
        return P.detach(), q.detach()
