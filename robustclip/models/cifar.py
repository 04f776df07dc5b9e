"""The CIFAR model presets: a small CNN and a ResNet-8, with CIFAR normalisation inside the model.

Both take ``(N, 3, 32, 32)`` inputs in ``[0, 1]`` and return ``(N, num_classes)`` logits; a spec's
``image_size`` (default 32) and per-channel ``mean``/``std`` lists (default CIFAR-10's; their length is the number
of channels) adapt them to other square images, e.g. MNIST's ``(1, 28, 28)``. The
first layer is :class:`ChannelNormalize` with CIFAR-10's per-channel mean and std. Built by
:func:`robustclip.models.specs.build` from ``{"arch": "cifar_cnn"}`` or ``{"arch": "resnet8"}``; both have sound,
finite Lipschitz upper bounds (:mod:`robustclip.bounds.graph`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import RobustclipError

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
"""CIFAR-10's per-channel mean of the training images (R, G, B), in [0, 1]."""
CIFAR_STD = (0.2470, 0.2435, 0.2616)
"""CIFAR-10's per-channel standard deviation of the training images (R, G, B)."""
MAX_BASE_WIDTH = 256
"""The widest first stage a spec may ask for."""


def _short(v: Any, limit: int = 80) -> str:
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


class ChannelNormalize(nn.Module):
    """``(x - mean_c) / std_c`` per channel: ``(N, C, ...) -> (N, C, ...)``, e.g. CIFAR's mean and std.

    Its Lipschitz constant (any norm) is ``1 / min_c std_c``. The constants are not saved in a state_dict (the
    spec rebuilds them).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: list[float] | tuple[float, ...], std: list[float] | tuple[float, ...]) -> None:
        super().__init__()
        ok = (isinstance(mean, (list, tuple)) and isinstance(std, (list, tuple)) and 0 < len(mean) == len(std)
              and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                      for v in (*mean, *std)))
        if not ok:
            raise RobustclipError(f"per-channel normalisation needs equal-length lists of finite numbers, got "
                                  f"mean={_short(mean)}, std={_short(std)}", "use e.g. mean=[0.49, 0.48, 0.45]")
        if min(std) <= 0:
            raise RobustclipError(f"normalisation std must be positive, got {_short(std)}",
                                  "use e.g. std=[0.247, 0.243, 0.261]")
        self.mean_values = tuple(float(v) for v in mean)
        self.std_values = tuple(float(v) for v in std)
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(self.mean_values).view(shape), persistent=False)
        self.register_buffer("std", torch.tensor(self.std_values).view(shape), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean_values}, std={self.std_values}"


class BasicBlock(nn.Module):
    """A ResNet basic block as torchvision writes it: two 3×3 conv + BN, ``out += identity``, a 1×1 conv + BN
    shortcut when the shape changes. ``(N, cin, H, W) -> (N, planes, H/stride, W/stride)``."""

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class ResNet8(nn.Module):
    """ResNet-8 for CIFAR: normalisation, a 3×3 stem (conv + BN + ReLU), three basic blocks of widths ``w``,
    ``2w``, ``4w`` (strides 1, 2, 2), global average pooling and a linear layer: 8 weight layers on the main path.
    ``(N, 3, H, W)`` in [0, 1] → ``(N, num_classes)``."""

    def __init__(self, num_classes: int = 10, width: int = 16, mean: tuple[float, ...] = CIFAR_MEAN,
                 std: tuple[float, ...] = CIFAR_STD) -> None:
        super().__init__()
        self.normalize = ChannelNormalize(mean, std)
        self.stem = nn.Sequential(nn.Conv2d(len(mean), width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        self.layer1 = BasicBlock(width, width, 1)
        self.layer2 = BasicBlock(width, 2 * width, 2)
        self.layer3 = BasicBlock(2 * width, 4 * width, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(self.normalize(x))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(self.flatten(self.pool(out)))


def _int(spec: dict[str, Any], key: str, default: int, hi: int) -> int:
    v = spec.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= hi:
        raise RobustclipError(f"{spec.get('arch')} {key} must be a whole number from 1 to {hi:,}, got {_short(v)}",
                              f"e.g. {key}={default}")
    return v


def _stats(spec: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = spec.get("mean", list(CIFAR_MEAN)), spec.get("std", list(CIFAR_STD))
    if not (isinstance(mean, list) and isinstance(std, list)):
        raise RobustclipError(f"{spec.get('arch')} mean and std must be lists (one value per channel), got "
                              f"{_short(mean)} and {_short(std)}", f"e.g. mean={list(CIFAR_MEAN)}")
    ChannelNormalize(mean, std)  # validates
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def image_size(spec: dict[str, Any]) -> int:
    """The side of the square images a spec takes (``image_size``, default 32; a multiple of 4 from 8 to 512)."""
    s = spec.get("image_size", 32)
    if isinstance(s, bool) or not isinstance(s, int) or not 8 <= s <= 512 or s % 4:
        raise RobustclipError(f"{spec.get('arch')} image_size must be a multiple of 4 from 8 to 512, got {_short(s)}",
                              "e.g. image_size=32 (CIFAR) or 28 (MNIST)")
    return s


def cifar_cnn(spec: dict[str, Any], max_classes: int) -> nn.Sequential:
    """The small CIFAR CNN: normalisation, [conv3×3-ReLU]×2 + max pool 2 at widths ``w`` and ``2w``, a
    ``8w``-unit hidden layer, ``num_classes`` outputs (``w`` = ``width``, default 16)."""
    k = _int(spec, "num_classes", 10, max_classes)
    w = _int(spec, "width", 16, MAX_BASE_WIDTH)
    side = image_size(spec) // 4
    mean, std = _stats(spec)
    c = len(mean)
    return nn.Sequential(
        ChannelNormalize(mean, std),
        nn.Conv2d(c, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * w * side * side, 8 * w), nn.ReLU(), nn.Linear(8 * w, k),
    )


def resnet8(spec: dict[str, Any], max_classes: int) -> ResNet8:
    """:class:`ResNet8` from its spec (``num_classes``, ``width``, ``mean``, ``std``)."""
    k = _int(spec, "num_classes", 10, max_classes)
    w = _int(spec, "width", 16, MAX_BASE_WIDTH)
    image_size(spec)
    mean, std = _stats(spec)
    return ResNet8(k, w, mean, std)


def parameters(spec: dict[str, Any], max_classes: int) -> int:
    """Parameters a CIFAR spec asks for, counted on the ``meta`` device (nothing is allocated)."""
    with torch.device("meta"):
        model = cifar_cnn(spec, max_classes) if spec["arch"] == "cifar_cnn" else resnet8(spec, max_classes)
    return sum(p.numel() for p in model.parameters())
