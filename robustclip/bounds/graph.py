"""Sound Lipschitz upper bounds for models with their own ``forward``: BatchNorm, pooling, residual blocks.

The model is traced with ``torch.fx`` into a graph of operations. The traced graph must reproduce the model's
output on random inputs (so tracing did not specialise a branch, and no in-place trick changed what a later
operation sees), or no bound is given. Then, walking the graph in order, each node ``v`` gets ``L_v``, an upper
bound on the Lipschitz constant of the map from the model's input ``x`` (one sample, flattened) to ``v``:

* ``v = op(u)`` with ``op`` Lipschitz with constant ``c``: ``L_v = c·L_u``;
* ``v = u + w`` (a residual sum, ``out += identity`` included): ``L_v = L_u + L_w``, so a block
  ``x -> s(x) + f(x)`` gets ``L(s) + L(f)`` times the bound of its input;
* ``v = cat(u, w)``: ``√(L_u² + L_w²)`` (L2), ``max`` (L∞);
* anything computed from constants alone: 0.

Layer constants (L2; L∞ in brackets): Linear ``σ_max`` (largest absolute row sum); Conv1d/Conv2d the circular
(FFT) bound of :mod:`robustclip.bounds.conv_norms`, or the exact dense ``σ_max`` when the matrix is small, whichever is
smaller (largest absolute kernel sum); BatchNorm in eval mode folded into a conv or linear layer it directly
follows (its only user), elsewhere ``max_c |γ_c|/√(σ²_c+ε)``; max pooling ``√m`` (1); average and adaptive
pooling ``√(||A||_1||A||_∞)`` (``||A||_∞``); ReLU and tanh 1, sigmoid 1/4, LeakyReLU ``max(1, |a|)``; MinMax and
GroupSort (sorting, :mod:`robustclip.models.activations`) 1 (1); Dropout
(eval), Identity, Flatten, view/reshape keeping the batch dimension, slicing 1; mean over non-batch dimensions
``1/√n`` (1); multiplication by a constant ``max|c|``; :class:`robustclip.models.specs.Normalize` ``1/std``.

Anything else (LayerNorm, attention, a product of two input-dependent tensors, an unknown module or function,
forward hooks, a batch-mixing operation, training-mode BatchNorm) gets no bound, with the reason.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from ..core.devices import device_of
from ..core.modes import eval_mode
from ..models.activations import SORTING
from ..models.cifar import ChannelNormalize
from ..models.specs import Normalize
from . import conv_norms

SLACK = 1e-12
DENSE_MAX = 300_000
"""Dense conv matrices up to this many entries (an SVD of well under a second) are also bounded exactly, and the
smaller bound kept; beyond, the circular bound alone (a few percent looser at small sizes, measured)."""


@dataclass
class GraphBound:
    """Upper bounds on the Lipschitz constant of a traced model (L2 → L2 and L∞ → L∞, per sample, flattened)."""

    l2: float
    linf: float
    layers: list[tuple[str, float, float]] = field(default_factory=list)  # (node, L2 factor, L∞ factor)


class Unsupported(Exception):
    """A graph node the bounds do not understand; the message is the reason."""


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if type(m) in (Normalize, ChannelNormalize, *SORTING):
            return True
        return super().is_leaf_module(m, qualname)


_ACT_MODULES = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU)
_IDENTITY_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                     nn.FeatureAlphaDropout)
_MAXPOOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
_AVGPOOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_FUNC_ACTS: dict[Any, float] = {F.relu: 1.0, torch.relu: 1.0, torch.sigmoid: 0.25, F.sigmoid: 0.25,
                                torch.tanh: 1.0, F.tanh: 1.0}
_METHOD_ACTS = {"relu": 1.0, "relu_": 1.0, "sigmoid": 0.25, "sigmoid_": 0.25, "tanh": 1.0, "tanh_": 1.0}
_VIEWS = {"view", "reshape", "flatten", "contiguous", "clone", "detach", "float", "squeeze", "unsqueeze"}


def _act_factor(m: nn.Module) -> float:
    if isinstance(m, nn.Sigmoid):
        return 0.25
    if isinstance(m, nn.LeakyReLU):
        return max(1.0, abs(float(m.negative_slope)))
    return 1.0


def _spec(W: torch.Tensor) -> tuple[float, float]:
    """``(σ_max, largest absolute row sum)`` of a float64 matrix, with slack."""
    W = W.detach().double().cpu()
    if W.numel() == 0:
        return 0.0, 0.0
    return (float(torch.linalg.matrix_norm(W, ord=2)) * (1 + SLACK),
            float(W.abs().sum(dim=1).max()) * (1 + SLACK))


def _bn_scale(bn: nn.Module, name: str) -> torch.Tensor:
    """Per-channel ``γ/√(σ²+ε)`` of an eval-mode BatchNorm (float64)."""
    assert isinstance(bn, nn.modules.batchnorm._BatchNorm)
    if bn.training or bn.running_var is None:
        raise Unsupported(f"{name} is a BatchNorm without running statistics (it normalises by the batch)")
    scale = 1.0 / torch.sqrt(bn.running_var.detach().double().cpu() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.detach().double().cpu()
    return scale


def _layer_bounds(m: nn.Module, name: str, in_shape: tuple[int, ...], weight: torch.Tensor | None = None,
                  ) -> tuple[float, float]:
    """``(L2, L∞)`` of a Linear or Conv layer on per-sample input ``in_shape``, with ``weight`` in place of its own."""
    if isinstance(m, nn.Linear):
        return _spec(m.weight if weight is None else weight)
    assert isinstance(m, (nn.Conv1d, nn.Conv2d))
    got = conv_norms.conv_module_bounds(m, in_shape, weight)
    if got is None:
        raise Unsupported(f"{name} pads with {m.padding_mode!r}; only zero padding is understood")
    l2, linf = got
    if isinstance(m, nn.Conv2d) and len(in_shape) == 3:
        dense = conv_norms.dense_conv_l2(m, (in_shape[0], in_shape[1], in_shape[2]), weight, max_entries=DENSE_MAX)
        if dense is not None:
            l2 = min(l2, dense)
    return l2, linf


def trace(model: nn.Module) -> fx.GraphModule:
    """The model as a ``torch.fx`` graph (robustclip's Normalize layers kept whole); raises :class:`Unsupported`."""
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # any tracing failure means: not understood
        msg = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ""
        raise Unsupported(f"its forward cannot be traced with torch.fx ({type(exc).__name__}: {msg})") from None
    return fx.GraphModule(model, graph)


class _Recorder(fx.Interpreter):
    """Runs the graph once, keeping each node's output shape (tensors) or value (non-tensors, constants)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n] = out.detach().clone() if isinstance(out, torch.Tensor) else out
        return out


def graph_upper_bound(model: nn.Module, in_shape: tuple[int, ...]) -> GraphBound:
    """Upper bounds (L2 and L∞) on the Lipschitz constant of ``model`` on per-sample inputs ``in_shape``.

    ``model`` maps ``(N, *in_shape)`` to ``(N, ...)``; it is evaluated in eval mode (restored after). Raises
    :class:`Unsupported` with the reason for a model that is not fully understood.
    """
    for name, m in model.named_modules():
        if m._forward_hooks or m._forward_pre_hooks:
            raise Unsupported(f"{name or 'the model'} ({type(m).__name__}) has forward hooks, which may change its "
                              "output")
    for name, p in model.named_parameters():
        if not bool(torch.isfinite(p).all()):
            raise Unsupported(f"{name} has non-finite weights")
    with eval_mode(model), torch.no_grad():
        return _bound(model, tuple(in_shape))


def _bound(model: nn.Module, in_shape: tuple[int, ...]) -> GraphBound:
    gm = trace(model)
    dev = device_of(model)
    g = torch.Generator().manual_seed(0)
    B = 2
    xs = [torch.rand((B, *in_shape), generator=g).to(dev) for _ in range(2)]
    rec = _Recorder(gm)
    try:
        for i, x in enumerate(xs):
            want = model(x.clone())
            got = rec.run(x.clone()) if i == 0 else gm(x.clone())
            if not (isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor)):
                raise Unsupported("its output is not one tensor")
            tol = 1e-5 * (1.0 + float(want.detach().abs().max())) if want.numel() else 0.0
            if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-4, atol=tol):
                raise Unsupported("the graph torch.fx traced does not reproduce its output (a branch on the data "
                                  "or an in-place trick?)")
    except Unsupported:
        raise
    except Exception as exc:
        raise Unsupported(f"its traced graph fails to run ({type(exc).__name__}: {str(exc)[:120]})") from None
    try:
        return _walk(gm, rec.values, B)
    except Unsupported:
        raise
    except Exception as exc:  # a structure the rules did not foresee: no bound rather than a crash
        raise Unsupported(f"its graph could not be bounded ({type(exc).__name__}: {str(exc)[:120]})") from None


def _shape(values: dict[fx.Node, Any], n: fx.Node) -> tuple[int, ...]:
    v = values[n]
    return tuple(v.shape) if isinstance(v, torch.Tensor) else ()


def _walk(gm: fx.GraphModule, values: dict[fx.Node, Any], B: int) -> GraphBound:
    """Walk the traced graph ``gm`` in order (``values``: each node's value on a batch of ``B`` inputs)."""
    return _Walk(gm, values, B).run()


class _Walk:
    """One pass over a traced graph: ``L2[v]`` and ``LI[v]`` (the L2 and L∞ bounds of the map from the input to
    ``v``) for every node that depends on the input, the factor of each node kept in ``layers`` for the report."""

    def __init__(self, gm: fx.GraphModule, values: dict[fx.Node, Any], B: int) -> None:
        self.nodes = list(gm.graph.nodes)
        self.order = {n: i for i, n in enumerate(self.nodes)}
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise Unsupported(f"its forward takes {len(placeholders)} inputs; one is understood")
        self.values, self.B = values, B
        self.mods = dict(gm.named_modules())
        self.L2: dict[fx.Node, float] = {}
        self.LI: dict[fx.Node, float] = {}
        self.dep: set[fx.Node] = set()  # nodes whose value depends on the input
        self.alias: dict[fx.Node, fx.Node] = {}  # node -> a node whose storage it may share
        self.layers: list[tuple[str, float, float]] = []
        self.folded = self._foldable()

    def run(self) -> GraphBound:
        """The bounds at the graph's output; raises :class:`Unsupported` for anything not understood."""
        for n in self.nodes:
            if n.op == "placeholder":
                self.dep.add(n)
                self.L2[n], self.LI[n] = 1.0, 1.0
                continue
            if n.op == "output":
                out = n.args[0]
                if not isinstance(out, fx.Node) or not isinstance(self.values.get(out), torch.Tensor):
                    raise Unsupported("its output is not one tensor")
                if out not in self.dep:
                    return GraphBound(0.0, 0.0, self.layers)
                self.keeps_batch(out)
                return GraphBound(self.L2[out], self.LI[out], self.layers)
            ins = self.tensor_args(n)
            value = self.values.get(n)
            if n.op == "get_attr" or not ins or not isinstance(value, torch.Tensor):
                if ins and isinstance(value, (list, tuple)) and not isinstance(value, torch.Size):
                    raise Unsupported(f"{n.name} ({n.target}) returns several tensors")
                continue  # a constant (or shape information): Lipschitz constant 0
            self.dep.add(n)
            c2, ci = self.factor(n, ins)
            self.layers.append((n.name, c2, ci))
        raise Unsupported("the graph has no output")  # pragma: no cover

    # ----------------------------------------------------------------------- helpers

    def _foldable(self) -> dict[fx.Node, fx.Node]:
        """BatchNorm folded into the conv/linear layer it directly follows (the layer's only user): layer -> BN."""
        folded: dict[fx.Node, fx.Node] = {}
        for n in self.nodes:
            if (n.op == "call_module" and type(self.mods[str(n.target)]) in _BATCHNORMS
                    and isinstance(n.args[0], fx.Node)):
                u = n.args[0]
                kind = type(self.mods[str(u.target)]) if u.op == "call_module" else None
                out_dims = len(self.shape(u))
                channels_first = kind in (nn.Conv1d, nn.Conv2d) or (kind is nn.Linear and out_dims == 2)
                if channels_first and len(u.users) == 1 and len(n.args) == 1 and not n.kwargs:
                    folded[u] = n
        return folded

    def shape(self, n: fx.Node) -> tuple[int, ...]:
        return _shape(self.values, n)

    def root(self, n: fx.Node) -> fx.Node:
        while n in self.alias:
            n = self.alias[n]
        return n

    def tensor_args(self, n: fx.Node) -> list[fx.Node]:
        """The arguments of ``n`` that depend on the input, in order."""
        out: list[fx.Node] = []
        for a in (*n.args, *n.kwargs.values()):
            for b in (a if isinstance(a, (list, tuple)) else (a,)):
                if isinstance(b, fx.Node) and b in self.dep:
                    out.append(b)
        return out

    def same_shape(self, n: fx.Node, *us: fx.Node) -> None:
        for u in us:
            if self.shape(u) != self.shape(n):
                raise Unsupported(f"{n.name} broadcasts an input-dependent tensor of shape {self.shape(u)[1:]} "
                                  f"to {self.shape(n)[1:]}")

    def keeps_batch(self, n: fx.Node) -> None:
        s = self.shape(n)
        if not s or s[0] != self.B:
            raise Unsupported(f"{n.name} ({n.target}) mixes or drops the batch dimension")

    def const_value(self, a: Any) -> Any:
        return self.values[a] if isinstance(a, fx.Node) else a

    @staticmethod
    def scale_of(c: Any, n: fx.Node) -> float:
        if isinstance(c, torch.Tensor):
            return float(c.detach().abs().max()) if c.numel() else 0.0
        if isinstance(c, (int, float)) and not isinstance(c, bool):
            return abs(float(c))
        raise Unsupported(f"{n.name} multiplies by {type(c).__name__}")

    def inplace_ok(self, n: fx.Node, u: fx.Node, factor: float) -> None:
        """An in-place op with factor > 1 must not change a tensor that a later node reads."""
        self.alias[n] = u
        if factor <= 1.0:
            return  # the mutated tensor's bound still holds
        r = self.root(u)
        group = [m for m in self.nodes if m in self.dep and self.root(m) is r]
        for m in group:
            for w in m.users:
                if w is not n and self.order[w] > self.order[n]:
                    raise Unsupported(f"{n.name} changes a tensor in place that {w.name} reads later")

    def single(self, n: fx.Node, ins: list[fx.Node], c2: float, ci: float) -> tuple[float, float]:
        """``n`` is ``op(u)`` of its one input-dependent argument ``u`` with constants ``(c2, ci)``."""
        if len(ins) != 1:
            raise Unsupported(f"{n.name} ({n.target}) combines {len(ins)} input-dependent tensors")
        u = ins[0]
        self.L2[n], self.LI[n] = c2 * self.L2[u], ci * self.LI[u]
        return c2, ci

    def view_of(self, n: fx.Node, ins: list[fx.Node]) -> tuple[float, float]:
        """``n`` shares (a view of) its input's storage and values: factor 1."""
        self.alias[n] = ins[0]
        return self.single(n, ins, 1.0, 1.0)

    # ----------------------------------------------------------------------- the rules, one kind of node each

    def factor(self, n: fx.Node, ins: list[fx.Node]) -> tuple[float, float]:
        """Set ``L2[n]``, ``LI[n]`` from its inputs; returns the factors ``(L2, L∞)`` applied (for the report)."""
        if n.op == "call_module":
            return self._module(n, ins)
        target = n.target
        if n.op == "call_method" and target in ("add_", "sub_", "mul_", "div_"):
            # in place: bound as the plain operation, then make sure no later node reads the changed tensor
            target = str(target)[:-1]
            self.inplace_ok(n, ins[0], math.inf)
        for rule in (self._activation, self._reshape, self._reduction, self._arithmetic, self._function_layer):
            got = rule(n, ins, target)
            if got is not None:
                return got
        name = getattr(n.target, "__name__", str(n.target))
        raise Unsupported(f"{n.name} ({name}) is an operation the bounds do not understand")

    def _module(self, n: fx.Node, ins: list[fx.Node]) -> tuple[float, float]:
        """A call of a submodule: layers, BatchNorm (folded or alone), pooling, activations, views, Normalize."""
        u = ins[0]
        m = self.mods[str(n.target)]
        t = type(m)
        label = f"{n.target} ({t.__name__})"
        if n in self.folded:  # its BatchNorm bounds both
            if len(ins) != 1:
                raise Unsupported(f"{label} combines several inputs")
            self.L2[n], self.LI[n] = math.inf, math.inf
            return math.nan, math.nan
        if t in (nn.Linear, nn.Conv1d, nn.Conv2d):
            c2, ci = _layer_bounds(m, label, self.shape(u)[1:])
            return self.single(n, ins, c2, ci)
        if t in _BATCHNORMS:
            return self._batchnorm(n, ins, m, label)
        if t in _MAXPOOLS or t in _AVGPOOLS:
            if getattr(m, "return_indices", False):
                raise Unsupported(f"{label} returns indices")
            si = self.shape(u)
            dims = 2 if "2d" in t.__name__ else 1
            if len(si) != dims + 2:
                raise Unsupported(f"{label} on input of shape {si[1:]}")
            return self.single(n, ins, *self._pool(m, si, self.shape(n)))
        if t in SORTING:  # a permutation on every linear piece: 1 in L2; sorting is non-expansive in L∞ too
            return self.single(n, ins, 1.0, 1.0)
        if t in _ACT_MODULES:
            c = _act_factor(m)
            if getattr(m, "inplace", False):
                self.inplace_ok(n, u, c)
            return self.single(n, ins, c, c)
        if t in _IDENTITY_MODULES:
            return self.view_of(n, ins)
        if t is nn.Flatten or t is nn.Unflatten:
            self.keeps_batch(n)
            return self.view_of(n, ins)
        if t is Normalize:
            assert isinstance(m, Normalize)
            return self.single(n, ins, 1.0 / m.std, 1.0 / m.std)
        if t is ChannelNormalize:
            assert isinstance(m, ChannelNormalize)
            self.same_shape(n, u)  # no broadcasting of one channel to several
            c = 1.0 / min(m.std_values)
            return self.single(n, ins, c, c)
        raise Unsupported(f"{label} is a layer the bounds do not understand")

    def _batchnorm(self, n: fx.Node, ins: list[fx.Node], m: nn.Module, label: str) -> tuple[float, float]:
        """An eval-mode BatchNorm: folded into the layer before it (one bound for both), else ``max |scale|``."""
        u = ins[0]
        scale = _bn_scale(m, label)
        if u in self.folded and self.folded[u] is n:
            layer = self.mods[str(u.target)]
            v = u.args[0]
            assert isinstance(v, fx.Node)
            weight = layer.weight
            assert isinstance(weight, torch.Tensor)
            w = weight.detach().double().cpu()
            w = w * scale.view(-1, *([1] * (w.dim() - 1)))
            c2, ci = _layer_bounds(layer, f"{u.target} with {n.target} folded in", self.shape(v)[1:], w)
            if v not in self.L2:  # the layer read a constant: the block is constant
                self.L2[n], self.LI[n] = 0.0, 0.0
            else:
                self.L2[n], self.LI[n] = c2 * self.L2[v], ci * self.LI[v]
            return c2, ci
        s = float(scale.abs().max()) * (1 + SLACK) if scale.numel() else 0.0
        return self.single(n, ins, s, s)

    @staticmethod
    def _pool(pool: nn.Module, si: tuple[int, ...], so: tuple[int, ...]) -> tuple[float, float]:
        """``(L2, L∞)`` of a pooling module on input shape ``si`` (output ``so``), batch and channels first."""
        if isinstance(pool, _MAXPOOLS):
            return math.sqrt(conv_norms.maxpool_multiplicity(pool, si[2:], so[2:])) * (1 + SLACK), 1.0
        return conv_norms.avgpool_norms(pool, si[2:])

    def _activation(self, n: fx.Node, ins: list[fx.Node], target: Any) -> tuple[float, float] | None:
        """Elementwise activations (functions and methods, in place or not) and dropout in eval mode."""
        args, kw = _arguments(n)
        u = ins[0]
        if n.op == "call_function" and target in _FUNC_ACTS:
            if kw.get("inplace") or (len(args) > 1 and args[1] is True):
                self.inplace_ok(n, u, _FUNC_ACTS[target])
            return self.single(n, ins, _FUNC_ACTS[target], _FUNC_ACTS[target])
        if n.op == "call_function" and target is F.leaky_relu:
            a = args[1] if len(args) > 1 else kw.get("negative_slope", 0.01)
            c = max(1.0, abs(float(a)))
            if kw.get("inplace") or (len(args) > 2 and args[2] is True):
                self.inplace_ok(n, u, c)
            return self.single(n, ins, c, c)
        if n.op == "call_method" and target in _METHOD_ACTS:
            if str(target).endswith("_"):
                self.inplace_ok(n, u, _METHOD_ACTS[str(target)])
            return self.single(n, ins, _METHOD_ACTS[str(target)], _METHOD_ACTS[str(target)])
        if n.op == "call_function" and target in (F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout):
            if kw.get("training", args[2] if len(args) > 2 else True):
                raise Unsupported(f"{n.name} applies dropout while training")
            return self.view_of(n, ins)
        return None

    def _reshape(self, n: fx.Node, ins: list[fx.Node], target: Any) -> tuple[float, float] | None:
        """Views, reshapes, permutations and slices that keep the batch dimension first and in place: factor 1."""
        args, _ = _arguments(n)
        u = ins[0]
        if (n.op == "call_function" and target is torch.flatten) or (n.op == "call_method" and target in _VIEWS):
            self.keeps_batch(n)
            if self.shape(n)[0] != self.shape(u)[0]:
                raise Unsupported(f"{n.name} moves the batch dimension")
            return self.view_of(n, ins)
        if n.op == "call_method" and target in ("permute", "transpose"):
            perm = list(args[1:])
            flat = perm[0] if len(perm) == 1 and isinstance(perm[0], (list, tuple)) else perm
            nd = len(self.shape(u))
            norm = [int(d) % nd for d in flat]
            if (target == "permute" and norm[0] != 0) or (target == "transpose" and 0 in norm):
                raise Unsupported(f"{n.name} moves the batch dimension")
            return self.view_of(n, ins)
        if n.op == "call_function" and target is operator.getitem:
            idx = args[1]
            items = idx if isinstance(idx, tuple) else (idx,)
            if not all(isinstance(i, (slice, int)) or i is None or i is Ellipsis for i in items):
                raise Unsupported(f"{n.name} indexes with tensors or lists (it may repeat elements)")
            first = items[0] if items else slice(None)
            if not (first == slice(None) or first is Ellipsis):
                raise Unsupported(f"{n.name} indexes the batch dimension")
            self.keeps_batch(n)
            return self.view_of(n, ins)
        return None

    def _reduction(self, n: fx.Node, ins: list[fx.Node], target: Any) -> tuple[float, float] | None:
        """A mean or sum over non-batch dimensions: ``1/√k`` (mean) or ``√k`` (sum) in L2 over k elements."""
        args, kw = _arguments(n)
        name = getattr(n.target, "__name__", str(n.target))
        if not (name in ("mean", "sum") and (n.op == "call_method" or target in (torch.mean, torch.sum))):
            return None
        dim = args[1] if len(args) > 1 else kw.get("dim")
        if dim is None:
            raise Unsupported(f"{n.name} reduces over the batch dimension")
        su = self.shape(ins[0])
        red = [int(d) % len(su) for d in (dim if isinstance(dim, (list, tuple)) else (dim,))]
        if 0 in red:
            raise Unsupported(f"{n.name} reduces over the batch dimension")
        k = math.prod(su[d] for d in set(red))
        if name == "mean":
            return self.single(n, ins, 1.0 / math.sqrt(k) * (1 + SLACK), 1.0)
        return self.single(n, ins, math.sqrt(k) * (1 + SLACK), float(k))

    def _arithmetic(self, n: fx.Node, ins: list[fx.Node], target: Any) -> tuple[float, float] | None:
        """Sums and differences (residual connections), products with and quotients by constants, negation."""
        args, kw = _arguments(n)
        u = ins[0]
        L2, LI = self.L2, self.LI
        if target in (operator.add, operator.sub, torch.add, torch.sub, "add", "sub", operator.iadd, operator.isub):
            alpha = abs(float(kw.get("alpha", 1.0)))
            self.same_shape(n, *ins)
            if len(ins) == 1:
                L2[n], LI[n] = L2[u], LI[u]
                return 1.0, 1.0
            if len(ins) != 2:
                raise Unsupported(f"{n.name} adds {len(ins)} tensors")
            a, b = args[0], args[1]
            wa, wb = (1.0, alpha) if (a is ins[0] and b is ins[1]) else (1.0, 1.0)
            if a is b:  # x + x
                L2[n], LI[n] = (1 + alpha) * L2[u], (1 + alpha) * LI[u]
            else:
                L2[n], LI[n] = wa * L2[ins[0]] + wb * L2[ins[1]], wa * LI[ins[0]] + wb * LI[ins[1]]
            return 1.0, 1.0
        if target in (operator.mul, torch.mul, "mul", operator.truediv, torch.div, "div"):
            if len(ins) != 1:
                raise Unsupported(f"{n.name} multiplies two input-dependent tensors")
            self.same_shape(n, u)
            a, b = args[0], args[1] if len(args) > 1 else kw.get("other")
            other = b if a is u else a
            c = self.const_value(other)
            if target in (operator.truediv, torch.div, "div"):
                if a is not u or kw.get("rounding_mode") is not None:
                    raise Unsupported(f"{n.name} divides by an input-dependent tensor or rounds")
                cmin = float(c.abs().min()) if isinstance(c, torch.Tensor) else abs(float(c))
                if not cmin > 0:
                    raise Unsupported(f"{n.name} divides by zero")
                f = 1.0 / cmin * (1 + SLACK)
            else:
                f = self.scale_of(c, n) * (1 + SLACK)
            return self.single(n, ins, f, f)
        if target in (operator.neg, torch.neg, "neg"):
            return self.single(n, ins, 1.0, 1.0)
        return None

    def _function_layer(self, n: fx.Node, ins: list[fx.Node], target: Any) -> tuple[float, float] | None:
        """Layers written as functions: concatenation (not along the batch), ``F.linear`` with a constant weight,
        and the pooling functions."""
        if n.op != "call_function":
            return None
        args, kw = _arguments(n)
        u = ins[0]
        if target in (torch.cat, torch.concat):
            dim = args[1] if len(args) > 1 else kw.get("dim", 0)
            if int(dim) % len(self.shape(n)) == 0:
                raise Unsupported(f"{n.name} concatenates along the batch dimension")
            parts = args[0]
            assert isinstance(parts, (list, tuple))
            dep_parts = [p for p in parts if isinstance(p, fx.Node) and p in self.L2]
            self.L2[n] = math.sqrt(sum(self.L2[p] ** 2 for p in dep_parts)) * (1 + SLACK)
            self.LI[n] = max(self.LI[p] for p in dep_parts)
            return 1.0, 1.0
        if target is F.linear:
            if len(ins) != 1 or args[0] is not u:
                raise Unsupported(f"{n.name} is a linear map with input-dependent weights")
            wt = args[1] if len(args) > 1 else kw.get("weight")
            c2, ci = _spec(self.const_value(wt))
            return self.single(n, ins, c2, ci)
        if target in _POOL_FUNCTIONS:
            try:
                pool = _POOL_FUNCTIONS[target](*args[1:], **kw)
            except TypeError as exc:
                raise Unsupported(f"{n.name}: {exc}") from None
            if getattr(pool, "return_indices", False):
                raise Unsupported(f"{n.name} returns indices")
            return self.single(n, ins, *self._pool(pool, self.shape(u), self.shape(n)))
        return None


def _arguments(n: fx.Node) -> tuple[list[Any], dict[str, Any]]:
    """A node's positional and keyword arguments, as plain containers."""
    return list(n.args), dict(n.kwargs)


_POOL_FUNCTIONS: dict[Any, type[nn.Module]] = {
    F.adaptive_avg_pool2d: nn.AdaptiveAvgPool2d, F.adaptive_avg_pool1d: nn.AdaptiveAvgPool1d,
    F.avg_pool2d: nn.AvgPool2d, F.avg_pool1d: nn.AvgPool1d, F.max_pool2d: nn.MaxPool2d, F.max_pool1d: nn.MaxPool1d,
    F.adaptive_max_pool2d: nn.AdaptiveMaxPool2d}
"""Pooling functions, bounded as the module of the same settings."""
