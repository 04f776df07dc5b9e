"""A fast LipSDP-class upper bound by sequential Schur complements (ECLipsE, Xu & Sivaranjani, NeurIPS 2024).

Our own implementation of ECLipsE's small-SDP variant (not ECLipsE-Fast), for
feed-forward chains ``W_1, φ, W_2, φ, ..., W_L`` whose elementwise
activations have slopes in ``[0, β]`` (ReLU, tanh: β = 1; sigmoid: β = 1/4;
``W_i`` is scaled by β so every slope lies in [0, 1]).

LipSDP-Neuron certifies ``L ≤ √ρ`` when, for diagonal multipliers ``T_i ≥ 0``,
the block-tridiagonal matrix with diagonal ``(ρI, 2T_1, ..., 2T_{L−1} −
W_LᵀW_L)`` and off-diagonal blocks ``−T_i W_i`` is positive semidefinite.
Eliminating the blocks one at a time from the input (``X_0 = I``; with the
multipliers normalised by ρ) gives ``X_i = 2Λ_i − Λ_i W_i X_{i−1}⁻¹ W_iᵀ Λ_i``
and ``ρ = λ_max(W_L X_{L−1}⁻¹ W_Lᵀ)``. ECLipsE picks each ``Λ_i`` in turn by a
small SDP of the size of one layer: the largest ``c`` with ``X_i ⪰ c ·
W_{i+1}ᵀ W_{i+1}``. That problem is jointly convex in ``(Λ_i, c)``, so here it
is solved without a general SDP solver, as a concave maximisation of ``c`` over
the diagonal ``Λ_i`` (gradient ascent with backtracking in float64).

Optionally (``refine`` steps) the multipliers of all layers are then improved
together: the smallest ρ for given unnormalised multipliers, obtained by the
same elimination from the output end, is a convex function of them, so
descent moves towards LipSDP-Neuron's optimum.

Soundness does not rest on any of that: the final multipliers are accepted
only after :func:`robustclip.bounds.lipschitz.lipsdp_verify` has assembled the full
LipSDP matrix and checked its eigenvalues in float64; a bound that fails the
check is not returned. Class-pair constants ``L(f_y − f_j)`` replace the last
layer by its row difference ``w_y − w_j`` and redo the last stage.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .lipsdp import verified_rho
from .structure import Affine, _chain, affine_ops
from .upper import UpperBound

Objective = Callable[[torch.Tensor], torch.Tensor]


def _chain_for_eclipse(ops: list[Affine | nn.Module]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``(Ws, last)``: hidden weight matrices scaled by their activation's β, in the row space of ``W_1``.

    Raises ``ValueError`` (one line) for structures ECLipsE does not cover.
    """
    from ..models.activations import is_sorting

    if any(is_sorting(op) for op in ops):
        raise ValueError("ECLipsE needs elementwise activations with slopes in [0, β]; MinMax/GroupSort are not "
                         "elementwise")
    mats, factors, between = _chain(ops)
    if len(mats) < 2 or factors[0] != 1.0 or factors[-1] != 1.0:
        raise ValueError("ECLipsE needs affine, activation, ..., affine with no activation first or last")
    slopes = between[1:-1]
    if any(s is None for s in slopes):
        raise ValueError("ECLipsE needs exactly one activation between affine layers")
    if any(s is not None and s[0] != 0.0 for s in slopes):
        raise ValueError("ECLipsE here covers activation slopes in [0, β] (ReLU, tanh, sigmoid), not LeakyReLU")
    Ws = [W * float(s[1]) for W, s in zip(mats[:-1], slopes) if s is not None]
    _, Sv, Vh = torch.linalg.svd(Ws[0], full_matrices=False)
    rank = int((Sv > Sv.max() * 1e-12).sum()) if Sv.numel() else 0
    Ws = [Ws[0] @ Vh[:rank].T] + Ws[1:]
    return Ws, mats[-1]


