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

import numpy as np
import torch
from torch import nn

from ..core.devices import device_of as _device
from ..core.modes import eval_mode, frozen  # frozen: robustclip.lipschitz.frozen stays importable
from ..models.activations import SORTING, is_sorting

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


# --------------------------------------------------------------------------- structure

#: leaf layer types whose maths is fully known (exact types: a subclass may override ``forward``)
KNOWN_LEAVES: tuple[type, ...] = (nn.Linear, nn.Conv2d, nn.Flatten, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
                                  nn.Identity, *SORTING)
#: dense matrices of convolutions larger than this (entries) are not built
MAX_DENSE = 30_000_000
#: relative slack added to float64 norm computations so rounding cannot push a bound below the truth
SLACK = 1e-12


def known_layers(model: nn.Module) -> tuple[list[tuple[str, nn.Module]] | None, str | None]:
    """The model as a flat list of ``(name, leaf)``, or ``(None, reason)`` when it is not fully understood.

    Understood: ``nn.Sequential`` itself (not a subclass, which may override
    ``forward``), nested the same way, of exactly these leaves: Linear, Conv2d
    (numeric zero padding), Flatten (``start_dim=1``),
    :class:`robustclip.models.specs.Normalize`, ReLU, Sigmoid, Tanh, LeakyReLU,
    Identity; no forward hooks; finite weights. Anything else, e.g. a module
    with its own ``forward`` whose children look known, is not a chain: it
    gets no certificate, and its upper bound, if any, comes from its traced
    graph (:mod:`robustclip.bounds.graph`).
    """
    from ..models.specs import Normalize

    out: list[tuple[str, nn.Module]] = []

    def walk(m: nn.Module, name: str) -> str | None:
        label = name or "the model"
        if m._forward_hooks or m._forward_pre_hooks:
            return f"{label} ({type(m).__name__}) has forward hooks, which may change its output"
        if type(m) is nn.Sequential:
            for child_name, child in m.named_children():
                why = walk(child, f"{name}.{child_name}" if name else child_name)
                if why:
                    return why
            return None
        if type(m) in KNOWN_LEAVES or type(m) is Normalize:
            if type(m) is nn.Flatten and m.start_dim != 1:
                return f"{label} flattens from dim {m.start_dim}, not 1"
            if type(m) is nn.Conv2d and (m.padding_mode != "zeros" or isinstance(m.padding, str)):
                return f"{label} uses padding {m.padding!r} ({m.padding_mode}); only numeric zero padding is known"
            for p in m.parameters(recurse=False):
                if not bool(torch.isfinite(p).all()):
                    return f"{label} ({type(m).__name__}) has non-finite weights"
            out.append((name, m))
            return None
        kind = "a subclass of nn.Sequential" if isinstance(m, nn.Sequential) else type(m).__name__
        return (f"{label} is {kind}, a module with its own forward; only nn.Sequential of Linear, Conv2d, "
                "Flatten, Normalize, ReLU, Sigmoid, Tanh, LeakyReLU, MinMax, GroupSort and Identity layers is "
                "understood")

    why = walk(model, "")
    return (None, why) if why else (out, None)


def activation_slopes(layer: nn.Module) -> tuple[float, float] | None:
    """``(min, max)`` slope of an elementwise activation (sigmoid: ``(0, 1/4)``); None for other layers
    (including MinMax and GroupSort, which are not elementwise; their Lipschitz constant is 1)."""
    if isinstance(layer, nn.Sigmoid):
        return (0.0, 0.25)
    if isinstance(layer, (nn.ReLU, nn.Tanh)):
        return (0.0, 1.0)
    if isinstance(layer, nn.LeakyReLU):
        a = float(layer.negative_slope)
        return (min(a, 1.0), max(a, 1.0))
    return None


@dataclass
class Affine:
    """``x -> W x + b`` on flattened vectors: ``W`` ``(out, in)``, ``b`` ``(out,)``, float64 on the CPU."""

    W: torch.Tensor
    b: torch.Tensor


def affine_ops(model: nn.Module, in_shape: tuple[int, ...]) -> tuple[list[Affine | nn.Module] | None, str | None]:
    """The model as alternating :class:`Affine` maps and elementwise activations on flattened vectors.

    Normalize, Linear and Conv2d become affine maps (a convolution becomes its
    dense matrix on the actual input size, built from basis vectors);
    consecutive affine maps are multiplied out; Flatten and Identity vanish.
    Returns ``(None, reason)`` for models :func:`known_layers` does not
    understand or convolutions too large to densify (``MAX_DENSE`` entries).
    """
    from torch.nn import functional as F

    from ..models.specs import Normalize

    layers, why = known_layers(model)
    if layers is None:
        return None, why
    ops: list[Affine | nn.Module] = []
    shape = tuple(in_shape)
    dev = _device(model)
    for name, layer in layers:
        with torch.no_grad():
            next_shape = tuple(layer(torch.zeros((1, *shape), device=dev)).shape[1:])
        d_in, d_out = math.prod(shape), math.prod(next_shape)
        aff: Affine | None = None
        if isinstance(layer, nn.Linear):
            W = layer.weight.detach().double().cpu()
            b = torch.zeros(W.shape[0], dtype=torch.float64)
            if layer.bias is not None:
                b = layer.bias.detach().double().cpu()
            aff = Affine(W, b)
        elif isinstance(layer, nn.Conv2d):
            if d_in * d_out > MAX_DENSE:
                return None, (f"{name}: convolution {shape}->{next_shape} is too large to densify "
                              f"({d_in * d_out} entries)")
            w = layer.weight.detach().double().cpu()
            with torch.no_grad():
                basis = torch.eye(d_in, dtype=torch.float64).view(d_in, *shape)
                cols = F.conv2d(basis, w, stride=layer.stride, padding=layer.padding,
                                dilation=layer.dilation, groups=layer.groups)
            bias = torch.zeros(next_shape[0], dtype=torch.float64)
            if layer.bias is not None:
                bias = layer.bias.detach().double().cpu()
            aff = Affine(cols.flatten(1).T.contiguous(), bias.view(-1, 1, 1).expand(next_shape).flatten().clone())
        elif isinstance(layer, Normalize):
            aff = Affine(torch.eye(d_in, dtype=torch.float64) / layer.std,
                         torch.full((d_in,), -layer.mean / layer.std, dtype=torch.float64))
        elif isinstance(layer, (nn.Flatten, nn.Identity)):
            pass
        else:
            ops.append(layer)
        if aff is not None:
            last = ops[-1] if ops else None
            if isinstance(last, Affine):
                ops[-1] = Affine(aff.W @ last.W, aff.W @ last.b + aff.b)
            else:
                ops.append(aff)
        shape = next_shape
    return ops, None


