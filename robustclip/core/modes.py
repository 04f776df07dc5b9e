"""Model modes, one context each: :func:`eval_mode` (eval() for the block, the train/eval flag restored after) and
:func:`frozen` (eval mode and the parameters' gradients off, for attacks and Lipschitz ascents that differentiate
with respect to the input only)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


def train_modes(model: nn.Module) -> dict[nn.Module, bool]:
    """The ``training`` flag of every submodule of ``model`` (to restore with :func:`restore_modes`)."""
    return {m: m.training for m in model.modules()}


def restore_modes(modes: dict[nn.Module, bool]) -> None:
    """Set each submodule back to the mode :func:`train_modes` recorded."""
    for m, training in modes.items():
        m.training = training


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` in eval mode for the block; every submodule's own train/eval flag restored after, also on an
    exception (``model.train(flag)`` would set them all alike, e.g. wake a BatchNorm a user had frozen)."""
    saved = train_modes(model)
    model.eval()
    try:
        yield model
    finally:
        restore_modes(saved)


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


@contextlib.contextmanager
def kept_running_stats(model: nn.Module) -> Iterator[None]:
    """The running statistics of every normalisation layer (BatchNorm, InstanceNorm with tracked statistics) and
    its ``num_batches_tracked`` left as they were by the block: inputs that are not data (CLIP's pair points) may
    pass through a model in train mode, normalised by their own batch statistics as training does, without moving
    the statistics that eval mode later uses.

    The layers update throw-away copies during the block; the original tensors are put back after it (never
    written in place, so a backward pass through the block's graph stays valid).
    """
    names = ("running_mean", "running_var", "num_batches_tracked")
    saved = [(m, name, buf) for m in model.modules() if isinstance(m, nn.modules.batchnorm._NormBase)
             for name in names if (buf := getattr(m, name, None)) is not None]
    for m, name, buf in saved:
        setattr(m, name, buf.clone())
    try:
        yield
    finally:
        for m, name, buf in saved:
            setattr(m, name, buf)