def _ascend(f: Objective, theta: torch.Tensor, iters: int, *, step: float = 0.5, memory: int = 8) -> torch.Tensor:
    """Minimise ``f(θ)`` (``+inf`` outside its domain) by L-BFGS steps with Armijo backtracking; returns the best θ.

    Any θ is acceptable to the callers (the result is verified afterwards), so this only has to make progress.
    """
    theta = theta.detach().clone()

    def value_grad(th: torch.Tensor) -> tuple[float, torch.Tensor | None]:
        th = th.clone().requires_grad_(True)
        v = f(th)
        if not bool(torch.isfinite(v)):
            return math.inf, None
        (g,) = torch.autograd.grad(v, th)
        return float(v.detach()), g

    val, g0 = value_grad(theta)
    if g0 is None:
        return theta
    g: torch.Tensor = g0
    S: list[torch.Tensor] = []
    Y: list[torch.Tensor] = []
    first = True
    for _ in range(iters):
        q = g.clone()  # two-loop recursion: d = -H g
        alphas = []
        for s_k, y_k in zip(reversed(S), reversed(Y)):
            a = float(s_k @ q) / float(y_k @ s_k)
            alphas.append(a)
            q -= a * y_k
        if S:
            q *= float(S[-1] @ Y[-1]) / float(Y[-1] @ Y[-1])
        for (s_k, y_k), a in zip(zip(S, Y), reversed(alphas)):
            q += (a - float(y_k @ q) / float(y_k @ s_k)) * s_k
        d = -q
        slope = float(g @ d)
        if slope >= 0 or first:
            d, slope = -g * (step / max(float(g.norm()), 1e-300)), -float(g.norm()) * step
        t = 1.0
        g2: torch.Tensor | None = None
        while t > 1e-10:
            cand = theta + t * d
            v2, g2 = value_grad(cand)
            if g2 is not None and v2 <= val + 1e-4 * t * slope:
                break
            g2 = None
            t *= 0.5
        if g2 is None:
            break
        first = False
        s_new, y_new = cand - theta, g2 - g
        if float(s_new @ y_new) > 1e-12:
            S.append(s_new)
            Y.append(y_new)
            if len(S) > memory:
                S.pop(0)
                Y.pop(0)
        done = val - v2 < 1e-9 * max(1.0, abs(val))
        theta, val, g = cand, v2, g2
        if done:
            break
    return theta


def _inv_sym(B: torch.Tensor) -> torch.Tensor | None:
    """``B⁻¹`` for symmetric positive definite ``B``, or None when ``B`` is not (Cholesky fails)."""
    Lc, info = torch.linalg.cholesky_ex((B + B.T) / 2)
    if int(info) != 0:
        return None
    return torch.cholesky_inverse(Lc)


def _stage(G: torch.Tensor, A_rows: torch.Tensor, iters: int) -> torch.Tensor:
    """ECLipsE's stage problem: the diagonal ``λ`` ``(n,)`` maximising ``c`` with ``2Λ − ΛGΛ ⪰ c AᵀA``.

    ``G`` ``(n, n)`` PSD: ``W_i X_{i−1}⁻¹ W_iᵀ``; ``A_rows`` ``(m, n)``: the next layer. ``1/c`` is the largest
    eigenvalue of ``A B⁻¹ Aᵀ`` with ``B = 2Λ − ΛGΛ`` (which must be positive definite).
    """
    n = G.shape[0]
    top = float(torch.linalg.eigvalsh(G).max()) if n else 1.0

    def f(theta: torch.Tensor) -> torch.Tensor:
        lam = theta.exp()
        B = 2 * torch.diag(lam) - lam.unsqueeze(1) * G * lam.unsqueeze(0)
        Binv = _inv_sym(B)
        if Binv is None:
            return torch.tensor(math.inf, dtype=torch.float64)
        M = A_rows @ Binv @ A_rows.T
        return torch.linalg.eigvalsh((M + M.T) / 2).max().log()

    best_s, best_v = 1.0 / max(top, 1e-300), math.inf
    for s in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75):  # the best multiple of the identity first
        v = float(f(torch.full((n,), math.log(s / max(top, 1e-300)), dtype=torch.float64)))
        if v < best_v:
            best_s, best_v = s / max(top, 1e-300), v
    theta = torch.full((n,), math.log(best_s), dtype=torch.float64)
    return _ascend(f, theta, iters).exp()