# --------------------------------------------------------------------------- upper bounds


def gram_spectral_bound(A: torch.Tensor, *, iters: int = 18, tol: float = 1e-6) -> float:
    """An upper bound on ``σ_max(A)`` by construction (Gram iteration, Delattre et al. 2023).

    ``A``: any matrix ``(m, n)``. With ``G_0 = A``, ``G_{k+1} = G_kᵀ G_k`` one has
    ``σ_max(A)^(2^k) = σ_max(G_k) ≤ ||G_k||_F``, so every ``||G_k||_F^(1/2^k)`` is
    an upper bound; it falls to ``σ_max`` as k grows. Computed in float64 with
    rescaling (the log of the scale is tracked), the smallest bound is returned;
    it stops early once a step improves the bound by less than ``tol`` (relative).
    """
    G = A.detach().double()
    if G.shape[0] < G.shape[1]:
        G = G.T
    G = G.T @ G  # k = 1, the smaller Gram matrix
    log_s = 0.0
    best = math.inf
    for k in range(1, iters + 1):
        f = float(torch.linalg.matrix_norm(G, ord="fro"))
        if f == 0.0:
            return 0.0
        log_s += math.log(f)
        bound = math.exp(log_s / 2**k)
        if bound > best * (1 - tol):  # converged: later bounds improve by less than tol (relative)
            best = min(best, bound)
            break
        best = bound
        G = G / f
        G = G.T @ G
        log_s *= 2
    return best * (1 + 1e-9)


def _spec_norm(W: torch.Tensor) -> float:
    """``σ_max`` of a float64 matrix via SVD, with a relative slack against rounding."""
    if W.numel() == 0:
        return 0.0
    return float(torch.linalg.matrix_norm(W, ord=2)) * (1 + SLACK)


def layer_norms(model: nn.Module, in_shape: tuple[int, ...], *, iters: int = 100,
                seed: int = 0) -> list[tuple[str, float]]:
    """Operator norms (L2) of each leaf layer, walking ``in_shape`` through the model.

    Linear: ``σ_max`` by SVD. Conv2d: a Gram-iteration bound on its dense matrix
    at the actual input size (an upper bound by construction, unlike power
    iteration, which approaches ``σ_max`` from below). Activations: their
    Lipschitz constants (1 for ReLU and tanh, 1/4 for sigmoid, ``max(1, |a|)``
    for LeakyReLU). Normalize: ``1/std``. Flatten, Identity: 1. Raises
    ``ValueError`` with the reason for a model :func:`known_layers` does not
    understand. ``iters`` and ``seed`` are kept for compatibility (unused).
    """
    from ..models.specs import Normalize

    layers, why = known_layers(model)
    if layers is None:
        raise ValueError(f"no Lipschitz upper bound: {why}")
    out: list[tuple[str, float]] = []
    shape = tuple(in_shape)
    for name, layer in layers:
        with torch.no_grad():
            next_shape = tuple(layer(torch.zeros((1, *shape), device=_device(model))).shape[1:])
        if isinstance(layer, nn.Linear):
            out.append((name, _spec_norm(layer.weight.detach().double().cpu())))
        elif isinstance(layer, nn.Conv2d):
            ops, why = affine_ops(nn.Sequential(layer), shape)
            if ops is None:  # too large to densify: the circular (FFT) bound of conv_norms
                from .conv_norms import conv_module_bounds

                got = conv_module_bounds(layer, shape)
                if got is None:
                    raise ValueError(f"no Lipschitz upper bound: {why}")
                out.append((name, got[0]))
                shape = next_shape
                continue
            conv = ops[0]
            assert isinstance(conv, Affine)
            out.append((name, gram_spectral_bound(conv.W)))
        elif isinstance(layer, Normalize):
            out.append((name, 1.0 / layer.std))
        elif isinstance(layer, (nn.Flatten, nn.Identity)):
            out.append((name, 1.0))
        elif is_sorting(layer):
            out.append((name, 1.0))  # a permutation on every linear piece
        else:
            slopes = activation_slopes(layer)
            assert slopes is not None, type(layer)
            out.append((name, max(abs(slopes[0]), abs(slopes[1]))))
        shape = next_shape
    return out


def upper_bound(model: nn.Module, in_shape: tuple[int, ...], *, iters: int = 100, seed: int = 0) -> float:
    """Product of per-layer operator norms: an upper bound on the L2 Lipschitz constant.

    Models that are not a plain ``nn.Sequential`` chain (BatchNorm, pooling, residual blocks, their own
    ``forward``) are bounded through their ``torch.fx`` graph (:mod:`robustclip.bounds.graph`). Raises
    ``ValueError`` (with the reason) for models that are not fully understood.
    """
    layers, _ = known_layers(model)
    if layers is None:
        return graph_bound(model, in_shape).l2
    return math.prod(v for _, v in layer_norms(model, in_shape, iters=iters, seed=seed))


