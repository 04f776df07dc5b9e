"""Memory guards of an evaluation: out-of-memory detection and glibc heap trimming while heavy attacks run."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

TRIM_EVERY = 10
"""Forward passes between heap trims (glibc ``malloc_trim``) while a memory-heavy attack runs on the CPU."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CPU and CUDA out-of-memory errors (``MemoryError``, ``torch.cuda.OutOfMemoryError``, or a
    ``RuntimeError`` whose message says "out of memory")."""
    if isinstance(exc, MemoryError):
        return True
    cuda_oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if cuda_oom is not None and isinstance(exc, cuda_oom):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[], Any] | None:
    """glibc's ``malloc_trim(0)`` (hands freed heap pages back to the OS), or None off glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return lambda: fn(0)


@contextlib.contextmanager
def _heap_trimmed(model: nn.Module, every: int) -> Iterator[None]:
    """While inside, trim the heap every ``every`` forward passes of ``model`` (no-op off glibc)."""
    trim = _malloc_trim()
    if trim is None:
        yield
        return
    calls = [0]

    def hook(module: nn.Module, inputs: Any) -> None:
        calls[0] += 1
        if calls[0] % every == 0:
            trim()

    handle = model.register_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()
        trim()


UNTRACKED_ASSIGNMENT = frozenset({"apgd", "apgdt"})
"""Attack types whose item assignments run without autograd (see :class:`untracked_item_assignment`)."""


class untracked_item_assignment(TorchFunctionMode):  # a context manager, named like torch's modes
    """While inside, ``tensor[index] = value`` runs under ``torch.no_grad()``; every other operation is unchanged.

    torchattacks 3.5.1's APGD and APGD-T copy the current iterate into their best-so-far record
    (``x_best_adv[idx] = x_adv[idx] + 0.0``) while ``x_adv`` requires grad, so autograd chains every step's iterate
    to that record and keeps all of them alive until the run ends: on 1000 MNIST images one APGD-T run peaked near
    6 GB. Those assignments are bookkeeping (the gradients come from ``torch.autograd.grad`` on the forward pass
    alone), so without autograd the attack computes the same examples, bit for bit (``tests/test_eval_memory.py``),
    while holding one step's tensors.
    """

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func is torch.Tensor.__setitem__:
            with torch.no_grad():
                return func(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))