def eclipse_multipliers(Ws: list[torch.Tensor], last: torch.Tensor, *, iters: int = 8,
                        ) -> tuple[list[torch.Tensor], float]:
    """ECLipsE's stagewise multipliers: unnormalised ``T_i`` ``(n_i,)`` and the estimate ``ρ`` (not yet verified)."""
    X_inv = torch.eye(Ws[0].shape[1], dtype=torch.float64)
    lams: list[torch.Tensor] = []
    for i, W in enumerate(Ws):
        G = W @ X_inv @ W.T
        nxt = Ws[i + 1] if i + 1 < len(Ws) else last
        lam = _stage(G, nxt, iters)
        lams.append(lam)
        X = 2 * torch.diag(lam) - lam.unsqueeze(1) * G * lam.unsqueeze(0)
        inv = _inv_sym(X)
        if inv is None:
            raise ValueError("ECLipsE stage matrix is not positive definite")
        X_inv = inv
    M = last @ X_inv @ last.T
    rho = float(torch.linalg.eigvalsh((M + M.T) / 2).max())
    return [rho * lam for lam in lams], rho


def _rho_backward(Ws: list[torch.Tensor], last: torch.Tensor, t: list[torch.Tensor]) -> torch.Tensor:
    """The smallest ρ for unnormalised multipliers ``t`` (elimination from the output end; +inf if infeasible)."""
    Y = 2 * torch.diag(t[-1]) - last.T @ last
    for i in range(len(Ws) - 1, 0, -1):
        Yinv = _inv_sym(Y)
        if Yinv is None:
            return torch.tensor(math.inf, dtype=torch.float64)
        TW = t[i].unsqueeze(1) * Ws[i]
        Y = 2 * torch.diag(t[i - 1]) - TW.T @ Yinv @ TW
    Yinv = _inv_sym(Y)
    if Yinv is None:
        return torch.tensor(math.inf, dtype=torch.float64)
    TW = t[0].unsqueeze(1) * Ws[0]
    S = TW.T @ Yinv @ TW
    return torch.linalg.eigvalsh((S + S.T) / 2).max()


def refine(Ws: list[torch.Tensor], last: torch.Tensor, t: list[torch.Tensor], *, iters: int = 100,
           ) -> list[torch.Tensor]:
    """Improve all multipliers together by descent on ``log ρ(t)`` (convex in ``t``; here in ``log t``)."""
    sizes = [x.numel() for x in t]

    def f(theta: torch.Tensor) -> torch.Tensor:
        return _rho_backward(Ws, last, list(torch.split(theta.exp(), sizes))).log()

    theta = torch.cat([x.clamp_min(1e-300).log() for x in t])
    return list(torch.split(_ascend(f, theta, iters, step=0.1).exp(), sizes))


def _verified(Ws: list[torch.Tensor], last: torch.Tensor, t: list[torch.Tensor]) -> float | None:
    """``ρ`` certified by the float64 eigenvalue check of the full LipSDP matrix, trying small rescalings."""
    zeros = [torch.zeros_like(x) for x in t]
    ones = [torch.ones_like(x) for x in t]
    return verified_rho(Ws, zeros, ones, t, last, (1.0, 1.0001, 1.001, 1.01, 1.05), first=True)


def eclipse(ops: list[Affine | nn.Module], *, pair_rows: torch.Tensor | None = None, iters: int = 8,
            refine_iters: int = 0) -> tuple[float, torch.Tensor | None, dict[str, Any]]:
    """An ECLipsE upper bound on the L2 Lipschitz constant of the chain ``ops`` (:func:`lipschitz.affine_ops`).

    ``pair_rows`` ``(K, n_last)``: the last layer's rows, for per-class-pair constants (the last stage redone with
    ``w_y − w_j``). ``iters``: ascent steps per stage; ``refine_iters``: joint descent steps after the stages.
    Returns ``(L, pairs (K, K) or None, info)``; raises ``ValueError`` (one line) for other structures or when no
    multipliers pass the eigenvalue check.
    """
    t0 = time.perf_counter()
    Ws, last = _chain_for_eclipse(ops)
    t, rho_est = eclipse_multipliers(Ws, last, iters=iters)
    stage_rho = _verified(Ws, last, t)
    best: float | None
    if refine_iters > 0:
        t2 = refine(Ws, last, t, iters=refine_iters)
        r2 = _verified(Ws, last, t2)
        if r2 is not None and (stage_rho is None or r2 < stage_rho):
            t, best = t2, r2
        else:
            best = stage_rho
    else:
        best = stage_rho
    if best is None:
        raise ValueError("ECLipsE multipliers failed the float64 eigenvalue check")
    L = math.sqrt(best)
    pairs = None
    if pair_rows is not None:
        pairs = _pair_constants(Ws, t, best, pair_rows, L, iters=iters)
    info = {"stage_rho": stage_rho, "estimate_rho": rho_est, "verified_rho": best,
            "refined": refine_iters > 0 and best != stage_rho, "seconds": time.perf_counter() - t0}
    return L, pairs, info


