"""Lower bounds on the L2 Lipschitz constant: Jacobian norms and ascents, pair-ascent quotients, exact 1-D."""

from __future__ import annotations

import time

import torch
from torch import nn

from ..core.devices import device_of as _device
from ..core.modes import eval_mode, frozen
from .pairs import init_pairs, pair_ascent, separate, split_pairs


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
        if not s.requires_grad:  # piecewise-linear nets (MinMax, ...): the Jacobian is locally constant
            break
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


REFINE_STARTS = 8
"""Starts of each kind for :func:`refine_lower`: the data points of largest Jacobian norm, and uniform points."""
REFINE_STEPS = 200
"""Ascent moves per start of :func:`refine_lower` (before any scaling to its budget)."""
REFINE_BUDGET = 60e9
"""MACs :func:`refine_lower` may spend (about 3 s for the paper's MLP on one CPU core)."""


def refine_cost(macs: int, n_out: int, starts: int, steps: int, points: int) -> float:
    """MACs of :func:`refine_lower`: exact Jacobians (a forward and ``n_out`` backward passes) at ``points`` data
    points, then per start and move a Jacobian, its gradient (twice that) and the candidate's Jacobian."""
    jac = float(macs) * (1 + 2 * n_out)
    return jac * (points + 2 * starts * (steps + 1) * 4)


def refine_lower(model: nn.Module, x: torch.Tensor, *, seed: int = 0, starts: int = REFINE_STARTS,
                 steps: int = REFINE_STEPS, budget: float = REFINE_BUDGET,
                 macs: int | None = None) -> tuple[dict[str, float], dict[str, int]]:
    """The longer lower bound ``evaluate`` adds to its default estimate: exact Jacobian spectral norms at every
    point of ``x`` (``jacobian_data``), then :func:`jacobian_ascent` (``jacobian_ascent``) from the ``starts``
    points of largest norm and ``starts`` uniform random points in [0,1] (``seed``), ``steps`` moves each.

    ``x``: data ``(N, ...)`` in [0,1]. When the cost (:func:`refine_cost`, ``macs`` per forward pass) exceeds
    ``budget``, the moves are cut first (to 20), then the starts (to 1 of each), then the data points (the first
    ones kept, down to 16). Returns the bounds by method and the settings used (``{"starts", "steps", "points"}``).
    """
    from .budget import forward_macs

    if macs is None:
        macs = forward_macs(model, tuple(x.shape[1:]))
    with eval_mode(model), torch.no_grad():
        n_out = int(model(x[:1]).flatten(1).shape[1])
    while refine_cost(macs, n_out, starts, steps, x.shape[0]) > budget and steps > 20:
        steps = max(20, steps // 2)
    while refine_cost(macs, n_out, starts, steps, x.shape[0]) > budget and starts > 1:
        starts //= 2
    points = x.shape[0]
    while refine_cost(macs, n_out, starts, steps, points) > budget and points > 16:
        points //= 2
    x = x[:points]
    g = torch.Generator().manual_seed(seed)
    with frozen(model):
        js = jacobian_norms_batched(model, x)
        out = {"jacobian_data": float(js.max()) if js.numel() else 0.0}
        z0 = torch.cat([x[js.argsort(descending=True)[:starts]],
                        torch.rand((starts, *x.shape[1:]), generator=g).to(x.device)])
        out["jacobian_ascent"], _ = jacobian_ascent(model, z0, steps=steps, step_size=1.0)
    return out, {"starts": starts, "steps": steps, "points": int(points)}


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
