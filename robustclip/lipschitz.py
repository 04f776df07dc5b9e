"""Lipschitz constants: difference quotients, pair ascent, lower and upper bounds.

Conventions: inputs ``x`` are batches ``(N, *in_shape)`` in ``[0, 1]``; a pair
set is one tensor ``P`` of shape ``(2m, *in_shape)`` whose first half holds the
``x`` and second half the ``x'`` of the m pairs. The difference quotient of
pair i is ``||f(x_i) - f(x'_i)||_2 / ||x_i - x'_i||_2`` (L2 in and out, over
the flattened tensors), so every quotient is a lower bound on the L2 Lipschitz
constant of ``f``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

ESTIMATOR_VERSION = "1"
"""Version of the bound estimators; bump it whenever a bound's value can change (the CI gate compares
Lipschitz bounds only between equal versions)."""

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
    was_training = model.training
    model.eval()
    params = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
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
    finally:
        for p, flag in zip(model.parameters(), params):
            p.requires_grad_(flag)
        model.train(was_training)


# --------------------------------------------------------------------------- bounds


@dataclass
class LipschitzReport:
    """Lower and upper bounds on the L2 Lipschitz constant, with their cost."""

    lower: float
    upper: float
    lower_quotient: float
    lower_jacobian: float
    exact: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    seed: int = 0

    @property
    def ratio(self) -> float:
        return self.upper / self.lower if self.lower > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


def lower_bound_quotient(model: nn.Module, x: torch.Tensor, *, pairs: int = 64, steps: int = 50,
                         radius: float = 0.5, seed: int = 0) -> float:
    """Best difference quotient after pair ascent from data pairs (a lower bound)."""
    g = torch.Generator().manual_seed(seed)
    best = 0.0
    for mode in ("partial_random", "plain"):
        P = init_pairs(x, pairs, mode=mode, radius=radius, generator=g)
        _, q = pair_ascent(model, P, steps=steps)
        best = max(best, float(q.max()))
    return best


def jacobian_spectral_norm(model: nn.Module, x: torch.Tensor, *, iters: int = 20,
                           generator: torch.Generator | None = None) -> torch.Tensor:
    """Largest singular value of the Jacobian at each point of ``x`` ``(N, ...)``: ``(N,)``.

    Power iteration on ``J^T J`` with autograd (a JVP through the double-backward
    trick, then a VJP), one vector per sample.
    """
    x = x.detach()
    v = torch.randn(x.shape, generator=generator).to(x.device)
    v = v / v.flatten(1).norm(dim=1).view(-1, *([1] * (x.dim() - 1)))
    sigma = torch.zeros(x.shape[0], device=x.device)
    for _ in range(iters):
        xi = x.clone().requires_grad_(True)
        out = model(xi)
        u = torch.zeros_like(out, requires_grad=True)
        (vjp_u,) = torch.autograd.grad(out, xi, grad_outputs=u, create_graph=True)
        (jv,) = torch.autograd.grad(vjp_u, u, grad_outputs=v)  # J v, (N, k)
        (jtjv,) = torch.autograd.grad(out, xi, grad_outputs=jv)  # J^T J v
        sigma = jv.flatten(1).norm(dim=1)
        nrm = jtjv.flatten(1).norm(dim=1).clamp_min(1e-30)
        v = (jtjv / nrm.view(-1, *([1] * (x.dim() - 1)))).detach()
    return sigma.detach()


def lower_bound_jacobian(model: nn.Module, x: torch.Tensor, *, points: int = 64, steps: int = 10,
                         iters: int = 10, step_size: float = 0.1, seed: int = 0) -> float:
    """Largest local Jacobian spectral norm found by ascent from data points (a lower bound).

    Starts at ``points`` data points, then moves each along the gradient of its
    Jacobian norm (kept in [0,1]); every value seen is a valid lower bound.
    """
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, x.shape[0], (min(points, x.shape[0]),), generator=g)
    z = x[idx].detach().clone()
    best = 0.0
    was_training = model.training
    model.eval()
    try:
        for _ in range(steps + 1):
            s = jacobian_spectral_norm(model, z, iters=iters, generator=g)
            best = max(best, float(s.max()))
            # ascend ||J(z) v|| along its input gradient, v fixed from the last iteration
            zi = z.clone().requires_grad_(True)
            gsum = _jacobian_norm_grad(model, zi, g)
            if gsum is None:
                break
            n = gsum.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (z.dim() - 1)))
            z = (z + step_size * gsum / n).clamp(0, 1).detach()
    finally:
        model.train(was_training)
    return best


def _jacobian_norm_grad(model: nn.Module, z: torch.Tensor, g: torch.Generator) -> torch.Tensor | None:
    out = model(z)
    w = torch.randn(out.shape, generator=g).to(z.device)
    (grad_in,) = torch.autograd.grad((out * w).sum(), z, create_graph=True)
    obj = grad_in.flatten(1).norm(dim=1).sum()
    if not obj.requires_grad:
        return None
    (gz,) = torch.autograd.grad(obj, z, allow_unused=True)  # None for a linear map: its Jacobian is constant
    return gz


def _power_iteration(op, adj, shape: tuple[int, ...], iters: int, generator: torch.Generator,
                     *, tol: float = 1e-10, max_iters: int = 5000) -> float:
    """Largest singular value of a linear operator (float64), iterated to convergence.

    Power iteration approaches it from below, so it runs at least ``iters``
    steps and then until the estimate changes by less than ``tol`` (relative)
    over 20 steps, or ``max_iters``.
    """
    v = torch.randn(shape, generator=generator, dtype=torch.float64)
    v = v / v.norm()
    sigma, history = 0.0, []
    for i in range(max_iters):
        u = op(v)
        sigma = float(u.norm())
        v = adj(u)
        v = v / v.norm().clamp_min(1e-300)
        history.append(sigma)
        if i >= iters and abs(history[-1] - history[-21]) <= tol * history[-1]:
            break
    return sigma


def layer_norms(model: nn.Module, in_shape: tuple[int, ...], *, iters: int = 100, seed: int = 0) -> list[tuple[str, float]]:
    """Operator norms (L2) of each layer of a Sequential, walking ``in_shape`` through it.

    Linear and Conv2d: largest singular value by power iteration (Conv2d on the
    actual input size). Activations: their Lipschitz constants (1 for ReLU and
    tanh, 1/4 for sigmoid). Normalize: ``1/std``. Flatten: 1.
    """
    from torch.nn import functional as F

    from .models import Normalize

    g = torch.Generator().manual_seed(seed)
    out: list[tuple[str, float]] = []
    shape = (1, *in_shape)
    for name, layer in model.named_children():
        with torch.no_grad():
            next_shape = tuple(layer(torch.zeros(shape, device=_device(model))).shape)
        if isinstance(layer, nn.Linear):
            W = layer.weight.detach().double().cpu()
            out.append((name, float(torch.linalg.matrix_norm(W, ord=2))))
        elif isinstance(layer, nn.Conv2d):
            w = layer.weight.detach().double().cpu()
            kw = dict(stride=layer.stride, padding=layer.padding, dilation=layer.dilation, groups=layer.groups)
            out_pad = _conv_output_padding(layer, shape, next_shape)
            sigma = _power_iteration(
                lambda v: F.conv2d(v, w, **kw),
                lambda u: F.conv_transpose2d(u, w, output_padding=out_pad, **kw),
                tuple(shape), iters, g,
            )
            out.append((name, sigma))
        elif isinstance(layer, nn.Sigmoid):
            out.append((name, 0.25))
        elif isinstance(layer, (nn.ReLU, nn.Tanh, nn.Flatten, nn.Identity, nn.Dropout)):
            out.append((name, 1.0))
        elif isinstance(layer, Normalize):
            out.append((name, 1.0 / layer.std))
        else:
            raise ValueError(f"no Lipschitz constant known for layer {name} ({type(layer).__name__})")
        shape = next_shape
    return out


def _conv_output_padding(layer: nn.Conv2d, in_shape, out_shape) -> tuple[int, int]:
    pads = []
    for d in range(2):
        full = (out_shape[2 + d] - 1) * layer.stride[d] - 2 * layer.padding[d] + layer.dilation[d] * (layer.kernel_size[d] - 1) + 1
        pads.append(in_shape[2 + d] - full)
    return tuple(pads)  # type: ignore[return-value]


def _device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def upper_bound(model: nn.Module, in_shape: tuple[int, ...], *, iters: int = 100, seed: int = 0) -> float:
    """Product of per-layer operator norms: an upper bound on the L2 Lipschitz constant."""
    return math.prod(v for _, v in layer_norms(model, in_shape, iters=iters, seed=seed))


def exact_1d(model: nn.Module, *, grid: int = 20001, lo: float = 0.0, hi: float = 1.0) -> float:
    """max |f'(x)| over a fine grid on [lo, hi], for a 1-D model ``(N,1) -> (N,1)``."""
    x = torch.linspace(lo, hi, grid, device=_device(model)).unsqueeze(1).requires_grad_(True)
    was_training = model.training
    model.eval()
    try:
        out = model(x)
        (g,) = torch.autograd.grad(out.sum(), x)
    finally:
        model.train(was_training)
    return float(g.abs().max())


def estimate(model: nn.Module, x: torch.Tensor, *, in_shape: tuple[int, ...] | None = None, seed: int = 0,
             pairs: int = 64, steps: int = 50, exact: bool = False) -> LipschitzReport:
    """Lower bounds (pair ascent, Jacobian ascent), upper bound and, for 1-D models, the exact constant.

    ``x``: data ``(N, *in_shape)`` in [0,1] to start the ascents from.
    """
    in_shape = in_shape or tuple(x.shape[1:])
    t0 = time.perf_counter()
    lq = lower_bound_quotient(model, x, pairs=pairs, steps=steps, seed=seed)
    t1 = time.perf_counter()
    lj = lower_bound_jacobian(model, x, points=pairs, seed=seed)
    t2 = time.perf_counter()
    up = upper_bound(model, in_shape, seed=seed)
    t3 = time.perf_counter()
    ex = exact_1d(model) if exact else None
    return LipschitzReport(lower=max(lq, lj), upper=up, lower_quotient=lq, lower_jacobian=lj, exact=ex,
                           seconds={"quotient": t1 - t0, "jacobian": t2 - t1, "upper": t3 - t2}, seed=seed)
