"""Checks of what the Python API is handed: the model's outputs, the inputs and labels, and its train/eval modes.

:func:`robustclip.evaluate` (and :func:`robustclip.testing.assert_robust` through it) calls these before any
attack runs, so a model that returns a tuple, a 1-D or 3-D tensor, the wrong number of rows or classes, or data
that is empty, NaN, outside [0,1], or labelled beyond the model's outputs, ends in one
:class:`~robustclip.errors.RobustclipError` instead of a ``RuntimeError`` deep inside an attack.

Modes: a model is always evaluated in eval mode (Dropout off, BatchNorm using and keeping its running statistics),
including the shape check, and every submodule's own mode is restored afterwards, so evaluating a model mid-training
changes neither its weights, nor its buffers, nor its modes.
"""

from __future__ import annotations

import torch
from torch import nn

from ..core.devices import device_of
from ..core.modes import eval_mode
from ..errors import RobustclipError


def check_outputs(model: nn.Module, x: torch.Tensor, n_classes: int | None) -> int:
    """Run ``model`` on two inputs of ``x`` ``(N, ...)``; it must return a tensor of logits ``(2, k)`` with
    ``k >= 2`` (``k == n_classes`` when given). Returns ``k``."""
    sample = x[:2].to(device_of(model))
    try:
        with eval_mode(model), torch.no_grad():  # the probe never updates BatchNorm's running statistics
            out = model(sample)
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise RobustclipError(f"the model fails on inputs of shape (N, {', '.join(map(str, x.shape[1:]))}): {first}",
                              "give data whose per-sample shape the model takes (or the model for this data)"
                              ) from None
    if not isinstance(out, torch.Tensor):
        raise RobustclipError(f"model output is a {type(out).__name__}, expected a tensor of logits (N, classes)",
                              "return the logits tensor itself from forward (not a tuple or dict)")
    if out.dim() != 2:
        raise RobustclipError(f"model output has shape {tuple(out.shape)}, expected (N, classes)",
                              "evaluate classifiers that return logits of shape (N, classes)")
    if out.shape[0] != sample.shape[0]:
        raise RobustclipError(f"model maps {sample.shape[0]} inputs to {out.shape[0]} rows of logits",
                              "return one row of logits per input")
    if n_classes is not None and out.shape[1] != n_classes:
        raise RobustclipError(f"model has {out.shape[1]} outputs but the dataset has {n_classes} classes",
                              "evaluate the model on the dataset it was trained for")
    if out.shape[1] < 2:
        raise RobustclipError(f"model has {out.shape[1]} output, a classifier needs at least 2 classes",
                              "return one logit per class")
    if not out.is_floating_point():
        raise RobustclipError(f"model output is {out.dtype}, expected floating-point logits",
                              "return the logits, not the predicted classes")
    return int(out.shape[1])


def check_data(x: torch.Tensor, y: torch.Tensor) -> None:
    """``x`` floating point ``(N, ...)``, finite, in [0,1], N >= 1; ``y`` integer labels ``(N,)``."""
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise RobustclipError(f"x and y must be tensors, got {type(x).__name__} and {type(y).__name__}",
                              "pass torch tensors: x (N, ...) in [0,1], y (N,) integer labels")
    if x.dim() < 2 or x.shape[0] < 1:
        raise RobustclipError(f"inputs x have shape {tuple(x.shape)}; expected (N, ...) with N >= 1",
                              "pass at least one sample, one per row")
    if not x.is_floating_point():
        raise RobustclipError(f"inputs x are {x.dtype}, expected floating point in [0,1]",
                              "convert them, e.g. x.float() / 255")
    if not bool(torch.isfinite(x).all()):
        raise RobustclipError("inputs hold NaN or infinite values; they must lie in [0,1]",
                              "clean the data (NaN would pass every range check and every attack's clamp)")
    if x.min() < 0 or x.max() > 1:
        raise RobustclipError("inputs must lie in [0,1]", "put normalisation inside the model, not in the data")
    if y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise RobustclipError(f"labels y have shape {tuple(y.shape)} for {x.shape[0]} inputs",
                              "give one integer label per input, y of shape (N,)")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise RobustclipError(f"labels y are {y.dtype}, expected integer class indices",
                              "convert them, e.g. y.long() (after checking they are whole numbers)")


def prepare_data(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x, y)`` as the attacks need them, after :func:`check_data`: ``x`` contiguous (a permuted view works),
    ``y`` int64 (int32 and uint8 labels work). A model, ``x`` or ``y`` on the ``meta`` device (shapes without
    values) is refused: there is nothing to evaluate."""
    for what, t in (("inputs x", x), ("labels y", y)):
        if isinstance(t, torch.Tensor) and t.is_meta:
            raise RobustclipError(f"{what} are on the meta device: they have a shape but no values",
                                  "pass tensors that hold data (materialise them, e.g. on the CPU)")
    if any(p.is_meta for p in [*model.parameters(), *model.buffers()]):
        raise RobustclipError("the model's weights are on the meta device: it has a shape but no values",
                              "load its weights first (e.g. model.to_empty(device='cpu') then load_state_dict)")
    check_data(x, y)
    return x.contiguous(), y.to(torch.int64)


def check_eval_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_classes: int | None) -> int:
    """Everything :func:`robustclip.evaluate` needs before it attacks: the data (:func:`check_data`), the model's
    outputs (:func:`check_outputs`) and the labels within ``0..k-1``. Returns the number of classes ``k``."""
    check_data(x, y)
    k = check_outputs(model, x, n_classes)
    lo, hi = int(y.min()), int(y.max())
    if lo < 0 or hi >= k:
        raise RobustclipError(f"labels y lie in {lo}..{hi}, but the model has {k} outputs",
                              f"labels must be class indices 0..{k - 1}")
    return k


def check_thresholds(min_accuracy: object) -> dict[str, float]:
    """``min_accuracy`` of :func:`robustclip.testing.assert_robust`: a non-empty dict from row names to fractions
    in [0, 1] (0.9, not 90), finite, not booleans; otherwise a :class:`RobustclipError` naming the first bad entry.
    An empty dict would assert nothing, a negative or NaN minimum would always pass or always fail."""
    import math

    if not isinstance(min_accuracy, dict) or not min_accuracy:
        raise RobustclipError(f"assert_robust: min_accuracy must name at least one row, got {min_accuracy!r}",
                              'e.g. min_accuracy={"clean": 0.95, "worst_case@L2:1": 0.5}')
    out = {}
    for key, want in min_accuracy.items():
        if not isinstance(key, str):
            raise RobustclipError(f"assert_robust: row name {key!r} is not a string", 'e.g. "worst_case@L2:1"')
        if isinstance(want, bool) or not isinstance(want, (int, float)) or not math.isfinite(want) \
                or not 0 <= want <= 1:
            raise RobustclipError(f"assert_robust: the minimum for {key!r} must be a fraction in [0, 1], got {want!r}",
                                  "give accuracies as fractions: 0.9 for 90%")
        out[key] = float(want)
    return out
