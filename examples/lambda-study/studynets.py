"""The user's own model for the λ study: a small CNN with BatchNorm, max pooling and one residual block.

Inputs are MNIST-sized images ``(N, 1, 28, 28)`` in [0, 1]; normalisation is inside the model; it returns logits
``(N, 10)``. robustclip imports this module only when a command names ``studynets:res_cnn``.
"""

import torch
from torch import nn


class Residual(nn.Module):
    """``relu(x + BN(conv(x)))``: the shape of x is kept."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn(self.conv(x)))


class Normalize(nn.Module):
    """MNIST's mean and standard deviation, inside the model: robustclip attacks inputs in [0, 1]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.1307) / 0.3081


def res_cnn() -> nn.Module:
    return nn.Sequential(
        Normalize(),
        nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),   # 16 x 14 x 14
        Residual(16), nn.MaxPool2d(2),                                                    # 16 x 7 x 7
        nn.Flatten(), nn.Linear(16 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
    )
