"""Model modes, one context each: :func:`eval_mode` (eval() for the block, the train/eval flag restored after) and
:func:`frozen` (eval mode and the parameters' gradients off, for attacks and Lipschitz ascents that differentiate
with respect to the input only)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; its train/eval flag restored after, also on an exception."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """The model in eval mode with its parameters' gradients off (input gradients only); both restored after."""
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with eval_mode(model):
            yield
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
