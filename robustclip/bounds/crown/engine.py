"""CROWN on a :class:`~robustclip.bounds.crown.ir.Plan`: intermediate bounds, relaxations and margin bounds.

For one batch of samples ``x0`` ``(N, *in_shape)`` in [0,1] at radius ``eps`` (L2 or L∞), every node gets interval
bounds in topological order: first the cheap ones (interval arithmetic from its inputs' bounds, intersected with
bounds known from a larger radius, ``prior``), then, for the entries of a node that feeds a nonlinearity whose
relaxation they change (an unstable ReLU, a max-pool window without a dominating input, a sigmoid), full CROWN
bounds: a backward pass of linear bounds from that entry to the input, concretised over the ball ∩ [0,1] by
:func:`robustclip.bounds.certify.concretize_lower`. Stable ReLUs are exact whatever their bounds, so they need
nothing more. MinMax pairs are relaxed through the bounds of their difference ``a − b``, computed the same way.
Everything runs in float64; the backward passes are batched over (sample, specification) rows in chunks of at
most ``max_elems`` coefficients (memory bound), convolutions act as operators (matrix products with the kernel
and ``fold``), never as dense matrices.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..relaxations import concretize_lower, relax
from .ir import Node, Plan, apply
from .patches import Lin, Pairs, masked, merge, to_dense, window

Bounds = tuple[torch.Tensor, torch.Tensor]
MAX_ELEMS = 1 << 22
"""Coefficients (float64) in one chunk of backward rows: about 32 MB per tensor."""


def _monotone(kind: str) -> bool:
    return kind in ("input", "act", "maxpool", "reshape")


def conv_matrix(p: dict[str, Any]) -> torch.Tensor:
    """The kernel as ``(C_out, C_in·kh·kw)`` (groups expanded with zeros), for ``cols = Mᵀ A`` and ``fold``."""
    if "matrix" not in p:
        w = p["weight"]
        co, cig, kh, kw = w.shape
        g = p["groups"]
        full = torch.zeros(co, cig * g, kh, kw, dtype=torch.float64)
        per = co // g
        for k in range(g):
            full[k * per:(k + 1) * per, k * cig:(k + 1) * cig] = w[k * per:(k + 1) * per]
        p["matrix"] = full.reshape(co, -1)
    return p["matrix"]


def row_cost(plan: Plan, i: int) -> int:
    """Coefficients one backward row from node ``i`` may hold at once: the largest window (times the kernel size,
    for the unfolded columns of a conv or max pool) it reaches on its way to the input. A row from a pixel of an
    image node starts as a 1×1 window that grows by each kernel; a row from a vector node is dense."""
    win: dict[int, tuple[int, int]] = {}
    n0 = plan.nodes[i]
    win[i] = (1, 1) if len(n0.shape) == 3 else (0, 0)
    best = 1
    for j in reversed(plan.ancestors[i]):
        if j not in win:
            continue
        n = plan.nodes[j]
        P = win[j]
        image = len(n.shape) == 3
        if image and (P == (0, 0) or P[0] * P[1] >= n.shape[1] * n.shape[2]):
            P = (n.shape[1], n.shape[2])
        area = P[0] * P[1] if image else 1
        size = (n.shape[0] if image else math.prod(n.shape)) * area
        k = (1, 1)
        if n.kind == "conv":
            k = tuple(n.p["weight"].shape[-2:])
            size = max(size, plan.nodes[n.inputs[0]].shape[0] * k[0] * k[1] * area)
        elif n.kind == "maxpool":
            k = n.p["kernel"]
            size *= k[0] * k[1]
        best = max(best, size)
        for src in n.inputs:
            if not image or len(plan.nodes[src].shape) != 3 or n.kind == "reshape":
                nxt = (0, 0)
            elif n.kind in ("conv", "maxpool"):
                s = n.p["stride"]
                nxt = ((P[0] - 1) * s[0] + k[0], (P[1] - 1) * s[1] + k[1])
            else:
                nxt = P
            old = win.get(src)
            if old is None:
                win[src] = nxt
            elif old != nxt:  # windows of two paths meet: assume the merge goes dense
                win[src] = (0, 0)
    return 2 * best


class GraphCrown:
    """CROWN bounds for a batch ``x0`` ``(N, *in_shape)`` in [0,1] at radius ``eps`` in ``norm``.

    ``prior``: bounds of the same samples from a larger radius of the same norm (sound here too; see
    :meth:`cache`). ``full``: CROWN for every entry of every node that feeds a nonlinearity, without interval
    arithmetic or ``prior`` (slower; the bounds of the dense-matrix CROWN of :mod:`robustclip.bounds.certify`).
    """

    def __init__(self, plan: Plan, x0: torch.Tensor, eps: float, norm: str, *,
                 prior: dict[tuple[str, int], Bounds] | None = None, full: bool = False,
                 max_elems: int = MAX_ELEMS) -> None:
        self.plan, self.x0, self.eps, self.norm = plan, x0.double(), float(eps), norm
        self.N = x0.shape[0]
        self.full, self.max_elems = full, max_elems
        self.prior = {} if full or prior is None else prior
        self.bounds: dict[int, Bounds] = {}
        self.diffs: dict[int, Bounds] = {}
        self.rel: dict[int, Any] = {}
        self.refinable: set[int] = set()
        self.bad = torch.zeros(self.N, dtype=torch.bool)  # samples with a non-finite bound: never certified
        self.refined = 0  # CROWN rows run for intermediate bounds (for the report)
        self.consumers: dict[int, list[Node]] = {i: [] for i in range(len(plan.nodes))}
        for n in plan.nodes:
            if n.kind in ("act", "maxpool", "pairsort"):
                self.consumers[n.inputs[0]].append(n)
        for i in plan.ancestors[plan.spec]:  # the spec node too: its relaxation, if it is nonlinear
            self._node(i)

    # ------------------------------------------------------------------ bounds, node by node

    def _node(self, i: int) -> None:
        n = self.plan.nodes[i]
        l, u = self._ibp(i)
        if ("b", i) in self.prior:
            pl, pu = self.prior[("b", i)]
            l, u = torch.maximum(l, pl), torch.minimum(u, pu)
        if self._unstable(i, l, u) is not None:
            self.refinable.add(i)
            l, u = self._tighten(("b", i), l, u, lambda lo, hi: self._unstable(i, lo, hi), None)
        self.bad |= ~(torch.isfinite(l) & torch.isfinite(u)).flatten(1).all(1)
        self.bounds[i] = (l, u)
        sorts = [c for c in self.consumers[i] if c.kind == "pairsort"]
        if sorts:
            ia, ib = sorts[0].p["ia"], sorts[0].p["ib"]
            ld, ud = l[:, ia] - u[:, ib], u[:, ia] - l[:, ib]
            if ("d", i) in self.prior:
                pl, pu = self.prior[("d", i)]
                ld, ud = torch.maximum(ld, pl), torch.minimum(ud, pu)
            crossing = (lambda lo, hi: torch.ones_like(lo, dtype=torch.bool)) if self.full else \
                (lambda lo, hi: (lo < 0) & (hi > 0))
            ld, ud = self._tighten(("d", i), ld, ud, crossing, (ia, ib))
            self.bad |= ~(torch.isfinite(ld) & torch.isfinite(ud)).flatten(1).all(1)
            self.diffs[i] = (ld, ud)
        if n.kind in ("act", "pairsort", "maxpool"):
            self.rel[i] = self._relaxation(i)

    def _tighten(self, key: tuple[str, int], l: torch.Tensor, u: torch.Tensor, unstable: Any,
                 pair: tuple[torch.Tensor, torch.Tensor] | None) -> Bounds:
        """Bounds of node ``key[1]`` (or of its pair differences): CROWN where ``unstable(l, u)`` says they matter."""
        need = unstable(l, u)
        if bool(need.any()):
            lo, hi = self._refine(key[1], need, pair)
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
        ``pair`` = channel indices ``(a, b)``, of the differences ``x_a − x_b``) where ``need``."""
        n = self.plan.nodes[i]
        idx = need.nonzero()  # (M, 1 + dims)
        M = idx.shape[0]
        self.refined += 2 * M
        lo = torch.full(need.shape, -math.inf, dtype=torch.float64)
        hi = torch.full(need.shape, math.inf, dtype=torch.float64)
        image = len(n.shape) == 3
        rows = max(1, self.max_elems // row_cost(self.plan, i))
        for s in range(0, 2 * M, rows):
            k = torch.arange(s, min(2 * M, s + rows))
            sign = torch.where(k < M, 1.0, -1.0).double()
            e = idx[k % M]
            B = k.numel()
            ar = torch.arange(B)
            if image:
                A = torch.zeros(B, n.shape[0], 1, 1, dtype=torch.float64)
                loc = e[:, 2:4]
            else:
                A = torch.zeros(B, n.shape[0], dtype=torch.float64)
                loc = torch.zeros(B, 2, dtype=torch.long)
            if pair is None:
                A[ar, e[:, 1]] = sign.view(-1, *([1] * (A.dim() - 2)))
            else:
                A[ar, pair[0][e[:, 1]]] = sign.view(-1, *([1] * (A.dim() - 2)))
                A[ar, pair[1][e[:, 1]]] = -sign.view(-1, *([1] * (A.dim() - 2)))
            L = Lin(A, (1, 1), (0, 0)) if image else Lin(A)
            val = self.backward(i, L, Pairs(e[:, 0], loc), steps=6)
            low, up = k < M, k >= M
            lo[tuple(e[low].T)] = val[low]
            hi[tuple(e[up].T)] = -val[up]
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
        return c - r, c + r

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
            ld, ud = self.diffs[j]
            sL, _, sU, cU = relax(nn.ReLU(), ld.flatten(1), ud.flatten(1))
            return torch.cat([t.view(ld.shape) for t in (sL, sU, cU)], dim=1)
        lo, hi, cst, _ = _pool_relax(n, *self.bounds[j])
        return torch.cat([lo.double(), hi.double(), cst], dim=1)

    def cache(self) -> dict[tuple[str, int], Bounds]:
        """The bounds worth keeping for a smaller radius of the same samples: nodes whose entries got CROWN."""
        out: dict[tuple[str, int], Bounds] = {}
        for i in self.refinable:
            out[("b", i)] = self.bounds[i]
        for i, b in self.diffs.items():
            out[("d", i)] = b
        return out

    # ------------------------------------------------------------------ the backward pass

    def backward(self, i: int, L: Lin, pairs: Pairs, *, steps: int) -> torch.Tensor:
        """Lower bound ``(B,)`` over the ball ∩ [0,1] of each row's linear function ``L`` of node ``i``."""
        pending: dict[int, Lin] = {i: L}
        c = torch.zeros(L.A.shape[0], dtype=torch.float64)
        for j in reversed(self.plan.ancestors[i]):
            cur = pending.pop(j, None)
            if cur is None:
                continue
            n = self.plan.nodes[j]
            if n.kind == "input":
                return self._concretize(cur, c, pairs, steps)
            for k, Lk, ck in self._back(n, j, cur, pairs):
                c = c + ck
                if k in pending:
                    h, w = (self.plan.nodes[k].shape[1:] if Lk.A.dim() == 4 else (1, 1))
                    pending[k] = merge(pending[k], Lk, pairs, h, w)
                else:
                    pending[k] = Lk
        raise AssertionError("the backward pass did not reach the input")

    def _concretize(self, L: Lin, c: torch.Tensor, pairs: Pairs, steps: int) -> torch.Tensor:
        B = L.A.shape[0]
        if L.A.dim() == 4:
            xw = window(self.x0, L, pairs)
        else:
            xw = self.x0.flatten(1)[pairs.n]
        low = concretize_lower(L.A.reshape(B, 1, -1), c.view(B, 1), xw.reshape(B, -1), self.eps, self.norm,
                               search_steps=steps)
        return low[:, 0]

    def _back(self, n: Node, j: int, L: Lin, pairs: Pairs) -> list[tuple[int, Lin, torch.Tensor]]:
        A, p = L.A, n.p
        B = A.shape[0]
        zero = torch.zeros(B, dtype=torch.float64)
        src = n.inputs[0]
        in_shape = self.plan.nodes[src].shape
        if n.kind == "linear":
            return [(src, Lin(A @ p["weight"]), A @ p["bias"])]
        if n.kind == "reshape":
            if A.dim() == 4:
                A = to_dense(L, pairs, n.shape[1], n.shape[2]).A
            return [(src, Lin(A.reshape(B, *in_shape)), zero)]
        if n.kind == "add":
            (c0, c1), s2 = p["c"], n.inputs[1]
            return [(src, Lin(A * c0 if c0 != 1 else A, L.S, L.Pd), zero),
                    (s2, Lin(A * c1 if c1 != 1 else A, L.S, L.Pd), zero)]
        if n.kind == "scale":
            if A.dim() == 4 and not L.dense:
                st = window(torch.stack([p["s"], p["t"]]).flatten(0, 1).unsqueeze(0), L, pairs,
                            torch.zeros(B, dtype=torch.long))
                s, t = st.chunk(2, dim=1)
            else:
                s, t = p["s"], p["t"]
            return [(src, Lin(A * s, L.S, L.Pd), (A * t).flatten(1).sum(1))]
        if n.kind == "act":
            pos = A > 0
            if isinstance(p["module"], (nn.ReLU, nn.LeakyReLU)):
                aL, aU, bU = window(self.rel[j], L, pairs).chunk(3, dim=1)
                const = (A * bU).masked_fill_(pos, 0).flatten(1).sum(1)
            else:
                aL, bL, aU, bU = window(self.rel[j], L, pairs).chunk(4, dim=1)
                const = (A * torch.where(pos, bL, bU)).flatten(1).sum(1)
            return [(src, Lin(A * torch.where(pos, aL, aU), L.S, L.Pd), const)]
        if n.kind == "pairsort":
            sL, sU, cU = window(self.rel[j], L, pairs).chunk(3, dim=1)
            ia, ib = p["ia"], p["ib"]
            al, be = A[:, ia], A[:, ib]
            ap, an, bp, bn = al.clamp_min(0), al.clamp_max(0), be.clamp_min(0), be.clamp_max(0)
            out = torch.empty_like(A)
            out[:, ia] = ap * sL + an * sU + bp * (1 - sU) + bn * (1 - sL)
            out[:, ib] = ap * (1 - sL) + an * (1 - sU) + bp * sU + bn * sL
            return [(src, Lin(out, L.S, L.Pd), ((an - bp) * cU).flatten(1).sum(1))]
        # conv and maxpool: unfolded coefficients, then fold onto the input's window
        Ph, Pw = A.shape[-2:]
        if n.kind == "conv":
            kh, kw = p["weight"].shape[-2:]
            const = A.sum((2, 3)) @ p["bias"] if p["bias"] is not None else zero
            Co = A.shape[1]
            if Ph * Pw == 1:  # one GEMM over all rows
                cols = (A.reshape(B, Co) @ conv_matrix(p)).unsqueeze(-1)
            else:
                cols = (A.reshape(B, Co, Ph * Pw).transpose(1, 2) @ conv_matrix(p)).transpose(1, 2).contiguous()
            dil = p["dilation"]
        else:
            kh, kw = p["kernel"]
            lo, hi, cst = window(self.rel[j], L, pairs).chunk(3, dim=1)
            Ap, An = A.clamp_min(0), A.clamp_max(0)
            open_ = hi < 0
            const = (An * cst * open_).flatten(1).sum(1)
            w = torch.zeros(*A.shape, kh * kw, dtype=torch.float64)
            w.scatter_add_(-1, lo.long().unsqueeze(-1), Ap.unsqueeze(-1))
            w.scatter_add_(-1, hi.clamp_min(0).long().unsqueeze(-1), (An * ~open_).unsqueeze(-1))
            cols = w.permute(0, 1, 4, 2, 3).reshape(B, A.shape[1] * kh * kw, Ph * Pw)
            dil = (1, 1)
        s, pad = p["stride"], p["padding"]
        if L.dense:
            out = F.fold(cols, in_shape[1:], (kh, kw), dilation=dil, padding=pad, stride=s)
            return [(src, Lin(out), const)]
        size = ((Ph - 1) * s[0] + dil[0] * (kh - 1) + 1, (Pw - 1) * s[1] + dil[1] * (kw - 1) + 1)
        if Ph * Pw == 1 and dil == (1, 1):  # one window: folding is a reshape
            out = cols.view(B, -1, kh, kw)
        else:
            out = F.fold(cols, size, (kh, kw), dilation=dil, stride=s)
        geo = Lin(out, (L.S[0] * s[0], L.S[1] * s[1]), (L.Pd[0] * s[0] + pad[0], L.Pd[1] * s[1] + pad[1]))
        return [(src, masked(geo, pairs, in_shape[1], in_shape[2]), const)]

    # ------------------------------------------------------------------ the margins

    def margins(self, y: torch.Tensor) -> torch.Tensor:
        """Lower bounds ``(N, K)`` of ``f_y − f_j`` over the ball ∩ [0,1] (``+inf`` at ``j = y``)."""
        K = self.plan.nodes[self.plan.spec].shape[0]
        N = self.N
        j = torch.arange(K).repeat(N)
        nn_ = torch.arange(N).repeat_interleave(K)
        keep = j != y[nn_]
        j, nn_ = j[keep], nn_[keep]
        out = torch.full((N, K), math.inf, dtype=torch.float64)
        rows = max(1, self.max_elems // row_cost(self.plan, self.plan.spec))
        eye = torch.eye(K, dtype=torch.float64)
        for s in range(0, j.numel(), rows):
            jj, ns = j[s:s + rows], nn_[s:s + rows]
            A = eye[y[ns]] - eye[jj]
            val = self.backward(self.plan.spec, Lin(A), Pairs(ns, torch.zeros(ns.numel(), 2, dtype=torch.long)),
                                steps=12)
            out[ns, jj] = val
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
