"""Linear functions of a node in patch form: each specification sees only a window of an image node.

A batch of ``B`` linear functions ``A · h + c`` of a node ``h`` is a :class:`Lin`. For vector nodes ``A`` is
``(B, F)``. For image nodes ``(C, H, W)`` it is ``(B, C, Ph, Pw)``: the coefficients on the window whose top-left
corner is ``loc · S − Pd`` (``loc``: the row of the specification's location in :class:`Pairs`), zero outside it;
``S = (0, 0)`` means *dense*, the window is the whole node. A specification at one pixel of a conv layer starts as
a 1×1 window and grows by the receptive field of each layer it goes back through, so intermediate bounds of
convolutional layers never touch the whole image (auto_LiRPA calls this "patches" mode). Entries outside the node
are kept at zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class Pairs:
    """Who each of the ``B`` rows is: sample ``n`` ``(B,)`` (index into the batch) and the specification's pixel
    ``loc`` ``(B, 2)`` (rows, columns of the node it started from; zeros for dense ones)."""

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


def _axis(loc: torch.Tensor, S: int, Pd: int, P: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(B, P)`` (clamped into the node) and a validity mask for one axis of each row's window."""
    idx = loc.view(-1, 1) * S - Pd + torch.arange(P).view(1, -1)
    ok = (idx >= 0) & (idx < size)
    return idx.clamp(0, size - 1), ok


def window(M: torch.Tensor, L: Lin, pairs: Pairs, n: torch.Tensor | None = None) -> torch.Tensor:
    """Each row's window of the map ``M`` ``(N, C, H, W)`` (``n``: which of the N, default ``pairs.n``), zero off the
    node: ``(B, C, Ph, Pw)``. For vector nodes ``M`` is ``(N, F)`` and the result ``(B, F)``."""
    n = pairs.n if n is None else n
    if L.A.dim() == 2 or L.dense:
        return M[n]
    Ph, Pw = L.A.shape[-2:]
    H, W = M.shape[-2:]
    last = pairs.loc.max(dim=0).values if pairs.loc.numel() else torch.zeros(2, dtype=torch.long)
    # pad (or crop, where negative) so that window k starts at k·S: then unfold gives every window as a view
    bottom = max(0, int(last[0]) * L.S[0] + Ph - L.Pd[0] - H)
    right = max(0, int(last[1]) * L.S[1] + Pw - L.Pd[1] - W)
    Mp = F.pad(M, (L.Pd[1], right, L.Pd[0], bottom))
    views = Mp.unfold(2, Ph, L.S[0]).unfold(3, Pw, L.S[1])  # (N, C, nH, nW, Ph, Pw)
    return views[n, :, pairs.loc[:, 0], pairs.loc[:, 1]]


def inside(L: Lin, pairs: Pairs, H: int, W: int) -> torch.Tensor:
    """Bool ``(B, 1, Ph, Pw)``: which window entries lie on the node."""
    Ph, Pw = L.A.shape[-2:]
    _, rok = _axis(pairs.loc[:, 0], L.S[0], L.Pd[0], Ph, H)
    _, cok = _axis(pairs.loc[:, 1], L.S[1], L.Pd[1], Pw, W)
    return (rok.view(-1, 1, Ph, 1) & cok.view(-1, 1, 1, Pw))


def masked(L: Lin, pairs: Pairs, H: int, W: int) -> Lin:
    """``L`` with the window entries off the node set to zero; dense when the window covers the node anyway."""
    if L.dense:
        return L
    A = L.A * inside(L, pairs, H, W)
    out = Lin(A, L.S, L.Pd)
    if A.shape[-2] * A.shape[-1] >= H * W:
        return to_dense(out, pairs, H, W)
    return out


def to_dense(L: Lin, pairs: Pairs, H: int, W: int) -> Lin:
    """The same functions with windows covering the whole node ``(B, C, H, W)``."""
    if L.dense:
        return L
    B, C, Ph, Pw = L.A.shape
    r, rok = _axis(pairs.loc[:, 0], L.S[0], L.Pd[0], Ph, H)
    c, cok = _axis(pairs.loc[:, 1], L.S[1], L.Pd[1], Pw, W)
    flat = (r.view(B, Ph, 1) * W + c.view(B, 1, Pw)).view(B, 1, Ph * Pw).expand(B, C, Ph * Pw)
    vals = (L.A * (rok.view(B, 1, Ph, 1) & cok.view(B, 1, 1, Pw))).reshape(B, C, Ph * Pw)
    out = torch.zeros(B, C, H * W, dtype=L.A.dtype)
    out.scatter_add_(2, flat, vals)
    return Lin(out.view(B, C, H, W))


def merge(a: Lin, b: Lin, pairs: Pairs, H: int, W: int) -> Lin:
    """``a + b`` (two sets of coefficients on the same node for the same rows)."""
    if a.A.dim() == 2:
        return Lin(a.A + b.A)
    if a.S != b.S:
        a, b = to_dense(a, pairs, H, W), to_dense(b, pairs, H, W)
        return Lin(a.A + b.A)
    if a.dense:
        return Lin(a.A + b.A)
    top = [max(a.Pd[i], b.Pd[i]) for i in range(2)]
    ext = [max(a.A.shape[2 + i] - a.Pd[i], b.A.shape[2 + i] - b.Pd[i]) for i in range(2)]
    size = [top[i] + ext[i] for i in range(2)]

    def grow(x: Lin) -> torch.Tensor:
        left = [top[i] - x.Pd[i] for i in range(2)]
        right = [size[i] - x.A.shape[2 + i] - left[i] for i in range(2)]
        return torch.nn.functional.pad(x.A, (left[1], right[1], left[0], right[0]))

    return Lin(grow(a) + grow(b), a.S, (top[0], top[1]))
