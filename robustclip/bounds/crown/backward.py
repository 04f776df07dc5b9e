"""The backward pass of CROWN through a :class:`~robustclip.bounds.crown.ir.Plan`, one operation at a time.

Given linear functions ``A · h_i + c`` of a node (a grouped :class:`~robustclip.bounds.crown.patches.Lin`), each
operation maps them onto its inputs: affine maps exactly (a convolution by one matrix product with its kernel and
``fold``, never as a dense matrix), nonlinear ones through their relaxations (lower line where a coefficient is
positive, upper line where it is negative). At the input the functions are bounded over the ball ∩ [0,1] by
:func:`robustclip.bounds.relaxations.concretize_lower`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..relaxations import concretize_lower
from .ir import Node, Plan
from .patches import Lin, Pairs, masked, merge, to_dense, window


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
    win: dict[int, tuple[int, int]] = {i: (1, 1) if len(plan.nodes[i].shape) == 3 else (0, 0)}
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


class Backward:
    """Backward passes for one batch ``x0`` ``(N, *in_shape)`` at radius ``eps``; ``rel[j]``: the relaxation of
    nonlinear node ``j`` as stacked per-sample maps (see :class:`~robustclip.bounds.crown.engine.GraphCrown`)."""

    def __init__(self, plan: Plan, x0: torch.Tensor, eps: float, norm: str, rel: dict[int, torch.Tensor]) -> None:
        self.plan, self.x0, self.eps, self.norm, self.rel = plan, x0, eps, norm, rel

    def run(self, i: int, L: Lin, pairs: Pairs, *, steps: int) -> torch.Tensor:
        """Lower bounds ``(G, R)`` over the ball ∩ [0,1] of each row's linear function ``L`` of node ``i``."""
        pending: dict[int, Lin] = {i: L}
        c = torch.zeros(L.A.shape[:2], dtype=torch.float64)
        for j in reversed(self.plan.ancestors[i]):
            cur = pending.pop(j, None)
            if cur is None:
                continue
            n = self.plan.nodes[j]
            if n.kind == "input":
                return self.concretize(cur, c, pairs, steps)
            for k, Lk, ck in self.op(n, j, cur, pairs):
                c = c + ck
                if k in pending:
                    h, w = self.plan.nodes[k].shape[1:] if Lk.image else (1, 1)
                    pending[k] = merge(pending[k], Lk, pairs, h, w)
                else:
                    pending[k] = Lk
        raise AssertionError("the backward pass did not reach the input")

    def concretize(self, L: Lin, c: torch.Tensor, pairs: Pairs, steps: int) -> torch.Tensor:
        G, R = L.A.shape[:2]
        xw = window(self.x0 if L.image else self.x0.flatten(1), L, pairs)
        return concretize_lower(L.A.reshape(G, R, -1), c, xw.reshape(G, -1), self.eps, self.norm,
                                search_steps=steps)

    def op(self, n: Node, j: int, L: Lin, pairs: Pairs) -> list[tuple[int, Lin, torch.Tensor]]:
        """The functions ``L`` of node ``j`` (computed by ``n``) as functions of its inputs, and constants
        ``(G, R)``."""
        A, p = L.A, n.p
        G, R = A.shape[:2]
        src = n.inputs[0]
        in_shape = self.plan.nodes[src].shape
        if n.kind == "linear":
            return [(src, Lin(A @ p["weight"]), A @ p["bias"])]
        if n.kind == "reshape":
            if L.image:
                A = to_dense(L, pairs, n.shape[1], n.shape[2]).A
            return [(src, Lin(A.reshape(G, R, *in_shape)), A.new_zeros(G, R))]
        if n.kind == "add":
            (c0, c1), s2 = p["c"], n.inputs[1]
            return [(src, Lin(A * c0 if c0 != 1 else A, L.S, L.Pd), A.new_zeros(G, R)),
                    (s2, Lin(A * c1 if c1 != 1 else A, L.S, L.Pd), A.new_zeros(G, R))]
        if n.kind == "scale":
            st = torch.cat([p["s"], p["t"]]).unsqueeze(0)
            s, t = window(st, L, pairs, torch.zeros(G, dtype=torch.long)).chunk(2, dim=2)
            return [(src, Lin(A * s, L.S, L.Pd), (A * t).flatten(2).sum(2))]
        if n.kind == "act":
            pos = A > 0
            if isinstance(p["module"], (nn.ReLU, nn.LeakyReLU)):
                aL, aU, bU = window(self.rel[j], L, pairs).chunk(3, dim=2)
                const = (A * bU).masked_fill_(pos, 0).flatten(2).sum(2)
            else:
                aL, bL, aU, bU = window(self.rel[j], L, pairs).chunk(4, dim=2)
                const = (A * torch.where(pos, bL, bU)).flatten(2).sum(2)
            return [(src, Lin(A * torch.where(pos, aL, aU), L.S, L.Pd), const)]
        if n.kind == "pairsort":
            return [self._pairsort(n, j, L, pairs)]
        return [(src, self._unfolded(n, j, L, pairs, in_shape), self._const(n, j, L, pairs))]

    def _pairsort(self, n: Node, j: int, L: Lin, pairs: Pairs) -> tuple[int, Lin, torch.Tensor]:
        """``max(a, b) = b + relu(a − b)`` and ``min = a + b − max``, with the ReLU's lines ``sL·d`` (lower) and
        ``sU·d + cU`` (upper) on the pair's difference ``d``: a coefficient ``α ≥ 0`` on the max takes the lower line
        (``α sL`` on ``a``, ``α (1 − sL)`` on ``b``), ``α < 0`` the upper one; the min's coefficient ``β`` the
        other way round."""
        A, p = L.A, n.p
        sL, sU, cU = window(self.rel[j], L, pairs).chunk(3, dim=2)
        C = A.shape[2]
        halves = p["halves"]  # MinMax pairs the two halves of the channels; GroupSort(2) neighbours
        al, be = (A[:, :, :C // 2], A[:, :, C // 2:]) if halves else (A[:, :, 0::2], A[:, :, 1::2])
        t1 = al * torch.where(al > 0, sL, sU)
        t2 = be * torch.where(be > 0, sU, sL)
        out_a, out_b = t1 + be - t2, al - t1 + t2
        const = ((al.clamp_max(0) - be.clamp_min(0)) * cU).flatten(2).sum(2)
        out = torch.cat([out_a, out_b], dim=2) if halves else torch.stack([out_a, out_b], dim=3).flatten(2, 3)
        return n.inputs[0], Lin(out, L.S, L.Pd), const

    def _const(self, n: Node, j: int, L: Lin, pairs: Pairs) -> torch.Tensor:
        A = L.A
        if n.kind == "conv":
            return A.sum((3, 4)) @ n.p["bias"] if n.p["bias"] is not None else A.new_zeros(A.shape[:2])
        _, hi, cst = window(self.rel[j], L, pairs).chunk(3, dim=2)
        return (A.clamp_max(0) * cst * (hi < 0)).flatten(2).sum(2)

    def _unfolded(self, n: Node, j: int, L: Lin, pairs: Pairs, in_shape: tuple[int, ...]) -> Lin:
        """Conv and max pool: the coefficients unfolded per kernel position, then folded onto the input's window."""
        A, p = L.A, n.p
        G, R, Co, Ph, Pw = A.shape
        B = G * R
        if n.kind == "conv":
            kh, kw = p["weight"].shape[-2:]
            if Ph * Pw == 1:  # one GEMM over all rows
                cols = (A.reshape(B, Co) @ conv_matrix(p)).unsqueeze(-1)
            else:
                cols = torch.matmul(conv_matrix(p).T, A.reshape(B, Co, Ph * Pw))
            dil = p["dilation"]
        else:
            kh, kw = p["kernel"]
            lo, hi, _ = window(self.rel[j], L, pairs).chunk(3, dim=2)
            w = torch.zeros(*A.shape, kh * kw, dtype=torch.float64)
            w.scatter_add_(-1, lo.long().unsqueeze(-1).expand(*A.shape, 1), A.clamp_min(0).unsqueeze(-1))
            w.scatter_add_(-1, hi.clamp_min(0).long().unsqueeze(-1).expand(*A.shape, 1),
                           (A.clamp_max(0) * (hi >= 0)).unsqueeze(-1))
            cols = w.permute(0, 1, 2, 5, 3, 4).reshape(B, Co * kh * kw, Ph * Pw)
            dil = (1, 1)
        s, pad = p["stride"], p["padding"]
        if L.dense:
            out = F.fold(cols, in_shape[1:], (kh, kw), dilation=dil, padding=pad, stride=s)
            return Lin(out.view(G, R, *out.shape[1:]))
        size = ((Ph - 1) * s[0] + dil[0] * (kh - 1) + 1, (Pw - 1) * s[1] + dil[1] * (kw - 1) + 1)
        if Ph * Pw == 1 and dil == (1, 1):  # one window: folding is a reshape
            out = cols.view(B, -1, kh, kw)
        else:
            out = F.fold(cols, size, (kh, kw), dilation=dil, stride=s)
        geo = Lin(out.view(G, R, *out.shape[1:]), (L.S[0] * s[0], L.S[1] * s[1]),
                  (L.Pd[0] * s[0] + pad[0], L.Pd[1] * s[1] + pad[1]))
        return masked(geo, pairs, in_shape[1], in_shape[2])
