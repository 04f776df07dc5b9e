"""Gradient-norm-preserving activations for certified training: MinMax and GroupSort.

Both sort small groups of channels, so each is a permutation of its input on
every linear piece: L2 Lipschitz constant exactly 1 (the product bound counts
them as 1). They are not elementwise, so bounds that assume a diagonal
activation Jacobian with slopes in an interval (LipSDP, ECLipsE, the
layer-pair bound, CROWN's elementwise relaxations) do not apply to them.
"""

from __future__ import annotations

import torch
from torch import nn


class MinMax(nn.Module):
    """``(N, C, ...) -> (N, C, ...)``: channel halves ``a = x[:, :C/2]``, ``b = x[:, C/2:]`` become
    ``cat([max(a, b), min(a, b)])`` (GloRo's MinMax). ``C`` must be even."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return torch.cat([torch.maximum(a, b), torch.minimum(a, b)], dim=1)


class GroupSort(nn.Module):
    """``(N, C, ...) -> (N, C, ...)``: channels sorted (descending) within consecutive groups of ``group`` (C
    divisible by it); ``group=2`` is MaxMin on neighbouring channels (Anil et al. 2019)."""

    def __init__(self, group: int = 2) -> None:
        super().__init__()
        self.group = int(group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[0], x.shape[1]
        g = x.reshape(n, c // self.group, self.group, *x.shape[2:])
        return g.sort(dim=2, descending=True).values.reshape(x.shape)

    def extra_repr(self) -> str:
        return f"group={self.group}"


SORTING = (MinMax, GroupSort)
"""The sorting activations: Lipschitz 1 in L2, not elementwise."""


def is_sorting(layer: object) -> bool:
    """True for :class:`MinMax` and :class:`GroupSort`."""
    return type(layer) in SORTING
