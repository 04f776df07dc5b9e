"""Weight regularisation: the squared Frobenius norms of every Linear and Conv2d weight (``--reg weight``)."""

from __future__ import annotations

import torch
from torch import nn

from .base import Regularizer


class WeightRegularizer(Regularizer):
    """``Σ ||W||_F^2`` over the weight matrices of every ``nn.Linear`` and the
    kernels of every ``nn.Conv2d``; biases and normalisation constants do not count.
    """

    name = "weight"

    def penalty(self, model: nn.Module, extra_out: torch.Tensor | None) -> torch.Tensor:
        weights = [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        return torch.stack([w.square().sum() for w in weights]).sum()
