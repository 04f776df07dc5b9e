"""Devices, one check each: which device a user's ``--device`` names, and which device a model lives on.

Everything that moves a model or a tensor (training, evaluation, the gate, the Lipschitz ascents) asks here, so a
device that does not exist is refused with the same one-line error everywhere, before any work.
"""

from __future__ import annotations

import torch
from torch import nn

from .errors import RobustclipError

DEVICES = ("cpu", "cuda")
"""The device types robustclip runs on."""


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a :class:`torch.device` (None: the CPU); a one-line user error when it is not available."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise RobustclipError(f"unknown device {device!r:.80}", "use cpu, cuda or cuda:N") from None
    if dev.type not in DEVICES:
        raise RobustclipError(f"device {device!r:.80} is not supported", "use cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RobustclipError(f"device {device!r} asked for, but CUDA is not available", "use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RobustclipError(f"device {device!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist",
                              "use cuda:0 or another index that exists")
    return dev


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter, else of its first buffer (the CPU for a model with neither)."""
    t: torch.Tensor | None = next(model.parameters(), None)
    if t is None:
        t = next(model.buffers(), None)
    return torch.device("cpu") if t is None else t.device
