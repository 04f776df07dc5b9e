"""Input shapes for attacks: torchattacks assumes images ``(N, C, H, W)``; every other shape is viewed as one.

torchattacks' L2 attacks reshape norms to ``(N, 1, 1, 1)`` and sum over dims 1-3, so on ``(N, d)`` inputs they
broadcast into ``(N, 1, N, d)`` and on 5-D inputs they mis-normalise. Here a batch of any per-sample shape ``s``
is flattened into the image view ``(N, 1, 1, prod(s))`` and the model is wrapped to take that view back to
``(N, *s)``: the map is a reshape, so norms, the [0,1] box and the model's outputs are unchanged.

Which attacks need a real image (Square samples square patches over height and width) and how many classes an
attack needs (DLR losses read the third-largest logit; targeted DLR the fourth) are checked here too, before work.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ..errors import RobustclipError

IMAGE_ONLY = frozenset({"square", "autoattack"})
"""Attack kinds that only make sense on images ``(C, H, W)`` per sample (Square's patches)."""


def is_image(sample_shape: tuple[int, ...]) -> bool:
    """True for a per-sample shape ``(C, H, W)`` with height and width above 1 (what Square's patches need)."""
    return len(sample_shape) == 3 and sample_shape[1] > 1 and sample_shape[2] > 1


class ImageView(nn.Module):
    """``model`` seen through the image view: takes ``(N, 1, 1, d)`` and calls ``model`` on ``(N, *sample_shape)``.

    Its train/eval flag starts as the wrapped model's, so torchattacks (which restores the flag it found)
    never switches BatchNorm or Dropout of an evaluated model back to training.
    """

    def __init__(self, model: nn.Module, sample_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.training = model.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, k)`` for ``x`` ``(N, 1, 1, d)``."""
        return self.model(x.reshape(x.shape[0], *self.sample_shape))


def needs_view(sample_shape: tuple[int, ...]) -> bool:
    """Whether inputs of this per-sample shape must be viewed as ``(1, 1, d)`` for torchattacks."""
    return len(sample_shape) != 3


def attack_model(model: nn.Module, sample_shape: tuple[int, ...]) -> nn.Module:
    """The module an attack is built on: ``model`` itself for images, else an :class:`ImageView` of it."""
    return ImageView(model, sample_shape) if needs_view(sample_shape) else model


def to_view(x: torch.Tensor) -> torch.Tensor:
    """``x`` ``(N, ...)`` as the attack sees it: unchanged for images, else ``(N, 1, 1, d)`` (a view, no copy)."""
    if not needs_view(tuple(x.shape[1:])):
        return x
    return x.reshape(x.shape[0], 1, 1, math.prod(x.shape[1:]))


def check_attacks(kinds: Iterable[tuple[str, str, dict[str, object]]], sample_shape: tuple[int, ...],
                  n_classes: int) -> None:
    """Refuse attacks that cannot run on this data, with one line (:class:`RobustclipError`).

    ``kinds``: ``(type, label, params)`` per attack. Square (and AutoAttack, which runs it) needs images
    ``(C, H, W)``; APGD with the DLR loss needs 3 classes or more; targeted attacks (APGD-T, FAB-T, AutoAttack)
    need 4 or more for APGD-T's targeted DLR loss, as AutoAttack checks; FAB-T needs at least 2.
    """
    shape = "x".join(str(s) for s in sample_shape) or "scalar"
    for t, label, params in kinds:
        if t in IMAGE_ONLY and not is_image(sample_shape):
            raise RobustclipError(f"{label} needs images (C, H, W) per sample, but the inputs are {shape}",
                                  "drop the square attack for this data, or use a suite of gradient attacks "
                                  "(e.g. pgd, apgd, apgdt)")
        need = {"apgdt": 4, "autoattack": 4, "fabt": 2}.get(t, 3 if params.get("loss") == "dlr" else 0)
        if n_classes < need:
            raise RobustclipError(f"{label} needs at least {need} classes (its loss reads the "
                                  f"{'fourth' if need == 4 else 'third' if need == 3 else 'second'}-largest logit), "
                                  f"but the model has {n_classes}",
                                  "use apgd with loss = \"ce\" or pgd for this model")
