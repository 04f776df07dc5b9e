"""Model structure the bounds understand: the known-layer chain, activation slopes and the affine-op form."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..core.devices import device_of as _device
from ..models.activations import SORTING, is_sorting

#: leaf layer types whose maths is fully known (exact types: a subclass may override ``forward``)
KNOWN_LEAVES: tuple[type, ...] = (nn.Linear, nn.Conv2d, nn.Flatten, nn.ReLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU,
                                  nn.Identity, *SORTING)
#: dense matrices of convolutions larger than this (entries) are not built
MAX_DENSE = 30_000_000
#: relative slack added to float64 norm computations so rounding cannot push a bound below the truth
SLACK = 1e-12


def known_layers(model: nn.Module) -> tuple[list[tuple[str, nn.Module]] | None, str | None]:
    """The model as a flat list of ``(name, leaf)``, or ``(None, reason)`` when it is not fully understood.

    Understood: ``nn.Sequential`` itself (not a subclass, which may override
    ``forward``), nested the same way, of exactly these leaves: Linear, Conv2d
    (numeric zero padding), Flatten (``start_dim=1``),
    :class:`robustclip.models.specs.Normalize`, ReLU, Sigmoid, Tanh, LeakyReLU,
    Identity; no forward hooks; finite weights. Anything else, e.g. a module
    with its own ``forward`` whose children look known, is not a chain: it
    gets no certificate, and its upper bound, if any, comes from its traced
    graph (:mod:`robustclip.bounds.graph`).
    """
    from ..models.specs import Normalize

    out: list[tuple[str, nn.Module]] = []

    def walk(m: nn.Module, name: str) -> str | None:
        label = name or "the model"
        if m._forward_hooks or m._forward_pre_hooks:
            return f"{label} ({type(m).__name__}) has forward hooks, which may change its output"
        if type(m) is nn.Sequential:
            for child_name, child in m.named_children():
                why = walk(child, f"{name}.{child_name}" if name else child_name)
                if why:
                    return why
            return None
        if type(m) in KNOWN_LEAVES or type(m) is Normalize:
            if type(m) is nn.Flatten and m.start_dim != 1:
                return f"{label} flattens from dim {m.start_dim}, not 1"
            if type(m) is nn.Conv2d and (m.padding_mode != "zeros" or isinstance(m.padding, str)):
                return f"{label} uses padding {m.padding!r} ({m.padding_mode}); only numeric zero padding is known"
            for p in m.parameters(recurse=False):
                if not bool(torch.isfinite(p).all()):
                    return f"{label} ({type(m).__name__}) has non-finite weights"
            out.append((name, m))
            return None
        kind = "a subclass of nn.Sequential" if isinstance(m, nn.Sequential) else type(m).__name__
        return (f"{label} is {kind}, a module with its own forward; only nn.Sequential of Linear, Conv2d, "
                "Flatten, Normalize, ReLU, Sigmoid, Tanh, LeakyReLU, MinMax, GroupSort and Identity layers is "
                "understood")

    why = walk(model, "")
    return (None, why) if why else (out, None)


def activation_slopes(layer: nn.Module) -> tuple[float, float] | None:
    """``(min, max)`` slope of an elementwise activation (sigmoid: ``(0, 1/4)``); None for other layers
    (including MinMax and GroupSort, which are not elementwise; their Lipschitz constant is 1)."""
    if isinstance(layer, nn.Sigmoid):
        return (0.0, 0.25)
    if isinstance(layer, (nn.ReLU, nn.Tanh)):
        return (0.0, 1.0)
    if isinstance(layer, nn.LeakyReLU):
        a = float(layer.negative_slope)
        return (min(a, 1.0), max(a, 1.0))
    return None


@dataclass
class Affine:
    """``x -> W x + b`` on flattened vectors: ``W`` ``(out, in)``, ``b`` ``(out,)``, float64 on the CPU."""

    W: torch.Tensor
    b: torch.Tensor


def affine_ops(model: nn.Module, in_shape: tuple[int, ...]) -> tuple[list[Affine | nn.Module] | None, str | None]:
    """The model as alternating :class:`Affine` maps and elementwise activations on flattened vectors.

    Normalize, Linear and Conv2d become affine maps (a convolution becomes its
    dense matrix on the actual input size, built from basis vectors);
    consecutive affine maps are multiplied out; Flatten and Identity vanish.
    Returns ``(None, reason)`` for models :func:`known_layers` does not
    understand or convolutions too large to densify (``MAX_DENSE`` entries).
    """
    from torch.nn import functional as F

    from ..models.specs import Normalize

    layers, why = known_layers(model)
    if layers is None:
        return None, why
    ops: list[Affine | nn.Module] = []
    shape = tuple(in_shape)
    dev = _device(model)
    for name, layer in layers:
        with torch.no_grad():
            next_shape = tuple(layer(torch.zeros((1, *shape), device=dev)).shape[1:])
        d_in, d_out = math.prod(shape), math.prod(next_shape)
        aff: Affine | None = None
        if isinstance(layer, nn.Linear):
            W = layer.weight.detach().double().cpu()
            b = torch.zeros(W.shape[0], dtype=torch.float64)
            if layer.bias is not None:
                b = layer.bias.detach().double().cpu()
            aff = Affine(W, b)
        elif isinstance(layer, nn.Conv2d):
            if d_in * d_out > MAX_DENSE:
                return None, (f"{name}: convolution {shape}->{next_shape} is too large to densify "
                              f"({d_in * d_out} entries)")
            w = layer.weight.detach().double().cpu()
            with torch.no_grad():
                basis = torch.eye(d_in, dtype=torch.float64).view(d_in, *shape)
                cols = F.conv2d(basis, w, stride=layer.stride, padding=layer.padding,
                                dilation=layer.dilation, groups=layer.groups)
            bias = torch.zeros(next_shape[0], dtype=torch.float64)
            if layer.bias is not None:
                bias = layer.bias.detach().double().cpu()
            aff = Affine(cols.flatten(1).T.contiguous(), bias.view(-1, 1, 1).expand(next_shape).flatten().clone())
        elif isinstance(layer, Normalize):
            aff = Affine(torch.eye(d_in, dtype=torch.float64) / layer.std,
                         torch.full((d_in,), -layer.mean / layer.std, dtype=torch.float64))
        elif isinstance(layer, (nn.Flatten, nn.Identity)):
            pass
        else:
            ops.append(layer)
        if aff is not None:
            last = ops[-1] if ops else None
            if isinstance(last, Affine):
                ops[-1] = Affine(aff.W @ last.W, aff.W @ last.b + aff.b)
            else:
                ops.append(aff)
        shape = next_shape
    return ops, None


def _chain(ops: list[Affine | nn.Module]) -> tuple[list[torch.Tensor], list[float], list[tuple[float, float] | None]]:
    """Split ops into affine matrices ``W_1..W_L``, the Lipschitz factor of the activations before
    each (and after the last, as entry L), and the slope range when exactly one activation sits between."""
    mats: list[torch.Tensor] = []
    factors: list[float] = [1.0]
    between: list[tuple[float, float] | None] = [None]
    count = 0
    for op in ops:
        if isinstance(op, Affine):
            mats.append(op.W)
            factors.append(1.0)
            between.append(None)
            count = 0
        elif is_sorting(op):  # Lipschitz 1, but not elementwise: no slope interval
            count += 2
            between[-1] = None
        else:
            s = activation_slopes(op)
            assert s is not None
            factors[-1] *= max(abs(s[0]), abs(s[1]))
            count += 1
            between[-1] = s if count == 1 else None
    # factors[i] is the activation factor after W_i (factors[0]: before W_1)
    return mats, factors, between