def graph_bound(model: nn.Module, in_shape: tuple[int, ...]) -> Any:
    """:func:`robustclip.bounds.graph.graph_upper_bound` (L2 and L∞); ``ValueError`` with the reason when the
    model is not understood."""
    from .graph import Unsupported, graph_upper_bound

    try:
        return graph_upper_bound(model, in_shape)
    except Unsupported as exc:
        raise ValueError(f"no Lipschitz upper bound: {exc}") from None


def _chain(ops: list[Affine | nn.Module]) -> tuple[list[torch.Tensor], list[float], list[tuple[float, float] | None]]:
    """Split ops into affine matrices ``W_1..W_L``, the Lipschitz factor of the activations before
    each (and after the last, as entry L), and the slope range when exactly one activation sits between."""
    mats: list[torch.Tensor] = []
    factors: list[float] = [1.0]
    between: list[tuple[float, float] | None] = [None]
    count = 0
    for op in ops:
        if isinstance(op, Affine):
            mats.append(op.W)
            factors.append(1.0)
            between.append(None)
            count = 0
        elif is_sorting(op):  # Lipschitz 1, but not elementwise: no slope interval
            count += 2
            between[-1] = None
        else:
            s = activation_slopes(op)
            assert s is not None
            factors[-1] *= max(abs(s[0]), abs(s[1]))
            count += 1
            between[-1] = s if count == 1 else None
    # factors[i] is the activation factor after W_i (factors[0]: before W_1)
    return mats, factors, between


def layer_pair_bound(ops: list[Affine | nn.Module], last: torch.Tensor | None = None,
                     cache: dict[tuple[str, int], float] | None = None) -> float:
    """Upper bound combining adjacent layers: ``||W2 D W1|| ≤ m||W2 W1|| + r||W2|| ||W1||``.

    For an activation with slopes in ``[a, b]`` between ``W1`` and ``W2``, its
    Jacobian ``D`` is diagonal with entries in ``[a, b]``, i.e. ``D = m I + r S``
    with ``m = (a+b)/2``, ``r = (b-a)/2`` and ``|S| ≤ 1``. A dynamic programme
    picks, along the chain, single layers or such pairs to minimise the product.
    ``last`` replaces the final matrix (e.g. a row difference ``w_y − w_j``).
    """
    mats, factors, between = _chain(ops)
    if last is not None:
        mats = mats[:-1] + [last]
    n = len(mats)
    if n == 0:
        return math.prod(factors)
    cache = {} if cache is None else cache  # norms not involving ``last`` are shared between calls

    def cached(key: tuple[str, int], fn: Any) -> float:
        if key[1] >= n - 1 and last is not None:
            return float(fn())
        if key not in cache:
            cache[key] = float(fn())
        return cache[key]

    norms = [cached(("norm", i), lambda W=W: _spec_norm(W)) for i, W in enumerate(mats)]
    best = [math.inf] * (n + 1)
    best[0] = factors[0]
    for i in range(1, n + 1):
        best[i] = best[i - 1] * norms[i - 1] * factors[i]
        s = between[i - 1] if i >= 2 else None
        if s is not None:
            m, r = (s[0] + s[1]) / 2, (s[1] - s[0]) / 2
            prod = cached(("pair", i - 1), lambda i=i: _spec_norm(mats[i - 1] @ mats[i - 2]))
            pair = m * prod + r * norms[i - 1] * norms[i - 2]
            best[i] = min(best[i], best[i - 2] * pair * factors[i])
    return best[n]


# --------------------------------------------------------------------------- LipSDP


