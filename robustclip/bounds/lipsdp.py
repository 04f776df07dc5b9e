"""LipSDP-Neuron upper bounds: the semidefinite programme (optional cvxpy) and its float64 re-verification."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from ..models.activations import is_sorting
from .structure import Affine, _chain


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


def verified_rho(Ws: list[torch.Tensor], alphas: list[torch.Tensor], betas: list[torch.Tensor],
                 t: list[torch.Tensor], last: torch.Tensor, scales: tuple[float, ...], *,
                 first: bool = False) -> float | None:
    """The smallest ``ρ`` that :func:`lipsdp_verify` certifies for the multipliers ``t`` rescaled by each of
    ``scales`` in turn (with ``first``: the first one certified), or None when none is."""
    best = None
    for scale in scales:
        r = lipsdp_verify(Ws, alphas, betas, [scale * tk for tk in t], last)
        if r is not None and (best is None or r < best):
            best = r
            if first:
                break
    return best


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
    import cvxpy  # noqa: F401 - ImportError before any work when cvxpy is missing

    Ws, last, alphas, betas = _lipsdp_chain(ops)
    t0 = time.perf_counter()
    G, M0 = _lipsdp_map(Ws, alphas, betas, last)
    zv, status = _lipsdp_solve(G, M0, solver)
    solve_s = time.perf_counter() - t0
    sizes = [W.shape[0] for W in Ws]
    t = list(torch.split(zv[:-1], sizes))
    best = verified_rho(Ws, alphas, betas, t, last, (1.0, 1.001, 1.01, 1.05, 1.2))
    if best is None:
        raise ValueError("LipSDP multipliers from the solver failed the float64 check")
    L = math.sqrt(best)
    pairs = None if pair_rows is None else _lipsdp_pairs(Ws, alphas, betas, t, pair_rows, L)
    info = {"solver": solver, "status": status, "solver_rho": float(zv[-1]), "verified_rho": best,
            "matrix_size": Ws[0].shape[1] + sum(sizes), "solve_seconds": solve_s}
    return L, pairs, info


def _lipsdp_chain(ops: list[Affine | nn.Module]) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor],
                                                           list[torch.Tensor]]:
    """``(Ws, last, alphas, betas)`` of a chain ``affine, act, ..., affine`` (float64): the hidden layers' matrices
    with the input reduced to the row space of ``W_1``, the last layer's matrix, and each hidden unit's slope bounds.
    Raises ``ValueError`` for any other structure."""
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
    return Ws, last, alphas, betas


def _lipsdp_map(Ws: list[torch.Tensor], alphas: list[torch.Tensor], betas: list[torch.Tensor],
                last: torch.Tensor) -> tuple[Any, np.ndarray]:
    """``(G, M0)`` with ``vec(M) = G z + vec(M0)``, ``z = (t_1, ..., t_{L-1}, ρ)``: the LipSDP matrix ``M``
    ``(D, D)`` as a sparse linear map ``(D², len(z))`` of the multipliers (products of cvxpy expressions explode in
    memory)."""
    from scipy import sparse

    d = Ws[0].shape[1]
    sizes = [W.shape[0] for W in Ws]
    offs = [0, d]
    for sz in sizes:
        offs.append(offs[-1] + sz)
    D = offs[-1]
    nv = sum(sizes) + 1
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
    return G, M0


def _lipsdp_solve(G: Any, M0: np.ndarray, solver: str) -> tuple[torch.Tensor, str]:
    """Minimise ``ρ`` subject to ``M ⪯ 0`` over ``z ≥ 0``; returns ``(z (float64, clamped at 0), solver status)``."""
    import cvxpy as cp

    D = M0.shape[0]
    nv = G.shape[1]
    z = cp.Variable(nv, nonneg=True)
    M = cp.reshape(G @ z, (D, D), order="C") + M0
    prob = cp.Problem(cp.Minimize(z[nv - 1]), [(M + M.T) / 2 << 0])
    prob.solve(solver=solver)
    if prob.status not in ("optimal", "optimal_inaccurate") or z.value is None:
        raise ValueError(f"LipSDP solver {solver} ended with status {prob.status}")
    return torch.tensor(np.asarray(z.value), dtype=torch.float64).clamp_min(0), str(prob.status)


def _lipsdp_pairs(Ws: list[torch.Tensor], alphas: list[torch.Tensor], betas: list[torch.Tensor],
                  t: list[torch.Tensor], pair_rows: torch.Tensor, L: float) -> torch.Tensor:
    """Per-class-pair constants ``(K, K)`` of ``f_y − f_j``, re-verified with the multipliers ``t`` rescaled; a pair
    that no rescaling verifies keeps ``√2 · L``."""
    K = pair_rows.shape[0]
    pairs = torch.full((K, K), math.sqrt(2) * L, dtype=torch.float64)
    for y in range(K):
        for j in range(y + 1, K):
            row = (pair_rows[y] - pair_rows[j]).view(1, -1)
            cands = [lipsdp_verify(Ws, alphas, betas, [c * tk for tk in t], row) for c in (1.0, 1.5, 2.0, 3.0)]
            ok = [c for c in cands if c is not None]
            if ok:
                pairs[y, j] = pairs[j, y] = min(float(pairs[y, j]), math.sqrt(min(ok)))
    return pairs