def _pair_constants(Ws: list[torch.Tensor], t: list[torch.Tensor], rho: float, rows: torch.Tensor, L: float, *,
                    iters: int) -> torch.Tensor:
    """``(K, K)`` verified constants of ``f_y − f_j``: the last stage redone for the row difference, else ``√2 L``."""
    K = rows.shape[0]
    pairs = torch.full((K, K), math.sqrt(2) * L, dtype=torch.float64)
    pairs.fill_diagonal_(0.0)
    # X_{L-2}⁻¹ from the shared stages, normalised by ρ (X_0 = I), which ρ ≥ ρ(t) keeps positive definite
    X_inv = torch.eye(Ws[0].shape[1], dtype=torch.float64)
    scale = rho
    for W, x in zip(Ws[:-1], t[:-1]):
        lam = x / scale
        G = W @ X_inv @ W.T
        inv = _inv_sym(2 * torch.diag(lam) - lam.unsqueeze(1) * G * lam.unsqueeze(0))
        if inv is None:
            return pairs
        X_inv = inv
    G = Ws[-1] @ X_inv @ Ws[-1].T
    for y in range(K):
        for j in range(y + 1, K):
            row = (rows[y] - rows[j]).view(1, -1)
            lam = _stage(G, row, iters)
            X = 2 * torch.diag(lam) - lam.unsqueeze(1) * G * lam.unsqueeze(0)
            inv = _inv_sym(X)
            if inv is None:
                continue
            rho = float((row @ inv @ row.T).squeeze())
            cand = [x / scale * rho for x in t[:-1]] + [lam * rho]
            r = _verified(Ws, row, cand)
            if r is not None:
                pairs[y, j] = pairs[j, y] = min(float(pairs[y, j]), math.sqrt(r))
    return pairs


def _widest(model: nn.Module, in_shape: tuple[int, ...]) -> int:
    """Most outputs per sample of any Linear or Conv layer of ``model``."""
    from .budget import leaf_outputs

    return max((math.prod(shape[1:]) for _, shape in leaf_outputs(model, in_shape)), default=0)


DEFAULT_MAX_WIDTH = 1024
"""Widest hidden layer (neurons) for which ``evaluate`` computes ECLipsE by default: each stage factors matrices of a
layer's width, so a convolution unrolled to thousands of neurons takes minutes (``--sdp`` still computes it)."""


def eclipse_upper(model: nn.Module, in_shape: tuple[int, ...], *, refine_iters: int = 20,
                  max_width: int | None = None) -> UpperBound:
    """The ECLipsE bound of ``model`` as an :class:`~robustclip.bounds.lipschitz.UpperBound` (class-pair constants
    ``√2·L``); value inf with the one-line reason for structures it does not cover, and for chains with a layer of
    more than ``max_width`` outputs (None: no limit)."""
    t0 = time.perf_counter()
    width = _widest(model, in_shape) if max_width is not None else 0
    if max_width is not None and width > max_width:
        return UpperBound("eclipse", math.inf, 0.0, f"not computed: a layer has {width} outputs, more than "
                          f"{max_width} (each stage factors matrices of that size; --sdp computes it anyway)")
    ops, why = affine_ops(model, in_shape)
    if ops is None:
        return UpperBound("eclipse", math.inf, 0.0, f"not computed: {why}")
    try:
        L, _, _ = eclipse(ops, refine_iters=refine_iters)
    except ValueError as exc:
        return UpperBound("eclipse", math.inf, time.perf_counter() - t0, f"not computed: {exc}")
    mats, _, _ = _chain(ops)
    K = mats[-1].shape[0]
    pairs = torch.full((K, K), math.sqrt(2) * L, dtype=torch.float64)
    pairs.fill_diagonal_(0.0)
    return UpperBound("eclipse", L, time.perf_counter() - t0,
                      "ECLipsE (sequential Schur complements of LipSDP-Neuron, activation slopes in [0, β]) and "
                      f"{refine_iters} joint descent steps; multipliers verified in float64 (eigenvalues of the full "
                      "LipSDP matrix)", pairs.tolist())
