"""The graph CROWN works on: float64 operations with their parameters (:class:`Node`), in topological order
(:class:`Plan`), and their forward maps (:func:`apply`).

Node kinds (per-sample shapes: images ``(C, H, W)``, vectors ``(F,)``):

``input``     the model's input;
``conv``      Conv2d (numeric zero padding), with BatchNorm folded in; also average pooling as a depthwise conv;
``linear``    Linear on vectors, with BatchNorm1d folded in;
``scale``     ``x * s + t`` elementwise with constant maps;
``act``       ReLU, LeakyReLU, Sigmoid, Tanh;
``pairsort``  MinMax and GroupSort of pairs: ``out[a] = max(x[a], x[b])``, ``out[b] = min(x[a], x[b])`` over
              channel pairs ``(a, b)``;
``maxpool``   MaxPool2d (``-inf`` padding, overlapping windows allowed; no ceil mode, dilation 1);
``add``       the sum ``c_1 x_1 + c_2 x_2`` of two tensors of the same shape (residual connections);
``reshape``   flatten / view keeping the batch dimension.

:mod:`robustclip.bounds.crown.tracing` builds a plan from a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class Node:
    """One operation: ``kind`` (see the module docstring), input node ids, per-sample output ``shape``, ``p`` its
    float64 parameters (CPU)."""

    kind: str
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    p: dict[str, Any] = field(default_factory=dict)


@dataclass
class Plan:
    """The traced model: ``nodes`` in topological order (node 0 is the input), ``output`` the model's output node,
    ``spec`` the node whose margins are certified: the output with trailing strictly increasing elementwise
    activations (sigmoid, tanh, LeakyReLU with a positive slope) removed, as they never change the argmax."""

    nodes: list[Node]
    output: int
    spec: int = -1
    ancestors: dict[int, list[int]] = field(default_factory=dict)
    users: dict[int, list[int]] = field(default_factory=dict)

    def finish(self) -> None:
        """Fill ``spec``, ``users`` and ``ancestors`` (ids in increasing order, the node itself included)."""
        spec = self.output
        while self.nodes[spec].kind == "act" and _increasing(self.nodes[spec].p["module"]):
            spec = self.nodes[spec].inputs[0]
        self.spec = spec
        self.users = {i: [] for i in range(len(self.nodes))}
        for i, n in enumerate(self.nodes):
            for j in n.inputs:
                self.users[j].append(i)
        for i, n in enumerate(self.nodes):
            s = {i}
            for j in n.inputs:
                s |= set(self.ancestors[j])
            self.ancestors[i] = sorted(s)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The graph on ``x`` ``(N, *in_shape)``, in float64; returns the output node ``(N, K)``."""
        vals: dict[int, torch.Tensor] = {}
        for i, n in enumerate(self.nodes):
            vals[i] = x.double() if n.kind == "input" else apply(n, [vals[j] for j in n.inputs])
        return vals[self.output]


def _increasing(m: nn.Module) -> bool:
    return isinstance(m, (nn.Sigmoid, nn.Tanh)) or (isinstance(m, nn.LeakyReLU) and m.negative_slope > 0)


def apply(n: Node, xs: list[torch.Tensor]) -> torch.Tensor:
    """Node ``n`` on its input values (float64, batch first)."""
    p = n.p
    x = xs[0]
    if n.kind == "conv":
        return F.conv2d(x, p["weight"], p["bias"], p["stride"], p["padding"], p["dilation"], p["groups"])
    if n.kind == "linear":
        return x @ p["weight"].T + p["bias"]
    if n.kind == "scale":
        return x * p["s"] + p["t"]
    if n.kind == "act":
        return p["module"](x)
    if n.kind == "pairsort":
        a, b = x[:, p["ia"]], x[:, p["ib"]]
        out = x.clone()
        out[:, p["ia"]], out[:, p["ib"]] = torch.maximum(a, b), torch.minimum(a, b)
        return out
    if n.kind == "maxpool":
        return F.max_pool2d(x, p["kernel"], p["stride"], p["padding"])
    if n.kind == "add":
        return p["c"][0] * x + p["c"][1] * xs[1]
    if n.kind == "reshape":
        return x.reshape(x.shape[0], *n.shape)
    raise AssertionError(n.kind)
