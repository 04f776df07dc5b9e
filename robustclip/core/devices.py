"""Devices, one check each: which device a user's ``--device`` names, which device a model lives on, and what a
result records about it.

Everything that moves a model or a tensor (training, evaluation, the gate, the Lipschitz ascents) asks here, so a
device that does not exist is refused with the same one-line error everywhere, before any work.
:func:`resolve_device` turns ``auto`` into CUDA when a GPU is present, else the CPU; ``cpu``, ``cuda`` and
``cuda:N`` are checked (a GPU that is not there is a one-line user error). :func:`device_of` is where a model lives.
:func:`describe` is what a result records: the device, its name, the CUDA version and the TF32 flags.
:func:`exact_math` turns TF32 off for the duration of bounds and certificates (TF32 keeps 10 mantissa bits: its
rounding could void a certificate) and says which flags held. :func:`fitting_batch` / :func:`remember_batch` keep
the largest batch that fitted on a device, so a later attack starts there instead of backing off again;
:func:`oom_error` is the one-line error when even one sample does not fit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ..errors import RobustclipError

DEVICES = ("cpu", "cuda")
"""The device types robustclip runs on."""
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
"""How the error messages name the accepted ``--device`` values."""
_FITS: dict[tuple[str, int, str], int] = {}


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a :class:`torch.device`: None is the CPU, ``auto`` is ``cuda`` when available, else ``cpu``.

    Raises :class:`RobustclipError` (exit 2, one line) for an unknown device, CUDA without a GPU, or a GPU index
    that does not exist.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device.strip().lower() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise RobustclipError(f"unknown device {device!r:.80}", f"use {DEVICE_CHOICES}") from None
    if dev.type not in DEVICES:
        raise RobustclipError(f"device {device!r:.80} is not supported", f"use {DEVICE_CHOICES}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RobustclipError(f"device {device!r:.80} asked for, but CUDA is not available",
                              "use --device cpu (or auto)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RobustclipError(f"device {device!r:.80} asked for, but only {torch.cuda.device_count()} GPU(s) exist",
                              "use cuda:0 or another index that exists")
    return dev


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter, else of its first buffer (the CPU for a model with neither)."""
    t: torch.Tensor | None = next(model.parameters(), None)
    if t is None:
        t = next(model.buffers(), None)
    return torch.device("cpu") if t is None else t.device


def describe(device: str | torch.device | None = None) -> dict[str, Any]:
    """What a result records about where it ran: ``device`` (``cpu``, ``cuda:0``), ``device_name`` (the GPU's
    or the CPU's), ``cuda_version`` (None on the CPU or a CPU-only torch) and the TF32 flags now in force."""
    import platform

    dev = torch.device("cpu") if device is None else torch.device(device)
    out: dict[str, Any] = {"device": "cpu", "device_name": platform.processor() or platform.machine() or "cpu",
                           "cuda_version": torch.version.cuda}
    if dev.type == "cuda" and torch.cuda.is_available():
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        out.update(device=f"cuda:{index}", device_name=torch.cuda.get_device_name(index))
    out.update(tf32_flags())
    return out


def tf32_flags() -> dict[str, bool]:
    """The two TF32 switches: ``tf32_matmul`` (``torch.backends.cuda.matmul.allow_tf32``) and ``tf32_cudnn``."""
    return {"tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32)}


@contextlib.contextmanager
def exact_math() -> Iterator[dict[str, bool]]:
    """TF32 off (matmul and cuDNN) inside the block, restored after; yields the flags in force inside (both
    False). Harmless on the CPU, where TF32 does not exist."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield tf32_flags()
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def _key(model: nn.Module, dev: torch.device, kind: str) -> tuple[str, int, str]:
    return (str(dev), id(model), kind)


def fitting_batch(model: nn.Module, dev: torch.device, kind: str, wanted: int) -> int:
    """The batch to start ``kind`` (an attack type) with on ``dev``: ``wanted``, or the largest that fitted
    there before for this model when that is smaller (found once by the out-of-memory back-off, then reused)."""
    return min(int(wanted), _FITS.get(_key(model, dev, kind), int(wanted)))


def remember_batch(model: nn.Module, dev: torch.device, kind: str, batch: int, backed_off: bool) -> None:
    """Record that ``batch`` fitted on ``dev`` for ``kind`` after an out-of-memory back-off (nothing otherwise)."""
    if backed_off:
        _FITS[_key(model, dev, kind)] = int(batch)


def oom_error(model: nn.Module, dev: torch.device, batch: int, what: str = "the attack") -> RobustclipError:
    """The one-line error for running out of memory at the smallest batch."""
    name = type(model).__name__
    return RobustclipError(f"{dev} ran out of memory running {what} on model {name} at batch size {batch}, the "
                           "smallest", "use --device cpu, or a smaller model or input")
