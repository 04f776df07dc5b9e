"""Linear functions of a node in patch form: each specification sees only a window of an image node.

A batch of linear functions ``A · h + c`` of a node ``h`` is a :class:`Lin` whose ``A`` is grouped: ``(G, R, ...)``,
``G`` groups of ``R`` rows that share a sample and a window (the rows of one pixel of a conv layer: its channels,
lower and upper; or a sample's margins), so relaxation data is gathered once per group and broadcast over its
rows. For vector nodes a row is ``(F,)``. For image nodes ``(C, H, W)`` it is ``(C, Ph, Pw)``: the coefficients on
the window whose top-left corner is ``loc · S − Pd`` (``loc``: the group's pixel in :class:`Pairs`), zero outside
it; ``S = (0, 0)`` means *dense*, the window is the whole node. A specification at one pixel starts as a 1×1
window and grows by the receptive field of each layer it goes back through, so the intermediate bounds of a conv
layer never touch the whole image (auto_LiRPA calls this "patches" mode). Entries off the node are kept at zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class Pairs:
    """Who each of the ``G`` groups is: sample ``n`` ``(G,)`` (index into the batch) and the specification's pixel
    ``loc`` ``(G, 2)`` (row, column of the node it started from; zeros for dense ones)."""

    n: torch.Tensor
    loc: torch.Tensor


@dataclass
class Lin:
    """``A`` (see the module docstring) with the window geometry: stride ``S`` and offset ``Pd`` per axis."""

    A: torch.Tensor
    S: tuple[int, int] = (0, 0)
    Pd: tuple[int, int] = (0, 0)

    @property
    def dense(self) -> bool:
        return self.S == (0, 0)

    @property
    def image(self) -> bool:
        return self.A.dim() == 5


def _axis(loc: torch.Tensor, S: int, Pd: int, P: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(G, P)`` (clamped into the node) and a validity mask for one axis of each group's window."""
    idx = loc.view(-1, 1) * S - Pd + torch.arange(P).view(1, -1)
    ok = (idx >= 0) & (idx < size)
    return idx.clamp(0, size - 1), ok


def window(M: torch.Tensor, L: Lin, pairs: Pairs, n: torch.Tensor | None = None) -> torch.Tensor:
    """Each group's window of the map ``M`` ``(N, C, H, W)`` (``n``: which of the N, default ``pairs.n``), zero off
    the node, with a row axis to broadcast over: ``(G, 1, C, Ph, Pw)``. For vector nodes ``M`` is ``(N, F)`` and the
    result ``(G, 1, F)``."""
    n = pairs.n if n is None else n
    if not L.image or L.dense:
        return M[n].unsqueeze(1)
    Ph, Pw = L.A.shape[-2:]
    H, W = M.shape[-2:]
    last = pairs.loc.max(dim=0).values if pairs.loc.numel() else torch.zeros(2, dtype=torch.long)
    # pad (or crop, where negative) so that window k starts at k·S: then unfold gives every window as a view
    bottom = max(0, int(last[0]) * L.S[0] + Ph - L.Pd[0] - H)
    right = max(0, int(last[1]) * L.S[1] + Pw - L.Pd[1] - W)
    Mp = F.pad(M, (L.Pd[1], right, L.Pd[0], bottom))
    views = Mp.unfold(2, Ph, L.S[0]).unfold(3, Pw, L.S[1])  # (N, C, nH, nW, Ph, Pw)
    return views[n, :, pairs.loc[:, 0], pairs.loc[:, 1]].unsqueeze(1)


def inside(L: Lin, pairs: Pairs, H: int, W: int) -> torch.Tensor:
    """Bool ``(G, 1, 1, Ph, Pw)``: which window entries lie on the node."""
    Ph, Pw = L.A.shape[-2:]
    _, rok = _axis(pairs.loc[:, 0], L.S[0], L.Pd[0], Ph, H)
    _, cok = _axis(pairs.loc[:, 1], L.S[1], L.Pd[1], Pw, W)
    return (rok.view(-1, 1, 1, Ph, 1) & cok.view(-1, 1, 1, 1, Pw))


def masked(L: Lin, pairs: Pairs, H: int, W: int) -> Lin:
    """``L`` with the window entries off the node set to zero; dense when the window covers the node anyway."""
    if L.dense:
        return L
    out = Lin(L.A * inside(L, pairs, H, W), L.S, L.Pd)
    if L.A.shape[-2] * L.A.shape[-1] >= H * W:
        return to_dense(out, pairs, H, W)
    return out


def to_dense(L: Lin, pairs: Pairs, H: int, W: int) -> Lin:
    """The same functions with windows covering the whole node ``(G, R, C, H, W)``."""
    if L.dense:
        return L
    G, R, C, Ph, Pw = L.A.shape
    r, rok = _axis(pairs.loc[:, 0], L.S[0], L.Pd[0], Ph, H)
    c, cok = _axis(pairs.loc[:, 1], L.S[1], L.Pd[1], Pw, W)
    flat = (r.view(G, Ph, 1) * W + c.view(G, 1, Pw)).view(G, 1, 1, Ph * Pw).expand(G, R, C, Ph * Pw)
    vals = (L.A * (rok.view(G, 1, 1, Ph, 1) & cok.view(G, 1, 1, 1, Pw))).reshape(G, R, C, Ph * Pw)
    out = torch.zeros(G, R, C, H * W, dtype=L.A.dtype)
    out.scatter_add_(3, flat, vals)
    return Lin(out.view(G, R, C, H, W))


def merge(a: Lin, b: Lin, pairs: Pairs, H: int, W: int) -> Lin:
    """``a + b`` (two sets of coefficients on the same node for the same rows)."""
    if not a.image:
        return Lin(a.A + b.A)
    if a.S != b.S:
        a, b = to_dense(a, pairs, H, W), to_dense(b, pairs, H, W)
        return Lin(a.A + b.A)
    if a.dense:
        return Lin(a.A + b.A)
    top = [max(a.Pd[i], b.Pd[i]) for i in range(2)]
    ext = [max(a.A.shape[3 + i] - a.Pd[i], b.A.shape[3 + i] - b.Pd[i]) for i in range(2)]
    size = [top[i] + ext[i] for i in range(2)]

    def grow(x: Lin) -> torch.Tensor:
        left = [top[i] - x.Pd[i] for i in range(2)]
        right = [size[i] - x.A.shape[3 + i] - left[i] for i in range(2)]
        return F.pad(x.A, (left[1], right[1], left[0], right[0]))

    return Lin(grow(a) + grow(b), a.S, (top[0], top[1]))