def _lipsdp_blocks(Ws: list[torch.Tensor], alphas: list[torch.Tensor], betas: list[torch.Tensor],
                   t: list[torch.Tensor], last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(P, Q, R)`` of the LipSDP matrix ``M = [[-ρI + P, Q], [Qᵀ, R]]`` for fixed multipliers ``t`` (float64)."""
    sizes = [W.shape[0] for W in Ws]
    n = sum(sizes)
    d = Ws[0].shape[1]
    R = torch.zeros(n, n, dtype=torch.float64)
    Q = torch.zeros(d, n, dtype=torch.float64)
    P = torch.zeros(d, d, dtype=torch.float64)
    offs = [0]
    for s in sizes:
        offs.append(offs[-1] + s)
    for k, (W, a, b, tk) in enumerate(zip(Ws, alphas, betas, t)):
        sl = slice(offs[k], offs[k + 1])
        prev = None if k == 0 else slice(offs[k - 1], offs[k])
        quad = -2 * W.T @ (W * (a * b * tk).unsqueeze(1))
        cross = W.T * ((a + b) * tk).unsqueeze(0)
        if prev is None:
            P += quad
            Q[:, sl] += cross
        else:
            R[prev, prev] += quad
            R[prev, sl] += cross
            R[sl, prev] += cross.T
        R[sl, sl] -= torch.diag(2 * tk)
    lsl = slice(offs[-2], offs[-1])
    R[lsl, lsl] += last.T @ last
    return P, Q, R


def lipsdp_verify(Ws: list[torch.Tensor], alphas: list[torch.Tensor], betas: list[torch.Tensor],
                  t: list[torch.Tensor], last: torch.Tensor) -> float | None:
    """The smallest ``ρ`` with ``M(t, ρ) ⪯ 0`` for fixed multipliers ``t ≥ 0``, or None if none exists.

    Uses the Schur complement (``R ≺ 0`` and ``ρ ≥ λ_max(P − Q R⁻¹ Qᵀ)``), then
    checks the assembled matrix with a float64 eigenvalue computation. ``√ρ``
    is then an upper bound on the L2 Lipschitz constant (LipSDP-Neuron).
    """
    t = [tk.clamp_min(0) for tk in t]
    P, Q, R = _lipsdp_blocks(Ws, alphas, betas, t, last)
    ev = torch.linalg.eigvalsh(R)
    if float(ev.max()) >= -1e-12 * max(1.0, float(ev.abs().max())):
        return None
    S = P - Q @ torch.linalg.solve(R, Q.T)
    rho = float(torch.linalg.eigvalsh((S + S.T) / 2).max())
    rho = max(rho, 0.0) * (1 + 1e-7) + 1e-12
    M = torch.cat([torch.cat([P - rho * torch.eye(P.shape[0], dtype=torch.float64), Q], 1),
                   torch.cat([Q.T, R], 1)], 0)
    top = float(torch.linalg.eigvalsh((M + M.T) / 2).max())
    if top > 1e-10 * float(M.abs().max()):
        return None
    return rho


def lipsdp(ops: list[Affine | nn.Module], *, solver: str = "SCS", pair_rows: torch.Tensor | None = None,
           ) -> tuple[float, torch.Tensor | None, dict[str, Any]]:
    """LipSDP-Neuron (Fazlyab et al. 2019) for a chain ``affine, act, affine, ..., affine`` via cvxpy.

    The input is first reduced to the row space of ``W_1`` (the rest of the
    input space only adds ``-ρI`` blocks). The solver's multipliers are then
    re-verified in float64 (:func:`lipsdp_verify`), so the bound does not rest
    on solver accuracy. ``pair_rows`` ``(K, n_last)``: the last layer's rows;
    with them, per-class-pair constants ``L(f_y − f_j)`` are re-verified with
    the same multipliers (rescaled). Returns ``(L, pairs (K, K) or None, info)``.
    Raises ``ImportError`` without cvxpy and ``ValueError`` for other structures.
    The default solver is SCS (first order): interior-point solvers such as
    Clarabel form dense Hessians of the PSD cone (about (D²/2)² entries for a
    D×D matrix) and run out of memory at D = 480 (the paper's net); Clarabel
    is fine for small nets. The matrix ``vec(M)`` is assembled as one sparse
    linear map of the multipliers, since products of cvxpy expressions
    (``Wᵀ diag(t) W``) explode in memory.
    """
    import cvxpy as cp
    from scipy import sparse

    if any(is_sorting(op) for op in ops):
        raise ValueError("LipSDP needs elementwise slope-restricted activations; MinMax/GroupSort are not elementwise")
    mats, factors, between = _chain(ops)
    if len(mats) < 2 or any(f != 1.0 for f in (factors[0], factors[-1])):
        raise ValueError("LipSDP needs affine, activation, ..., affine with no activation first or last")
    slopes = between[1:-1]
    if any(s is None for s in slopes):
        raise ValueError("LipSDP needs exactly one activation between affine layers")
    Ws = mats[:-1]
    last = mats[-1]
    U, Sv, Vh = torch.linalg.svd(Ws[0], full_matrices=False)
    rank = int((Sv > Sv.max() * 1e-12).sum()) if Sv.numel() else 0
    Ws = [Ws[0] @ Vh[:rank].T] + Ws[1:]  # W1 V: the input in row-space coordinates
    lo_hi = [s for s in slopes if s is not None]
    alphas = [torch.full((W.shape[0],), float(s[0]), dtype=torch.float64) for W, s in zip(Ws, lo_hi)]
    betas = [torch.full((W.shape[0],), float(s[1]), dtype=torch.float64) for W, s in zip(Ws, lo_hi)]
    t0 = time.perf_counter()
    d = Ws[0].shape[1]
    sizes = [W.shape[0] for W in Ws]
    offs = [0, d]
    for sz in sizes:
        offs.append(offs[-1] + sz)
    D = offs[-1]
    nv = sum(sizes) + 1  # z = (t_1, ..., t_{L-1}, ρ)
    # vec(M) = G z + vec(M0), assembled as a sparse matrix: products of cvxpy expressions explode in memory
    ri: list[np.ndarray] = []
    ci: list[np.ndarray] = []
    vals: list[np.ndarray] = []

    def put(r: np.ndarray, c: np.ndarray, var: np.ndarray, v: np.ndarray) -> None:
        ri.append(r * D + c)
        ci.append(var)
        vals.append(v)

    idx = np.arange(d)
    put(idx, idx, np.full(d, nv - 1), -np.ones(d))  # -ρ I on the input block
    vbase = 0
    for k, W in enumerate(Ws):
        Wn = W.numpy()
        a, b = alphas[k].numpy(), betas[k].numpy()
        n_k, n_in = Wn.shape
        var = vbase + np.arange(n_k)
        rows_in = offs[k] + np.arange(n_in)
        rows_out = offs[k + 1] + np.arange(n_k)
        # cross terms Wᵀ diag((a+b) t) and its transpose
        pp, ii = np.meshgrid(np.arange(n_in), np.arange(n_k), indexing="ij")
        cv = (Wn.T * (a + b)[None, :]).ravel()
        put(rows_in[pp.ravel()], rows_out[ii.ravel()], var[ii.ravel()], cv)
        put(rows_out[ii.ravel()], rows_in[pp.ravel()], var[ii.ravel()], cv)
        put(rows_out, rows_out, var, -2 * np.ones(n_k))  # -2 diag(t)
        if bool(np.any(a * b != 0)):  # -2 Wᵀ diag(a b t) W
            for i in range(n_k):
                pq_p, pq_q = np.meshgrid(rows_in, rows_in, indexing="ij")
                put(pq_p.ravel(), pq_q.ravel(), np.full(n_in * n_in, var[i]),
                    (-2 * a[i] * b[i] * np.outer(Wn[i], Wn[i])).ravel())
        vbase += n_k
    G = sparse.csr_matrix((np.concatenate(vals), (np.concatenate(ri), np.concatenate(ci))), shape=(D * D, nv))
    ln = last.numpy()
    M0 = np.zeros((D, D))
    M0[offs[-2]:, offs[-2]:] = ln.T @ ln
    z = cp.Variable(nv, nonneg=True)
    M = cp.reshape(G @ z, (D, D), order="C") + M0
    prob = cp.Problem(cp.Minimize(z[nv - 1]), [(M + M.T) / 2 << 0])
    prob.solve(solver=solver)
    solve_s = time.perf_counter() - t0
    if prob.status not in ("optimal", "optimal_inaccurate") or z.value is None:
        raise ValueError(f"LipSDP solver {solver} ended with status {prob.status}")
    zv = torch.tensor(np.asarray(z.value), dtype=torch.float64).clamp_min(0)
    t = list(torch.split(zv[:-1], sizes))
    best = None
    for scale in (1.0, 1.001, 1.01, 1.05, 1.2):
        r = lipsdp_verify(Ws, alphas, betas, [scale * tk for tk in t], last)
        if r is not None and (best is None or r < best):
            best = r
    if best is None:
        raise ValueError("LipSDP multipliers from the solver failed the float64 check")
    L = math.sqrt(best)
    pairs = None
    if pair_rows is not None:
        K = pair_rows.shape[0]
        pairs = torch.full((K, K), math.sqrt(2) * L, dtype=torch.float64)
        for y in range(K):
            for j in range(y + 1, K):
                row = (pair_rows[y] - pair_rows[j]).view(1, -1)
                cands = [lipsdp_verify(Ws, alphas, betas, [c * tk for tk in t], row) for c in (1.0, 1.5, 2.0, 3.0)]
                ok = [c for c in cands if c is not None]
                if ok:
                    pairs[y, j] = pairs[j, y] = min(float(pairs[y, j]), math.sqrt(min(ok)))
    info = {"solver": solver, "status": prob.status, "solver_rho": float(zv[-1]), "verified_rho": best,
            "matrix_size": d + sum(sizes), "solve_seconds": solve_s}
    return L, pairs, info


# --------------------------------------------------------------------------- the report


@dataclass
class UpperBound:
    """One sound upper bound: its method, value, cost and the assumptions it rests on."""

    method: str
    value: float
    seconds: float
    assumptions: str
    pairs: list[list[float]] | None = None  # per-class-pair constants L(f_y − f_j), (K, K)


@dataclass
class LipschitzReport:
    """Lower and upper bounds on the L2 Lipschitz constant, with their cost.

    ``upper`` is the smallest sound upper bound (None, with ``upper_reason``,
    for models whose structure is not fully understood); ``uppers`` lists each
    method's bound; ``lower`` is the best lower bound and ``lower_method`` the
    method that found it.
    """

    lower: float
    upper: float | None
    lower_quotient: float
    lower_jacobian: float
    exact: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    lower_method: str = ""
    upper_method: str | None = None
    upper_reason: str | None = None
    uppers: list[UpperBound] = field(default_factory=list)
    lower_methods: dict[str, float] = field(default_factory=dict)
    plan: dict[str, Any] | None = None
    """The lower-bound ascent's cost-bounded settings (:class:`robustclip.bounds.budget.AscentPlan`), if any."""

    @property
    def ratio(self) -> float | None:
        """``upper / lower`` (inf when the lower bound is 0; None without an upper bound)."""
        if self.upper is None:
            return None
        return self.upper / self.lower if self.lower > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


def upper_bounds(model: nn.Module, in_shape: tuple[int, ...], *, sdp: bool = False, solver: str = "SCS",
                 ) -> tuple[list[UpperBound], str | None]:
    """Every sound upper bound available for ``model``, or ``([], reason)``.

    Methods: ``layer_product`` (always), ``layer_pair`` (affine chains), and
    with ``sdp=True`` ``lipsdp`` (fully connected chains; needs cvxpy, the
    ``sdp`` extra: without it the reason is recorded in the list as a
    method with value inf). :func:`robustclip.bounds.eclipse.eclipse_upper` adds
    the ECLipsE bound. Each carries per-class-pair constants when the
    model's last op is affine (``√2·L`` and ``||w_y − w_j||`` based).
    Models that are not such a chain (BatchNorm, pooling, residual blocks,
    their own ``forward``) get one method, ``graph_product``
    (:mod:`robustclip.bounds.graph`, no per-pair constants), or ``([], reason)``.
    """
    if known_layers(model)[0] is None:  # BatchNorm, pooling, residual blocks, its own forward: the traced graph
        t0 = time.perf_counter()
        try:
            gb = graph_bound(model, in_shape)
        except ValueError as exc:
            return [], str(exc).removeprefix("no Lipschitz upper bound: ")
        return [UpperBound("graph_product", gb.l2, time.perf_counter() - t0,
                           "torch.fx graph: per-layer norms multiplied along paths, residual sums added "
                           "(L(s) + L(f)); conv: circular FFT bound or dense SVD; BatchNorm folded after conv/linear, "
                           f"else max |γ|/√(σ²+ε); max pool √m; avg pool Schur test; L∞→L∞ bound {gb.linf:.6g}")], None
    try:
        t0 = time.perf_counter()
        norms = layer_norms(model, in_shape)
        prod = math.prod(v for _, v in norms)
        t_prod = time.perf_counter() - t0
    except ValueError as exc:
        return [], str(exc).removeprefix("no Lipschitz upper bound: ")
    out = [UpperBound("layer_product", prod, t_prod, "product of per-layer norms (SVD; conv: Gram iteration "
                      "on the dense matrix at this input size); activation slopes sigmoid ≤ 1/4, relu/tanh ≤ 1")]
    t0 = time.perf_counter()
    ops, why = affine_ops(model, in_shape)
    if ops is None:
        out[0].assumptions += f"; no other bounds: {why}"
        return out, None
    mats, _, _ = _chain(ops)
    last_affine = bool(ops) and isinstance(ops[-1], Affine)
    rows = mats[-1] if last_affine else None

    def pair_matrix(L: float, per_row: Any = None) -> list[list[float]] | None:
        if rows is None:
            return None
        K = rows.shape[0]
        P = torch.full((K, K), math.sqrt(2) * L, dtype=torch.float64)
        if per_row is not None:
            for y in range(K):
                for j in range(y + 1, K):
                    P[y, j] = P[j, y] = min(float(P[y, j]), per_row(y, j))
        P.fill_diagonal_(0.0)
        return P.tolist()

    out[0].pairs = pair_matrix(prod, _head_pairs(model, norms))
    lp = layer_pair_bound(ops)
    pairs = None
    if rows is not None:
        rws = rows
        shared: dict[tuple[str, int], float] = {}
        pairs = pair_matrix(lp, lambda y, j: layer_pair_bound(ops, last=(rws[y] - rws[j]).view(1, -1), cache=shared))
    out.append(UpperBound("layer_pair", min(lp, prod), time.perf_counter() - t0,
                          "adjacent layers combined as ||W2 D W1|| ≤ m||W2W1|| + r||W2||·||W1|| for activation "
                          "slopes in [m−r, m+r]; pair constants use the row differences w_y − w_j", pairs))
    if sdp:
        t0 = time.perf_counter()
        try:
            L, P, info = lipsdp(ops, solver=solver, pair_rows=rows)
            Pl = None
            if P is not None:
                P.fill_diagonal_(0.0)
                Pl = P.tolist()
            out.append(UpperBound("lipsdp", L, time.perf_counter() - t0,
                                  f"LipSDP-Neuron (slope-restricted activations), solved with {info['solver']} "
                                  f"({info['status']}), multipliers re-verified in float64 (eigenvalues); "
                                  f"matrix {info['matrix_size']}x{info['matrix_size']} after row-space reduction", Pl))
        except ImportError:
            out.append(UpperBound("lipsdp", math.inf, 0.0, "not computed: cvxpy is not installed "
                                  "(pip install 'robustclip[sdp]')"))
        except ValueError as exc:
            out.append(UpperBound("lipsdp", math.inf, time.perf_counter() - t0, f"not computed: {exc}"))
    return out, None


def _head_pairs(model: nn.Module, norms: list[tuple[str, float]]) -> Any:
    """``(y, j) -> L(body) · ||w_y − w_j||`` (GloRo's class-pair constants; sound with the product bound of the
    body, ``norms`` from :func:`layer_norms`), or None when the last leaf is not linear."""
    layers, _ = known_layers(model)
    if not layers or not isinstance(layers[-1][1], nn.Linear):
        return None
    body = math.prod(v for _, v in norms[:-1])
    W = layers[-1][1].weight.detach().double().cpu()
    return lambda y, j: body * float((W[y] - W[j]).norm()) * (1 + SLACK)


def best_pairs(uppers: list[UpperBound]) -> torch.Tensor | None:
    """Elementwise minimum ``(K, K)`` of the per-class-pair constants over methods (None if none has them)."""
    mats = [torch.tensor(u.pairs, dtype=torch.float64) for u in uppers if u.pairs is not None]
    if not mats:
        return None
    return torch.stack(mats).min(dim=0).values


# --------------------------------------------------------------------------- lower bounds


def _jacobian_norms(model: nn.Module, z: torch.Tensor, *, create_graph: bool = False) -> torch.Tensor:
    """Exact Jacobian spectral norms ``(N,)`` at points ``z`` ``(N, ...)`` (``torch.func``, SVD of each Jacobian)."""
    from torch.func import jacrev, vmap

    def f(v: torch.Tensor) -> torch.Tensor:
        return model(v.unsqueeze(0)).squeeze(0).flatten()

    J = vmap(jacrev(f))(z)  # (N, k, *in)
    J = J.flatten(2)
    return torch.linalg.matrix_norm(J, ord=2)


def jacobian_norms_batched(model: nn.Module, x: torch.Tensor, *, batch: int = 1000) -> torch.Tensor:
    """Jacobian spectral norms ``(N,)`` of every point of ``x`` ``(N, ...)`` in [0,1] (exact per point)."""
    out = []
    with eval_mode(model), torch.no_grad():
        for i in range(0, x.shape[0], batch):
            out.append(_jacobian_norms(model, x[i : i + batch]).detach())
    return torch.cat(out) if out else torch.zeros(0)


def jacobian_ascent(model: nn.Module, z: torch.Tensor, *, steps: int = 30, step_size: float = 0.5,
                    decay: float = 0.9) -> tuple[float, torch.Tensor]:
    """Gradient ascent on the Jacobian spectral norm from starts ``z`` ``(N, ...)``, kept in [0,1].

    Normalised-gradient steps of L2 length ``step_size · decay^t`` (a decaying
    schedule); a step is kept per point only if it raises the norm. Returns
    the best norm seen (a lower bound on L) and the final points.
    """
    z = z.detach().clone()
    with torch.no_grad():
        best_v = _jacobian_norms(model, z)
    view = (-1, *([1] * (z.dim() - 1)))
    eta = torch.full((z.shape[0],), step_size)
    for _ in range(steps):
        zi = z.clone().requires_grad_(True)
        s = _jacobian_norms(model, zi)
        (g,) = torch.autograd.grad(s.sum(), zi, allow_unused=True)
        if g is None:
            break
        n = g.flatten(1).norm(dim=1).clamp_min(1e-30)
        cand = (z + (eta / n).view(view) * g).clamp(0, 1).detach()
        with torch.no_grad():
            sc = _jacobian_norms(model, cand)
        up = sc > best_v
        z = torch.where(up.view(view), cand, z)
        best_v = torch.where(up, sc, best_v)
        eta = torch.where(up, eta * 1.2, eta * decay * 0.5).clamp(1e-4, 5.0)
    return float(best_v.max()) if best_v.numel() else 0.0, z


def lower_bounds(model: nn.Module, x: torch.Tensor, *, seed: int = 0, budget: str = "normal",
                 pairs: int = 64, steps: int = 50) -> dict[str, float]:
    """Lower bounds on the L2 Lipschitz constant by method (every value is a measured quotient or Jacobian norm).

    ``x``: data ``(N, ...)`` in [0,1]. Methods: ``jacobian_data`` (exact
    Jacobian norm at every point of ``x``, a public floor), ``jacobian_ascent``
    (restarts from the top data points, uniform random points in [0,1] and
    noise around data, decaying steps), ``quotient_data`` (pair ascent from
    data pairs), ``quotient_jacobian`` (pair ascent from tiny pairs at the best
    Jacobian point along random directions). ``budget``: ``quick`` | ``normal``
    | ``thorough`` scales restarts and steps; seeded by ``seed``.
    """
    scale = {"quick": 1, "normal": 2, "thorough": 4}[budget]
    g = torch.Generator().manual_seed(seed)
    out: dict[str, float] = {}
    with frozen(model):
        js = jacobian_norms_batched(model, x)
        out["jacobian_data"] = float(js.max()) if js.numel() else 0.0
        top = x[js.argsort(descending=True)[: 8 * scale]]
        starts = [top,
                  torch.rand((8 * scale, *x.shape[1:]), generator=g),
                  (x[torch.randint(0, x.shape[0], (8 * scale,), generator=g)]
                   + 0.1 * torch.randn((8 * scale, *x.shape[1:]), generator=g)).clamp(0, 1)]
        best_j, best_z = 0.0, top[:1]
        for z0 in starts:
            v, z = jacobian_ascent(model, z0, steps=50 * scale, step_size=1.0)
            if v > best_j:
                best_j = v
                with torch.no_grad():
                    best_z = z[_jacobian_norms(model, z).argmax()].unsqueeze(0)
        out["jacobian_ascent"] = best_j
        out["quotient_data"] = lower_bound_quotient(model, x, pairs=pairs, steps=steps, seed=seed)
        # tiny to moderate pairs at the best Jacobian point along its top right singular vector
        from torch.func import jacrev

        J = jacrev(lambda v: model(v.unsqueeze(0)).squeeze(0).flatten())(best_z[0]).flatten(1)
        vec = torch.linalg.svd(J.double(), full_matrices=False).Vh[0].float().view(best_z.shape[1:])
        hs = torch.tensor([1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3] * (2 * scale))[: 4 * scale * 3]
        view = (-1, *([1] * (best_z.dim() - 1)))
        a = (best_z - hs.view(view) / 2 * vec).clamp(0, 1)
        b = (best_z + hs.view(view) / 2 * vec).clamp(0, 1)
        P = torch.cat([a, b])
        separate(P, generator=g)
        _, q = pair_ascent(model, P, steps=steps * scale, eta=0.01)
        out["quotient_jacobian"] = float(q.max())
    return out


def _chunks(m: int, batch: int | None) -> list[slice]:
    """Index ranges of ``m`` points in chunks of ``batch`` (one chunk for None)."""
    step = m if not batch or batch >= m else int(batch)
    return [slice(i, min(i + step, m)) for i in range(0, m, max(step, 1))]


def lower_bound_quotient(model: nn.Module, x: torch.Tensor, *, pairs: int = 64, steps: int = 50,
                         radius: float = 0.5, seed: int = 0, batch: int | None = None) -> float:
    """Best difference quotient after pair ascent from data pairs (a lower bound).

    The starts are drawn on the CPU from ``seed`` before any work (pair i's start depends only on ``seed`` and
    i), and every pair ascends on its own, so ``batch`` (pairs per chunk; None: all at once) and the device change
    the cost, not the result.
    """
    g = torch.Generator().manual_seed(seed)
    best = 0.0
    for mode in ("partial_random", "plain"):
        P = init_pairs(x, pairs, mode=mode, radius=radius, generator=g)
        a, b = split_pairs(P)
        for sl in _chunks(a.shape[0], batch):
            _, q = pair_ascent(model, torch.cat([a[sl], b[sl]]), steps=steps)
            best = max(best, float(q.max()))
    return best


def jacobian_spectral_norm(model: nn.Module, x: torch.Tensor, *, iters: int = 20,
                           generator: torch.Generator | None = None,
                           start: torch.Tensor | None = None) -> torch.Tensor:
    """Largest singular value of the Jacobian at each point of ``x`` ``(N, ...)``: ``(N,)``.

    Power iteration on ``J^T J`` with autograd (a JVP through the double-backward
    trick, then a VJP), one vector per sample; ``||J v||`` for a unit ``v`` is
    never above the true value. ``start``: the initial vectors ``(N, ...)`` (default: drawn from ``generator``
    on the CPU).
    """
    x = x.detach()
    v = (torch.randn(x.shape, generator=generator) if start is None else start).to(x.device)
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
                         iters: int = 10, step_size: float = 0.1, seed: int = 0, batch: int | None = None) -> float:
    """Largest local Jacobian spectral norm found by ascent from data points (a lower bound).

    Starts at ``points`` data points, then moves each along the gradient of its
    Jacobian norm (kept in [0,1]); every value seen is a valid lower bound. All random draws (start points,
    power-iteration vectors, output weights of each move) are made on the CPU from ``seed`` before any work, in
    one fixed order, so point i's path depends only on ``seed`` and i: ``batch`` (points per chunk; None: all at
    once) and the device change the cost, not the result.
    """
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, x.shape[0], (min(points, x.shape[0]),), generator=g)
    z = x[idx].detach().clone()
    if z.shape[0] == 0:
        return 0.0
    with eval_mode(model):
        with torch.no_grad():
            k_out = tuple(model(z[:1]).shape[1:])
        draws = []  # per move: power-iteration starts (N, *in), output weights (N, *out); the order of earlier releases
        for _ in range(steps + 1):
            v0 = torch.randn(z.shape, generator=g)
            w = torch.randn((z.shape[0], *k_out), generator=g)
            draws.append((v0, w))
        best = 0.0
        view = (-1, *([1] * (z.dim() - 1)))
        for sl in _chunks(z.shape[0], batch):
            zc = z[sl]
            for v0, w in draws:
                s = jacobian_spectral_norm(model, zc, iters=iters, start=v0[sl])
                best = max(best, float(s.max()))
                zi = zc.clone().requires_grad_(True)
                gsum = _jacobian_norm_grad(model, zi, w[sl])
                if gsum is None:
                    break
                n = gsum.flatten(1).norm(dim=1).clamp_min(1e-30).view(view)
                zc = (zc + step_size * gsum / n).clamp(0, 1).detach()
    return best


