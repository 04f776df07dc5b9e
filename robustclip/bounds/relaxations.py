"""Sound linear relaxations of elementwise activations and the lower bound of a linear function over ball ∩ [0,1].

Shared by the dense CROWN of :mod:`robustclip.bounds.certify` and the graph CROWN of
:mod:`robustclip.bounds.crown`: :func:`relax` gives lines ``aL z + bL ≤ act(z) ≤ aU z + bU`` on ``[l, u]``
(ReLU/LeakyReLU: the triangle relaxation; sigmoid and tanh: the least-area pair among several slopes, with exact
intercepts), :func:`concretize_lower` the smallest value of ``A x + c`` over ``{x in [0,1]^d : ||x − x0|| ≤ ε}``
(L∞ exactly, L2 by Lagrange duality).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

# --------------------------------------------------------------------------- activation relaxations

def _fn(act: nn.Module) -> tuple[Any, Any, Any, Any]:
    """``(f, f', antiderivative F, critical points of f' = k)`` for sigmoid and tanh (float64)."""
    if isinstance(act, nn.Sigmoid):

        def crit(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            r = (1 - 4 * k.clamp(1e-300, 0.25)).clamp_min(0).sqrt()
            s_hi, s_lo = ((1 + r) / 2).clamp(1e-300, 1 - 1e-16), ((1 - r) / 2).clamp(1e-300, 1 - 1e-16)
            return torch.log(s_hi / (1 - s_hi)), torch.log(s_lo / (1 - s_lo))

        return (torch.sigmoid, lambda z: torch.sigmoid(z) * (1 - torch.sigmoid(z)),
                torch.nn.functional.softplus, crit)

    def crit_t(k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = (1 - k.clamp(1e-300, 1.0)).clamp_min(0).sqrt().clamp_max(1 - 1e-16)
        return torch.atanh(r), -torch.atanh(r)

    def logcosh(z: torch.Tensor) -> torch.Tensor:
        a = z.abs()
        return a + torch.log1p(torch.exp(-2 * a)) - math.log(2.0)

    return torch.tanh, lambda z: 1 - torch.tanh(z) ** 2, logcosh, crit_t


def relax(act: nn.Module, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Sound linear bounds ``aL z + bL ≤ act(z) ≤ aU z + bU`` for ``z ∈ [l, u]`` (all ``(N, n)``, float64)."""
    if isinstance(act, (nn.ReLU, nn.LeakyReLU)):
        s1 = float(act.negative_slope) if isinstance(act, nn.LeakyReLU) else 0.0
        return _relax_piecewise(l, u, s1, 1.0)
    if isinstance(act, (nn.Sigmoid, nn.Tanh)):
        return _relax_s_shaped(act, l, u)
    raise AssertionError(f"no relaxation for {type(act).__name__}")


def _relax_piecewise(l: torch.Tensor, u: torch.Tensor, s1: float, s2: float) -> tuple[torch.Tensor, ...]:
    """``z -> s1 z`` (z < 0), ``s2 z`` (z ≥ 0): exact off zero, chord and adaptive slope across it."""
    cross = (l < 0) & (u > 0)
    w = (u - l).clamp_min(1e-300)
    k = torch.where(cross, (s2 * u - s1 * l) / w, torch.where(u <= 0, torch.full_like(l, s1), torch.full_like(l, s2)))
    chord_b = torch.where(cross, s1 * l - k * l, torch.zeros_like(l))
    tight = torch.where(u > -l, torch.full_like(l, s2), torch.full_like(l, s1))
    tight = torch.where(cross, tight, k)
    zero = torch.zeros_like(l)
    if s2 >= s1:  # convex: chord above, any slope in [s1, s2] through 0 below
        return tight, zero, k, chord_b
    return k, chord_b, tight, zero


