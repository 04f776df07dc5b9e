"""CROWN on a :class:`~robustclip.bounds.crown.ir.Plan`: intermediate bounds, relaxations and margin bounds.

For one batch of samples ``x0`` ``(N, *in_shape)`` in [0,1] at radius ``eps`` (L2 or L∞), every node gets interval
bounds in topological order: first the cheap ones (interval arithmetic from its inputs' bounds), then, for the
entries of a node that feeds a nonlinearity whose relaxation they change (an unstable ReLU, a max-pool window
without a dominating input, a sigmoid), full CROWN bounds: a backward pass of linear bounds from that entry to the
input, concretised over the ball ∩ [0,1] by :func:`robustclip.bounds.relaxations.concretize_lower`. Stable ReLUs are
exact whatever their bounds, so they need nothing more. MinMax pairs are relaxed through the bounds of their
difference ``a − b``, computed the same way. Everything runs in float64; the backward passes
(:mod:`robustclip.bounds.crown.backward`) are batched over groups of rows that share a sample and a window (the
channels of one pixel, lower and upper), in chunks of at most ``max_elems`` coefficients (memory bound);
convolutions act as operators, never as dense matrices.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..relaxations import relax
from .backward import Backward, row_cost
from .ir import Node, Plan, apply
from .patches import Lin, Pairs

Bounds = tuple[torch.Tensor, torch.Tensor]
MAX_ELEMS = 1 << 22
"""Coefficients (float64) in one chunk of backward rows: about 32 MB per tensor."""


def _monotone(kind: str) -> bool:
    return kind in ("input", "act", "maxpool", "reshape")


class GraphCrown:
    """CROWN bounds for a batch ``x0`` ``(N, *in_shape)`` in [0,1] at radius ``eps`` in ``norm``.

    ``full``: CROWN for every entry of every node that feeds a nonlinearity, without interval arithmetic first
    (slower; the bounds of the dense-matrix CROWN of :mod:`robustclip.bounds.certify`).
    """

    def __init__(self, plan: Plan, x0: torch.Tensor, eps: float, norm: str, *,
                 full: bool = False, max_elems: int = MAX_ELEMS) -> None:
        self.plan, self.x0, self.eps, self.norm = plan, x0.double(), float(eps), norm
        self.N = x0.shape[0]
        self.full, self.max_elems = full, max_elems
        self.bounds: dict[int, Bounds] = {}
        self.diffs: dict[int, Bounds] = {}  # per MinMax/GroupSort node: bounds of its pairs' differences a − b
        self.rel: dict[int, Any] = {}
        self.bad = torch.zeros(self.N, dtype=torch.bool)  # samples with a non-finite bound: never certified
        self.refined = 0  # CROWN rows run for intermediate bounds (for the report)
        self.back = Backward(plan, self.x0, self.eps, norm, self.rel)
        self.consumers: dict[int, list[Node]] = {i: [] for i in range(len(plan.nodes))}
        for n in plan.nodes:
            if n.kind in ("act", "maxpool", "pairsort"):
                self.consumers[n.inputs[0]].append(n)
        for i in plan.ancestors[plan.spec]:  # the spec node too: its relaxation, if it is nonlinear
            self._node(i)

    # ------------------------------------------------------------------ bounds, node by node

    def _node(self, i: int) -> None:
        n = self.plan.nodes[i]
        if n.kind in ("act", "pairsort", "maxpool"):  # from its input's bounds; CROWN from this node needs it
            self.rel[i] = self._relaxation(i)
        l, u = self._ibp(i)
        if self._unstable(i, l, u) is not None:
            l, u = self._tighten(("b", i), l, u, lambda lo, hi: self._unstable(i, lo, hi), None)
        self.bad |= ~(torch.isfinite(l) & torch.isfinite(u)).flatten(1).all(1)
        self.bounds[i] = (l, u)
        for k in self.plan.users[i]:  # each MinMax/GroupSort reading this node: its own pairs
            if self.plan.nodes[k].kind != "pairsort" or k not in self.plan.ancestors[self.plan.spec]:
                continue
            ia, ib = self.plan.nodes[k].p["ia"], self.plan.nodes[k].p["ib"]
            ld, ud = l[:, ia] - u[:, ib], u[:, ia] - l[:, ib]
            crossing = (lambda lo, hi: torch.ones_like(lo, dtype=torch.bool)) if self.full else \
                (lambda lo, hi: (lo < 0) & (hi > 0))
            ld, ud = self._tighten(("d", k), ld, ud, crossing, (ia, ib), node=i)
            self.bad |= ~(torch.isfinite(ld) & torch.isfinite(ud)).flatten(1).all(1)
            self.diffs[k] = (ld, ud)

    def _tighten(self, key: tuple[str, int], l: torch.Tensor, u: torch.Tensor, unstable: Any,
                 pair: tuple[torch.Tensor, torch.Tensor] | None, node: int | None = None) -> Bounds:
        """Bounds of node ``key[1]`` (or, with ``pair``, of the pair differences of ``node``): CROWN where
        ``unstable(l, u)`` says they matter."""
        need = unstable(l, u)
        if bool(need.any()):
            lo, hi = self._refine(key[1] if node is None else node, need, pair)
            if self.full:
                return torch.where(need, lo, l), torch.where(need, hi, u)
            return torch.maximum(l, lo), torch.minimum(u, hi)
        return l, u

    def _unstable(self, i: int, l: torch.Tensor, u: torch.Tensor) -> torch.Tensor | None:
        """Bool like ``l``: the entries whose CROWN bounds can change a relaxation (None: no consumer needs any)."""
        n = self.plan.nodes[i]
        cons = [c for c in self.consumers[i] if c.kind != "pairsort"]
        if not cons or _monotone(n.kind):
            return None
        if self.full:
            return torch.ones_like(l, dtype=torch.bool)
        need = torch.zeros_like(l, dtype=torch.bool)
        for c in cons:
            if c.kind == "maxpool":
                _, _, _, open_ = _pool_relax(c, l, u)
                kh, kw = c.p["kernel"]
                cols = open_.to(l.dtype).unsqueeze(2).expand(-1, -1, kh * kw, -1, -1)
                cols = cols.reshape(self.N, l.shape[1] * kh * kw, -1)
                need |= F.fold(cols, l.shape[-2:], c.p["kernel"], padding=c.p["padding"], stride=c.p["stride"]) > 0
            elif isinstance(c.p["module"], (nn.ReLU, nn.LeakyReLU)):
                need |= (l < 0) & (u > 0)
            else:
                need |= torch.ones_like(need)
        return need

    def _refine(self, i: int, need: torch.Tensor, pair: tuple[torch.Tensor, torch.Tensor] | None) -> Bounds:
        """CROWN ``(lower, upper)`` (shaped like ``need``; ±inf elsewhere) of node ``i``'s entries (or, with
        ``pair`` = channel indices ``(a, b)``, of the differences ``x_a − x_b``) where ``need``.

        Rows (an entry and a sign: +1 for its lower bound, −1 for its upper) are grouped by sample and pixel, the
        groups sorted by size and cut into chunks; a chunk's groups are padded with zero rows to its largest."""
        n = self.plan.nodes[i]
        image = len(n.shape) == 3
        idx = need.nonzero()  # (M, 1 + dims): sample, channel (or pair), pixel
        M = idx.shape[0]
        self.refined += 2 * M
        lo = torch.full(need.shape, -math.inf, dtype=torch.float64)
        hi = torch.full(need.shape, math.inf, dtype=torch.float64)
        if M == 0:
            return lo, hi
        ent = torch.cat([idx, idx])
        sign = torch.cat([torch.ones(M), -torch.ones(M)]).double()
        where = ent[:, 2:4] if image else ent[:, :0]
        key = ent[:, 0]
        for d in range(where.shape[1]):
            key = key * n.shape[1 + d] + where[:, d]
        key, order = torch.sort(key, stable=True)
        ent, sign = ent[order], sign[order]
        _, inverse, counts = torch.unique_consecutive(key, return_inverse=True, return_counts=True)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(ent.shape[0]) - starts[inverse]
        by_size = torch.argsort(counts, descending=True, stable=True)
        rank = torch.empty_like(by_size)
        rank[by_size] = torch.arange(by_size.numel())
        per = max(1, self.max_elems // row_cost(self.plan, i))
        g0 = 0
        while g0 < by_size.numel():
            R = int(counts[by_size[g0]])
            groups = by_size[g0:g0 + max(1, per // R)]
            g0 += groups.numel()
            G = groups.numel()
            slot = torch.full((counts.numel(),), -1, dtype=torch.long)
            slot[groups] = torch.arange(G)
            rows = slot[inverse] >= 0
            g, r, e, sg = slot[inverse][rows], pos[rows], ent[rows], sign[rows]
            first = ent[starts[groups]]  # each group's sample and pixel
            A = torch.zeros(G, R, n.shape[0], dtype=torch.float64)
            if pair is None:
                A[g, r, e[:, 1]] = sg
            else:
                A[g, r, pair[0][e[:, 1]]] = sg
                A[g, r, pair[1][e[:, 1]]] = -sg
            if image:
                A = A.view(G, R, n.shape[0], 1, 1)
            loc = first[:, 2:4] if image else torch.zeros(G, 2, dtype=torch.long)
            L = Lin(A, (1, 1), (0, 0)) if image else Lin(A)
            val = self.back.run(i, L, Pairs(first[:, 0], loc), steps=6)[g, r]
            low = sg > 0
            lo[tuple(e[low].T)] = val[low]
            hi[tuple(e[~low].T)] = -val[~low]
        return lo, hi

    def _ibp(self, i: int) -> Bounds:
        n = self.plan.nodes[i]
        p = n.p
        if n.kind == "input":
            return (self.x0 - self.eps).clamp(0, 1), (self.x0 + self.eps).clamp(0, 1)
        l, u = self.bounds[n.inputs[0]]
        if n.kind in ("act", "maxpool", "reshape", "pairsort"):
            if n.kind != "pairsort":
                return apply(n, [l]), apply(n, [u])
            ia, ib = p["ia"], p["ib"]
            lo, hi = l.clone(), u.clone()
            lo[:, ia], hi[:, ia] = torch.maximum(l[:, ia], l[:, ib]), torch.maximum(u[:, ia], u[:, ib])
            lo[:, ib], hi[:, ib] = torch.minimum(l[:, ia], l[:, ib]), torch.minimum(u[:, ia], u[:, ib])
            return lo, hi
        mid, rad = (l + u) / 2, (u - l) / 2
        if n.kind == "conv":
            c = F.conv2d(mid, p["weight"], p["bias"], p["stride"], p["padding"], p["dilation"], p["groups"])
            r = F.conv2d(rad, p["weight"].abs(), None, p["stride"], p["padding"], p["dilation"], p["groups"])
        elif n.kind == "linear":
            c, r = mid @ p["weight"].T + p["bias"], rad @ p["weight"].abs().T
        elif n.kind == "scale":
            c, r = mid * p["s"] + p["t"], rad * p["s"].abs()
        else:  # add
            l2, u2 = self.bounds[n.inputs[1]]
            c0, c1 = p["c"]
            c = c0 * mid + c1 * (l2 + u2) / 2
            r = abs(c0) * rad + abs(c1) * (u2 - l2) / 2
        l, u = c - r, c + r
        if self.norm == "L2" and n.kind in ("conv", "linear") and self.plan.nodes[n.inputs[0]].kind == "input":
            # the first layer: each output moves by at most eps·||its weights||₂ over the ball (the full kernel's
            # norm also bounds a window cut by zero padding); often much tighter than the box for L2
            w = p["weight"]
            rad = self.eps * w.flatten(1).norm(dim=1) * (1 + 1e-12)
            cen = apply(n, [self.x0])
            rad = rad.view(-1, *([1] * (cen.dim() - 2)))
            l, u = torch.maximum(l, cen - rad), torch.minimum(u, cen + rad)
        return l, u

    def _relaxation(self, i: int) -> Any:
        n = self.plan.nodes[i]
        j = n.inputs[0]
        if n.kind == "act":
            l, u = self.bounds[j]
            aL, bL, aU, bU = relax(n.p["module"], l.flatten(1), u.flatten(1))
            if isinstance(n.p["module"], (nn.ReLU, nn.LeakyReLU)):  # bL = 0: three maps to gather, not four
                return torch.cat([t.view(l.shape) for t in (aL, aU, bU)], dim=1)
            return torch.cat([t.view(l.shape) for t in (aL, bL, aU, bU)], dim=1)
        if n.kind == "pairsort":
            ld, ud = self.diffs[i]
            sL, _, sU, cU = relax(nn.ReLU(), ld.flatten(1), ud.flatten(1))
            return torch.cat([t.view(ld.shape) for t in (sL, sU, cU)], dim=1)
        lo, hi, cst, _ = _pool_relax(n, *self.bounds[j])
        return torch.cat([lo.double(), hi.double(), cst], dim=1)

    # ------------------------------------------------------------------ the margins

    def margins(self, y: torch.Tensor) -> torch.Tensor:
        """Lower bounds ``(N, K)`` of ``f_y − f_j`` over the ball ∩ [0,1] (``+inf`` at ``j = y``)."""
        K = self.plan.nodes[self.plan.spec].shape[0]
        N = self.N
        out = torch.full((N, K), math.inf, dtype=torch.float64)
        if K < 2:
            return out
        others = torch.arange(K).repeat(N, 1)[torch.arange(K).repeat(N, 1) != y.view(-1, 1)].view(N, K - 1)
        eye = torch.eye(K, dtype=torch.float64)
        per = max(1, self.max_elems // (row_cost(self.plan, self.plan.spec) * (K - 1)))
        for s in range(0, N, per):
            ns = torch.arange(s, min(N, s + per))
            A = eye[y[ns]].unsqueeze(1) - eye[others[ns]]  # (G, K − 1, K): rows e_y − e_j
            val = self.back.run(self.plan.spec, Lin(A), Pairs(ns, torch.zeros(ns.numel(), 2, dtype=torch.long)),
                                steps=12)
            out[ns.view(-1, 1), others[ns]] = val
        out[self.bad] = -math.inf
        return torch.where(torch.isnan(out), -math.inf, out)


def _pool_relax(n: Node, l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Max-pool relaxation per output ``(N, C, Ho, Wo)``: ``lo`` the window position (0..kh·kw−1) of the largest
    lower bound (``max ≥ x_lo``); ``hi`` that position where its lower bound is ≥ every other upper bound in the
    window (then ``max = x_hi``), else −1 (then ``max ≤ cst``, the largest upper bound); ``open_`` = ``hi < 0``."""
    kh, kw = n.p["kernel"]
    ph, pw = n.p["padding"]
    N, C = l.shape[:2]
    Ho, Wo = n.shape[1:]

    def win(t: torch.Tensor) -> torch.Tensor:
        t = F.pad(t, (pw, pw, ph, ph), value=-math.inf)
        cols = F.unfold(t, (kh, kw), stride=n.p["stride"])  # (N, C·kk, Ho·Wo)
        return cols.view(N, C, kh * kw, Ho, Wo)

    lw, uw = win(l), win(u)
    best, lo = lw.max(dim=2)
    cst = uw.max(dim=2).values
    others = uw.scatter(2, lo.unsqueeze(2), -math.inf).max(dim=2).values
    dom = best >= others
    hi = torch.where(dom, lo, torch.full_like(lo, -1))
    return lo, hi, cst, ~dom
