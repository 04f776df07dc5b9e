"""Models built from plain, JSON-serialisable specs.

A spec is a dict ``{"arch": NAME, **arguments}``; :func:`build` turns it into a
``torch.nn.Sequential`` and attaches the spec as ``model.spec``, so a checkpoint
can rebuild the model without pickled code. Every model takes inputs in
``[0, 1]``; normalisation, when asked for, is the model's first layer.

Architectures:

``fc``
    Fully connected net. ``sizes`` lists layer widths, input first: the paper's
    MNIST net is ``[784, 200, 80, 10]`` with ``activation="sigmoid"``. The
    authors' code also squashes the output with a sigmoid; set
    ``output_activation="sigmoid"`` to reproduce that.
``cnn``
    A small CNN for ``(N, 1, 28, 28)`` input: two stride-2 convolutions
    (16 and 32 channels), a 100-unit hidden layer, ``num_classes`` outputs.
``cnn4c3f``
    GloRo's MNIST net for certified training (``minmax_cnn_4C3F``): convolutions
    32 3x3/1, 32 4x4/2, 64 3x3/1, 64 4x4/2, then 512, 512 and ``num_classes``
    units; ``activation="minmax"`` by default.
``mlp1d``
    The 1-D regression MLP, ``(N, 1) -> (N, 1)``: ``fc`` with
    ``sizes=[1, 64, 64, 1]`` and tanh by default.
``cifar_cnn``, ``resnet8``
    For ``(N, 3, 32, 32)`` CIFAR images, CIFAR normalisation inside (see
    :mod:`robustclip.models.cifar`): a small CNN (``width`` 16, max pooling)
    and a ResNet-8 of basic blocks with BatchNorm. Not ``nn.Sequential``
    chains: their Lipschitz bounds come from :mod:`robustclip.bounds.graph`.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from ..data.datasets import REGISTRY
from ..errors import RobustclipError
from . import cifar as cifar_models
from .activations import GroupSort, MinMax

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "minmax": MinMax, "groupsort": GroupSort}
"""``minmax`` and ``groupsort`` (groups of 2) sort channels: Lipschitz 1, for certified training."""
ARCHITECTURES = ("fc", "cnn", "cnn4c3f", "mlp1d", "cifar_cnn", "resnet8")
CIFAR_ARCHITECTURES = ("cifar_cnn", "resnet8")
MAX_WIDTH = 100_000
"""Widest layer (and most classes) a spec may ask for."""
MAX_LAYERS = 64
"""Most layers an fc spec may list."""
MAX_PARAMETERS = 50_000_000
"""Most parameters a spec may ask for (200 MB of float32); checked before anything is allocated."""


class Normalize(nn.Module):
    """``(x - mean) / std`` with scalar constants: ``(N, ...) -> (N, ...)``.

    Its Lipschitz constant (any norm) is ``1 / std``.
    """

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        for name, v in (("mean", mean), ("std", std)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise RobustclipError(f"normalisation {name} must be a finite number, got {v!r}",
                                      "use e.g. mean=0.1307, std=0.3081")
        if std <= 0:
            raise RobustclipError(f"normalisation std must be positive, got {std}", "use e.g. std=0.3081")
        self.mean = float(mean)
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


def paper_spec(*, output_sigmoid: bool = False) -> dict[str, Any]:
    """The paper's MNIST net: 784-200-80-10, sigmoid hidden activations."""
    return {"arch": "fc", "sizes": [784, 200, 80, 10], "activation": "sigmoid",
            "output_activation": "sigmoid" if output_sigmoid else None}


def default_spec(arch: str | None, dataset: str) -> dict[str, Any]:
    """A sensible spec of ``arch`` for ``dataset``, sized from the dataset's registry entry (its input shape and
    classes); ``arch`` None is the entry's default model."""
    entry = REGISTRY.get(dataset)
    arch = arch or (entry.default_model if entry is not None else "fc")
    if entry is not None and entry.regression:
        if arch not in ("mlp1d", "fc"):
            raise RobustclipError(f"model {arch!r} does not fit the 1-D regression data", "use --model mlp1d")
        return {"arch": "mlp1d", "sizes": [1, 64, 64, 1], "activation": "tanh"}
    classes = entry.classes if entry is not None and entry.classes else 10
    if arch == "fc":  # the paper's widths, on the dataset's input (the paper's net itself on MNIST)
        inputs = math.prod(entry.shape) if entry is not None else 784
        return {**paper_spec(), "sizes": [inputs, 200, 80, classes]}
    if arch == "cnn":
        return {"arch": "cnn", "num_classes": 10}
    if arch == "cnn4c3f":
        return {"arch": "cnn4c3f", "num_classes": 10}
    if arch in CIFAR_ARCHITECTURES:
        return {"arch": arch, "num_classes": classes}
    raise RobustclipError(f"model {arch!r} does not fit image data",
                          "use --model fc, cnn or cnn4c3f (MNIST), or cifar_cnn or resnet8 (CIFAR)")


def _required(name: Any) -> nn.Module:
    """The activation ``name``; a missing one is an error, not an absent layer."""
    act = _activation(name)
    assert act is not None
    return act