def _relax_s_shaped(act: nn.Module, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
    f, df, F, crit = _fn(act)
    w = u - l
    fl, fu = f(l), f(u)
    secant = torch.where(w > 1e-12, (fu - fl) / w.clamp_min(1e-300), df(l))
    cands = [secant, df(l), df(u), torch.zeros_like(l)]
    cands += [df(l + q * w) for q in (0.1, 0.25, 0.5, 0.75, 0.9)]
    k = torch.stack(cands)  # (S, N, n)
    zp, zm = crit(k)
    pts = torch.stack([l.expand_as(k), u.expand_as(k), torch.minimum(torch.maximum(zp, l), u),
                       torch.minimum(torch.maximum(zm, l), u)])  # (4, S, N, n)
    g = f(pts) - k.unsqueeze(0) * pts
    bU = g.max(dim=0).values
    bL = g.min(dim=0).values
    bU = bU + 1e-12 * (1 + bU.abs())
    bL = bL - 1e-12 * (1 + bL.abs())
    # area between each line and f over [l, u] (up to the common integral of f)
    lin = k * (u * u - l * l) / 2
    areaU = lin + bU * w
    areaL = lin + bL * w
    iu = areaU.argmin(dim=0, keepdim=True)
    il = areaL.argmax(dim=0, keepdim=True)
    del F
    return (k.gather(0, il).squeeze(0), bL.gather(0, il).squeeze(0),
            k.gather(0, iu).squeeze(0), bU.gather(0, iu).squeeze(0))


# --------------------------------------------------------------------------- the input domain


def concretize_lower(A: torch.Tensor, c: torch.Tensor, x0: torch.Tensor, eps: float, norm: str, *,
                     search_steps: int = 12) -> torch.Tensor:
    """A lower bound of ``min A x + c`` over ``{x in [0,1]^d : ||x − x0|| ≤ eps}``.

    ``A``: ``(N, m, d)``, ``c``: ``(N, m)``, ``x0``: ``(N, d)`` in [0,1];
    returns ``(N, m)``. L∞: exact (the domain is a box). L2: the better of the
    box bound (each coordinate within eps and in [0,1]) and the Lagrange dual
    ``Σ_i min_{δ_i ∈ [−x0_i, 1−x0_i]} (a_i δ_i + λ δ_i²) − λ eps²``, valid for
    every ``λ > 0``, at the λ where the box-clipped minimiser has norm eps
    (found by ``search_steps`` of bisection on log λ), and at the ball-only λ.
    """
    lo = (x0 - eps).clamp(0, 1) - x0
    hi = (x0 + eps).clamp(0, 1) - x0
    base = torch.einsum("nmd,nd->nm", A, x0) + c
    box = (A.clamp_min(0) * lo.unsqueeze(1) + A.clamp_max(0) * hi.unsqueeze(1)).sum(-1)
    if norm == "Linf" or eps == 0:
        return base + box
    blo, bhi = (-x0).unsqueeze(1), (1 - x0).unsqueeze(1)

    def dual(t: torch.Tensor) -> torch.Tensor:  # t = 1 / (2 λ), shape (N, m)
        tt = t.unsqueeze(-1)
        d = torch.clamp(-tt * A, blo, bhi)
        return (A * d).sum(-1) + (torch.linalg.vector_norm(d, dim=-1).square() - eps * eps) / (2 * t)

    # the multiplier is searched in float32 (any multiplier gives a sound bound); the bound itself is float64
    A32, blo32, bhi32 = A.float(), blo.float(), bhi.float()

    def size(t: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(torch.clamp(-t.unsqueeze(-1) * A32, blo32, bhi32), dim=-1)

    an = A.norm(dim=-1).clamp_min(1e-300)
    t_ball = eps / an  # the ball-only optimum: clipping only shrinks the step, so size(t_ball) ≤ eps
    lo_t = t_ball.float().clamp(1e-30, 1e30).log()  # a zero row has t_ball = inf: keep the search finite
    hi_t = lo_t + math.log(1e4)
    for _ in range(search_steps):
        mid = (lo_t + hi_t) / 2
        big = size(mid.exp()) > eps
        hi_t = torch.where(big, mid, hi_t)
        lo_t = torch.where(big, lo_t, mid)
    best = torch.maximum(dual(t_ball), dual(lo_t.double().exp()))
    val = torch.maximum(best, box)
    slack = 1e-10 * (A.abs().sum(-1) + 1)
    return base + val - slack