def _jacobian_norm_grad(model: nn.Module, z: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
    """Gradient ``(N, ...)`` of ``||∇_z <f(z), w>||`` per point (``w``: output weights ``(N, k)``, on any device)."""
    out = model(z)
    (grad_in,) = torch.autograd.grad((out * w.to(z.device)).sum(), z, create_graph=True)
    obj = grad_in.flatten(1).norm(dim=1).sum()
    if not obj.requires_grad:
        return None
    (gz,) = torch.autograd.grad(obj, z, allow_unused=True)  # None for a linear map: its Jacobian is constant
    return gz


def exact_1d(model: nn.Module, *, grid: int = 20001, lo: float = 0.0, hi: float = 1.0) -> float:
    """max |f'(x)| over a fine grid on [lo, hi], for a 1-D model ``(N,1) -> (N,1)``."""
    x = torch.linspace(lo, hi, grid, device=_device(model)).unsqueeze(1).requires_grad_(True)
    with eval_mode(model):
        out = model(x)
        (g,) = torch.autograd.grad(out.sum(), x)
    return float(g.abs().max())


def lower_estimate(model: nn.Module, x: torch.Tensor, *, seed: int = 0, pairs: int = 64, steps: int = 50,
                   jac_points: int | None = None, jac_steps: int = 10, jac_iters: int = 10,
                   batch: int | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """The two ascents of :func:`estimate` alone: ``({"quotient_pairs": .., "jacobian_power": ..}, seconds)``.

    ``x``: data ``(N, ...)`` in [0,1]. Pair ascent with ``pairs`` pairs for ``steps`` steps; Jacobian ascent from
    ``jac_points`` (default ``pairs``) points for ``jac_steps`` moves of ``jac_iters`` power iterations. Seeded by
    ``seed`` alone: independent of every other call (no warm start), of ``batch`` and of the device.
    """
    t0 = time.perf_counter()
    lq = lower_bound_quotient(model, x, pairs=pairs, steps=steps, seed=seed, batch=batch)
    t1 = time.perf_counter()
    lj = lower_bound_jacobian(model, x, points=pairs if jac_points is None else jac_points, steps=jac_steps,
                              iters=jac_iters, seed=seed, batch=batch)
    t2 = time.perf_counter()
    return {"quotient_pairs": lq, "jacobian_power": lj}, {"quotient": t1 - t0, "jacobian": t2 - t1}


def estimate(model: nn.Module, x: torch.Tensor, *, in_shape: tuple[int, ...] | None = None, seed: int = 0,
             pairs: int = 64, steps: int = 50, exact: bool = False, sdp: bool = False,
             budget: str | None = None, plan: Any = None, batch: int | None = None) -> LipschitzReport:
    """Lower bounds (pair and Jacobian ascent), sound upper bounds and, for 1-D models, the exact constant.

    ``x``: data ``(N, *in_shape)`` in [0,1] to start the ascents from.
    Lower bounds are always returned; ``upper`` is None (with
    ``upper_reason``) for models that are not fully understood. ``plan``: an
    :class:`robustclip.bounds.budget.AscentPlan` whose settings replace ``pairs`` and ``steps`` (the
    cost-bounded settings of a ``--lipschitz`` mode; recorded in the report). ``budget``
    (``quick`` | ``normal`` | ``thorough``) adds the restart-based lower bounds
    of :func:`lower_bounds`, including the Jacobian floor over all of ``x``
    (off by default so the gate's committed baselines stay comparable);
    ``sdp`` adds LipSDP (needs cvxpy). ``batch``: points per chunk of the ascents (the result does not depend on it).
    """
    in_shape = in_shape or tuple(x.shape[1:])
    kw: dict[str, Any] = {"pairs": pairs, "steps": steps}
    if plan is not None:
        kw = dict(plan.settings())
    methods, secs = lower_estimate(model, x, seed=seed, batch=batch, **kw)
    t2 = time.perf_counter()
    if budget is not None:
        methods.update(lower_bounds(model, x, seed=seed, budget=budget, pairs=kw["pairs"], steps=kw["steps"]))
    t3 = time.perf_counter()
    ups, reason = upper_bounds(model, in_shape, sdp=sdp)
    t4 = time.perf_counter()
    finite = [u for u in ups if math.isfinite(u.value)]
    best_up = min(finite, key=lambda u: u.value) if finite else None
    ex = exact_1d(model) if exact else None
    lower_method = max(methods, key=lambda k: methods[k])
    lquo = max(v for k, v in methods.items() if k.startswith("quotient"))
    ljac = max(v for k, v in methods.items() if k.startswith("jacobian"))
    return LipschitzReport(lower=max(lquo, ljac), upper=best_up.value if best_up else None, lower_quotient=lquo,
                           lower_jacobian=ljac, exact=ex,
                           seconds={**secs, "lower_restarts": t3 - t2, "upper": t4 - t3},
                           seed=seed, lower_method=lower_method, upper_method=best_up.method if best_up else None,
                           upper_reason=reason, uppers=ups, lower_methods=methods,
                           plan=None if plan is None else plan.to_dict())