def _activation(name: str | None, *, optional: bool = False) -> nn.Module | None:
    if name is None and optional:
        return None
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise RobustclipError(f"unknown activation {_short(name)}", f"use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _short(v: Any, limit: int = 80) -> str:
    """``repr(v)`` cut to ``limit`` characters (a hostile spec may be megabytes long)."""
    r = repr(v)
    return r if len(r) <= limit else r[: limit - 3] + "..."


def _norm_layer(spec: dict[str, Any]) -> list[nn.Module]:
    if spec.get("mean") is None and spec.get("std") is None:
        return []
    return [Normalize(spec.get("mean", 0.0), spec.get("std", 1.0))]


def _fc(spec: dict[str, Any]) -> nn.Sequential:
    sizes = spec.get("sizes")
    if (not isinstance(sizes, list) or len(sizes) < 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes)):
        raise RobustclipError(f"fc spec needs 'sizes', a list of >= 2 positive ints, got {_short(sizes)}",
                              "e.g. sizes=[784, 200, 80, 10]")
    if len(sizes) > MAX_LAYERS:
        raise RobustclipError(f"fc spec sizes list {len(sizes)} layers, more than the {MAX_LAYERS} allowed",
                              "use a smaller net, e.g. sizes=[784, 200, 80, 10]")
    if max(sizes) > MAX_WIDTH:
        raise RobustclipError(f"fc spec sizes ask for a layer of width {max(sizes):,}, wider than the {MAX_WIDTH:,} "
                              "allowed", "use a smaller net, e.g. sizes=[784, 200, 80, 10]")
    params = sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))
    if params > MAX_PARAMETERS:
        raise RobustclipError(f"fc spec sizes {_short(sizes)} ask for {params:,} parameters, more than the "
                              f"{MAX_PARAMETERS:,} allowed", "use narrower layers")
    layers: list[nn.Module] = [nn.Flatten(), *_norm_layer(spec)]
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(_required(spec.get("activation", "sigmoid")))
    out_act = _activation(spec.get("output_activation"), optional=True)
    if out_act is not None:
        layers.append(out_act)
    return nn.Sequential(*layers)


def _num_classes(spec: dict[str, Any], arch: str) -> int:
    """The spec's ``num_classes`` (default 10): a whole number from 1 to ``MAX_WIDTH``, else one line naming it."""
    k = spec.get("num_classes", 10)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_WIDTH:
        raise RobustclipError(f"{arch} num_classes must be a whole number from 1 to {MAX_WIDTH:,}, got {_short(k)}",
                              "e.g. num_classes=10")
    return k


def _cnn(spec: dict[str, Any]) -> nn.Sequential:
    k = _num_classes(spec, "cnn")
    act = spec.get("activation", "relu")
    return nn.Sequential(
        *_norm_layer(spec),
        nn.Conv2d(1, 16, 4, stride=2, padding=1), _required(act),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), _required(act),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 100), _required(act),
        nn.Linear(100, k),
    )


def _cnn4c3f(spec: dict[str, Any]) -> nn.Sequential:
    k = _num_classes(spec, "cnn4c3f")
    act = spec.get("activation", "minmax")
    return nn.Sequential(
        *_norm_layer(spec),
        nn.Conv2d(1, 32, 3, stride=1, padding=1), _required(act),
        nn.Conv2d(32, 32, 4, stride=2, padding=1), _required(act),
        nn.Conv2d(32, 64, 3, stride=1, padding=1), _required(act),
        nn.Conv2d(64, 64, 4, stride=2, padding=1), _required(act),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 512), _required(act),
        nn.Linear(512, 512), _required(act),
        nn.Linear(512, k),
    )


def build(spec: dict[str, Any]) -> nn.Module:
    """Build the model that ``spec`` describes; the result carries ``model.spec``."""
    if not isinstance(spec, dict) or "arch" not in spec:
        raise RobustclipError(f"a model spec must be a dict with an 'arch' key, got {_short(spec)}",
                              f"use one of {', '.join(ARCHITECTURES)}")
    arch = spec["arch"]
    model: nn.Module
    if arch == "fc":
        model = _fc(spec)
    elif arch == "mlp1d":
        model = _fc({"sizes": [1, 64, 64, 1], "activation": "tanh", **spec})
    elif arch == "cnn":
        model = _cnn(spec)
    elif arch == "cnn4c3f":
        model = _cnn4c3f(spec)
    elif arch in CIFAR_ARCHITECTURES:
        params = cifar_models.parameters(spec, MAX_WIDTH)  # validates the spec; allocates nothing
        if params > MAX_PARAMETERS:
            raise RobustclipError(f"{arch} spec asks for {params:,} parameters, more than the {MAX_PARAMETERS:,} "
                                  "allowed", "use a smaller width")
        build_cifar = cifar_models.cifar_cnn if arch == "cifar_cnn" else cifar_models.resnet8
        model = build_cifar(spec, MAX_WIDTH)
    else:
        raise RobustclipError(f"unknown architecture {_short(arch)}", f"use one of {', '.join(ARCHITECTURES)}")
    setattr(model, "spec", copy.deepcopy(spec))  # noqa: B010 (an attribute nn.Module does not declare)
    return model


def input_shape(spec: dict[str, Any]) -> tuple[int, ...]:
    """The per-sample input shape a spec expects, e.g. ``(1, 28, 28)`` or ``(1,)``."""
    if spec["arch"] == "mlp1d":
        return (1,)
    if spec["arch"] == "fc":
        n = spec["sizes"][0]
        return {784: (1, 28, 28), 3072: (3, 32, 32)}.get(n, (n,))
    if spec["arch"] in CIFAR_ARCHITECTURES:
        side = cifar_models.image_size(spec)
        return (len(spec.get("mean", cifar_models.CIFAR_MEAN)), side, side)
    return (1, 28, 28)


def output_size(spec: dict[str, Any]) -> int:
    """Number of outputs (classes, or 1 for regression)."""
    if spec["arch"] in ("fc", "mlp1d"):
        return int(spec.get("sizes", [1, 64, 64, 1])[-1])
    return int(spec.get("num_classes", 10))


def count_parameters(model: nn.Module) -> int:
    """Number of trainable scalars."""
    return sum(math.prod(p.shape) for p in model.parameters())
