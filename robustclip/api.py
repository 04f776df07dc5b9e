"""The public one-call functions with a device: ``robustclip.load``, ``robustclip.evaluate``, ``robustclip.benchmark``.

Each takes ``device`` (``auto``: CUDA when a GPU is present, else the CPU; ``cpu``; ``cuda``; ``cuda:N``; None:
where the model already is, the CPU for :func:`load`) and ``progress`` (None: on when stderr is a terminal).
Evaluation runs with TF32 off (certificates need full float32 rounding) and records the device, its name, the
CUDA version and both TF32 flags in the result's ``meta``.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from .attacks.suites import Suite
from .checkpoints.format import CheckpointMeta
from .core import devices
from .evaluation.runner import EvalResult


def load(path: str | os.PathLike[str], *, model: str | None = None, dataset: str | None = None,
         device: str | torch.device | None = None, trust_factory: bool = False) -> tuple[nn.Module, CheckpointMeta]:
    """``robustclip.load``: the checkpoint's model in eval mode on ``device``, and its metadata.

    ``path`` is a robustclip checkpoint, or your own weights (a safetensors or ``.pt``/``.pth`` state_dict; never
    unpickled beyond tensors) with ``model="MODULE:CALLABLE"`` naming the code that builds the network (imported
    and called: it runs) and ``dataset`` naming what it classifies (see
    :func:`robustclip.checkpoints.foreign.load_model`). Example::

        model, meta = robustclip.load("clip.safetensors", device="auto")
        model, meta = robustclip.load("cnn.pt", model="mypkg.nets:small_cnn", dataset="cifar10")
    """
    from .checkpoints.foreign import load_model

    dev = devices.resolve_device(device)  # a missing GPU fails before the file is read
    net, meta = load_model(path, model=model, dataset=dataset, trust_factory=trust_factory)
    return net.to(dev), meta


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, suite: str | Suite,
             device: str | torch.device | None = None, progress: bool | None = None, **kw: Any) -> EvalResult:
    """``robustclip.evaluate``: :func:`robustclip.evaluation.runner.evaluate` on ``device`` (the model moves there;
    ``x``
    ``(N, ...)`` in [0,1] and ``y`` ``(N,)`` stay where they are and move one batch at a time). Other keywords go to
    :func:`robustclip.evaluation.runner.evaluate`. Accuracies in the result are fractions in [0, 1]."""
    from .core.progress import resolve
    from .evaluation.runner import evaluate as _evaluate

    if device is not None:
        model = model.to(devices.resolve_device(device))
    with devices.exact_math() as flags:
        res = _evaluate(model, x, y, suite=suite, progress=resolve(progress), **kw)
    res.meta.update(devices.describe(devices.device_of(model)))
    res.meta.update({f"bounds_{k}": v for k, v in flags.items()})
    return res


def benchmark(model: nn.Module, *, suite: str | Suite, dataset: str = "mnist", n: int | None = 1000,
              data_dir: str | None = None, progress: bool | None = None,
              device: str | torch.device | None = None) -> tuple[float, float]:
    """``robustclip.benchmark``: ``(clean accuracy, worst-case accuracy at the suite's headline ε)``, both fractions
    in [0, 1], on ``device`` (see :func:`robustclip.evaluation.runner.benchmark`)."""
    from .core.progress import resolve
    from .evaluation.runner import benchmark as _benchmark

    if device is not None:
        model = model.to(devices.resolve_device(device))
    with devices.exact_math():
        return _benchmark(model, dataset=dataset, suite=suite, n=n, data_dir=data_dir, progress=resolve(progress))

