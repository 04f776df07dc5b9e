"""Read a model into a :class:`~robustclip.bounds.crown.ir.Plan` with ``torch.fx``: which layers map to which node.

Node kinds (per-sample shapes: images ``(C, H, W)``, vectors ``(F,)``):

``input``     the model's input;
``conv``      Conv2d (numeric zero padding) with any eval-mode BatchNorm that is its only user folded in; also
              AvgPool2d / AdaptiveAvgPool2d (when the sizes divide) as a depthwise convolution;
``linear``    Linear on vectors, with a following BatchNorm1d folded in the same way;
``scale``     ``x * s + t`` elementwise with constant maps (Normalize, ChannelNormalize, a BatchNorm with no affine
              layer of its own before it, scalar multiplication or division, adding a constant, negation);
``act``       ReLU, LeakyReLU, Sigmoid, Tanh;
``pairsort``  MinMax and GroupSort of pairs: ``out[a] = max(x[a], x[b])``, ``out[b] = min(x[a], x[b])`` over
              channel pairs ``(a, b)``;
``maxpool``   MaxPool2d (``-inf`` padding, overlapping windows allowed; no ceil mode, dilation 1);
``add``       the sum ``c_1 x_1 + c_2 x_2`` of two tensors of the same shape (residual connections);
``reshape``   flatten / view keeping the batch dimension.

BatchNorm is folded only into the conv or linear layer *before* it (when the BatchNorm is that layer's only user),
never into a later layer. The graph is checked against the model on random inputs in [0,1]; a model with anything
else (or whose trace does not reproduce its output) gets ``None`` and a one-line reason.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx, nn
from torch.nn import functional as F

from ...core.devices import device_of
from ...core.modes import eval_mode
from ...models.activations import GroupSort, MinMax
from ...models.cifar import ChannelNormalize
from ...models.specs import Normalize
from ..graph import Unsupported, _Recorder, trace
from .ir import Node, Plan

ACTS = (nn.ReLU, nn.LeakyReLU, nn.Sigmoid, nn.Tanh)
_IDENTITY = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_FUNC_ACTS: dict[Any, type[nn.Module]] = {F.relu: nn.ReLU, torch.relu: nn.ReLU, torch.sigmoid: nn.Sigmoid,
                                          F.sigmoid: nn.Sigmoid, torch.tanh: nn.Tanh, F.tanh: nn.Tanh}
_METHOD_ACTS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu_": nn.ReLU, "sigmoid": nn.Sigmoid,
                                            "sigmoid_": nn.Sigmoid, "tanh": nn.Tanh, "tanh_": nn.Tanh}
_VIEWS = {"view", "reshape", "flatten", "contiguous", "clone", "detach"}
_ADD = (operator.add, operator.iadd, torch.add, "add", "add_")
_SUB = (operator.sub, operator.isub, torch.sub, "sub", "sub_")
_MUL = (operator.mul, operator.imul, torch.mul, "mul", "mul_")
_DIV = (operator.truediv, operator.itruediv, torch.div, "div", "div_")



def _number(v: Any, n: fx.Node) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Unsupported(f"{n.name} takes {type(v).__name__} where a number was expected")
    return float(v)


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _f64(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().double().cpu()


def build_plan(model: nn.Module, in_shape: tuple[int, ...]) -> tuple[Plan | None, str | None]:
    """The model as a :class:`Plan`, or ``(None, reason)``. Runs the model in eval mode on two random inputs."""
    for name, prm in model.named_parameters():
        if not bool(torch.isfinite(prm).all()):
            return None, f"{name} has non-finite weights"
    try:
        with eval_mode(model), torch.no_grad():
            gm = trace(model)
            dev = device_of(model)
            x = torch.rand((2, *in_shape), generator=torch.Generator().manual_seed(0)).to(dev)
            rec = _Recorder(gm)
            want = model(x.clone())
            rec.run(x.clone())
            plan = _Builder(gm, rec.values).run()
            got = plan.forward(x.cpu().double())
            if not isinstance(want, torch.Tensor) or want.shape != got.shape:
                raise Unsupported("its traced graph does not give the model's output shape")
            want64 = want.detach().double().cpu()
            tol = 1e-4 * (1.0 + float(want64.abs().max()))
            if not torch.allclose(want64, got, rtol=1e-3, atol=tol):
                raise Unsupported("the traced graph does not reproduce its output (a branch on the data or an "
                                  "in-place trick?)")
    except Unsupported as exc:
        return None, str(exc)
    except Exception as exc:  # a structure the rules did not foresee: no certificate rather than a crash
        return None, f"its graph could not be read ({type(exc).__name__}: {str(exc)[:120]})"
    return plan, None


class _Builder:
    """fx graph → :class:`Plan`."""

    def __init__(self, gm: fx.GraphModule, values: dict[fx.Node, Any]) -> None:
        self.gm, self.values = gm, values
        self.mods = dict(gm.named_modules())
        self.nodes: list[Node] = []
        self.ir: dict[fx.Node, int] = {}  # fx node -> IR node id
        self.view_of: dict[fx.Node, fx.Node] = {}  # fx node -> the fx node whose storage it shares

    def shape(self, n: fx.Node) -> tuple[int, ...]:
        v = self.values[n]
        if not isinstance(v, torch.Tensor) or v.dim() < 2 or v.shape[0] != 2:
            raise Unsupported(f"{n.name} does not keep the batch dimension")
        return tuple(v.shape[1:])

    def add(self, n: fx.Node, kind: str, inputs: tuple[int, ...], **p: Any) -> None:
        self.nodes.append(Node(kind, inputs, self.shape(n), p))
        self.ir[n] = len(self.nodes) - 1

    def dep_args(self, n: fx.Node) -> list[fx.Node]:
        out: list[fx.Node] = []
        for a in (*n.args, *n.kwargs.values()):
            for b in (a if isinstance(a, (list, tuple)) else (a,)):
                if isinstance(b, fx.Node) and b in self.ir:
                    out.append(b)
        return out

    def sole_user(self, u: fx.Node, n: fx.Node) -> None:
        """An in-place op ``n`` on ``u``: nothing else may read ``u`` (or what it is a view of)."""
        while True:
            if len(u.users) != 1:
                raise Unsupported(f"{n.name} changes {u.name} in place while other operations read it")
            if u not in self.view_of:
                return
            u = self.view_of[u]

    def run(self) -> Plan:
        out: int | None = None
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                if self.nodes:
                    raise Unsupported("its forward takes several inputs; one is understood")
                self.add(n, "input", ())
            elif n.op == "output":
                o = n.args[0]
                if not isinstance(o, fx.Node) or o not in self.ir:
                    raise Unsupported("its output is not one tensor computed from the input")
                out = self.ir[o]
            elif n.op != "get_attr" and self.dep_args(n) and isinstance(self.values.get(n), torch.Tensor):
                self.node(n)
            elif self.dep_args(n) and isinstance(self.values.get(n), (list, tuple)) \
                    and not isinstance(self.values.get(n), torch.Size):
                raise Unsupported(f"{n.name} returns several tensors")
        if out is None:
            raise Unsupported("the graph has no output")
        if len(self.nodes[out].shape) != 1:
            raise Unsupported(f"its output has per-sample shape {self.nodes[out].shape}, not (classes,)")
        plan = Plan(self.nodes, out)
        plan.finish()
        return plan

    def const(self, a: Any, shape: tuple[int, ...], n: fx.Node) -> torch.Tensor:
        """A constant (number or tensor) broadcast to the per-sample ``shape``, float64."""
        v = self.values[a] if isinstance(a, fx.Node) else a
        if isinstance(v, bool) or not isinstance(v, (int, float, torch.Tensor)):
            raise Unsupported(f"{n.name} combines the input with {type(v).__name__}")
        t = torch.as_tensor(v).detach().double().cpu()
        if t.dim() > len(shape) + 1 or (t.dim() == len(shape) + 1 and t.shape[0] != 1):
            raise Unsupported(f"{n.name} combines the input with a tensor of shape {tuple(t.shape)}")
        try:
            return torch.broadcast_to(t, (1, *shape))[0].clone()
        except RuntimeError:
            raise Unsupported(f"{n.name} broadcasts a constant of shape {tuple(t.shape)} to {shape}") from None

    def node(self, n: fx.Node) -> None:
        ins = self.dep_args(n)
        u = ins[0]
        if n.op == "call_module":
            self.module(n, ins, self.mods[str(n.target)])
            return
        t = n.target
        name = getattr(t, "__name__", str(t))
        args, kw = list(n.args), dict(n.kwargs)
        if len(ins) != 1 and not (t in _ADD or t in _SUB):
            raise Unsupported(f"{n.name} ({name}) combines {len(ins)} input-dependent tensors")
        if n.op == "call_function" and t in _FUNC_ACTS:
            if kw.get("inplace") or (len(args) > 1 and args[1] is True):
                self.sole_user(u, n)
            self.add(n, "act", (self.ir[u],), module=_FUNC_ACTS[t]())
        elif n.op == "call_function" and t is F.leaky_relu:
            a = args[1] if len(args) > 1 else kw.get("negative_slope", 0.01)
            if kw.get("inplace") or (len(args) > 2 and args[2] is True):
                self.sole_user(u, n)
            self.add(n, "act", (self.ir[u],), module=nn.LeakyReLU(_number(a, n)))
        elif n.op == "call_method" and t in _METHOD_ACTS:
            if str(t).endswith("_"):
                self.sole_user(u, n)
            self.add(n, "act", (self.ir[u],), module=_METHOD_ACTS[str(t)]())
        elif (n.op == "call_function" and t is torch.flatten) or (n.op == "call_method" and t in _VIEWS):
            self.view(n, u)
        elif t in _ADD or t in _SUB:
            self.add_sub(n, ins, t in _SUB)
        elif t in _MUL or t in _DIV or t in (operator.neg, torch.neg, "neg"):
            self.mul(n, u, t)
        elif n.op == "call_function" and t in (F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d):
            cls = {F.max_pool2d: nn.MaxPool2d, F.avg_pool2d: nn.AvgPool2d,
                   F.adaptive_avg_pool2d: nn.AdaptiveAvgPool2d}[t]
            try:
                pool = cls(*args[1:], **kw)
            except TypeError as exc:
                raise Unsupported(f"{n.name}: {exc}") from None
            self.module(n, ins, pool)
        elif n.op == "call_function" and t in (F.dropout, F.dropout2d):
            if kw.get("training", args[2] if len(args) > 2 else True):
                raise Unsupported(f"{n.name} applies dropout while training")
            self.alias(n, u, view=True)
        else:
            raise Unsupported(f"{n.name} ({name}) is an operation CROWN here does not understand")

    def alias(self, n: fx.Node, u: fx.Node, *, view: bool) -> None:
        self.ir[n] = self.ir[u]
        if view:
            self.view_of[n] = u

    def view(self, n: fx.Node, u: fx.Node) -> None:
        shape = self.shape(n)
        if shape == self.nodes[self.ir[u]].shape:
            self.alias(n, u, view=True)
        else:
            self.add(n, "reshape", (self.ir[u],))
            self.view_of[n] = u

    def add_sub(self, n: fx.Node, ins: list[fx.Node], sub: bool) -> None:
        t = n.target
        if t in (operator.iadd, operator.isub, "add_", "sub_"):
            a0 = n.args[0]
            if isinstance(a0, fx.Node) and a0 in self.ir:
                self.sole_user(a0, n)
        alpha = _number(n.kwargs.get("alpha", 1.0), n)
        a, b = n.args[0], n.args[1] if len(n.args) > 1 else n.kwargs.get("other")
        sb = -alpha if sub else alpha
        shape = self.shape(n)
        if len(ins) == 2:
            for v in ins:
                if self.nodes[self.ir[v]].shape != shape:
                    raise Unsupported(f"{n.name} broadcasts an input-dependent tensor to {shape}")
            self.add(n, "add", (self.ir[ins[0]], self.ir[ins[1]]), c=(1.0, sb))
            return
        if len(ins) != 1 or self.nodes[self.ir[ins[0]]].shape != shape:
            raise Unsupported(f"{n.name} broadcasts an input-dependent tensor to {shape}")
        u = ins[0]
        if a is u:
            self.add(n, "scale", (self.ir[u],), s=torch.ones(shape, dtype=torch.float64),
                     t=sb * self.const(b, shape, n))
        else:
            self.add(n, "scale", (self.ir[u],), s=torch.full(shape, sb, dtype=torch.float64),
                     t=self.const(a, shape, n))

    def mul(self, n: fx.Node, u: fx.Node, t: Any) -> None:
        shape = self.shape(n)
        if self.nodes[self.ir[u]].shape != shape:
            raise Unsupported(f"{n.name} broadcasts an input-dependent tensor to {shape}")
        if t in (operator.neg, torch.neg, "neg"):
            s = torch.full(shape, -1.0, dtype=torch.float64)
        else:
            a, b = n.args[0], n.args[1] if len(n.args) > 1 else n.kwargs.get("other")
            if t in _DIV:
                if a is not u or n.kwargs.get("rounding_mode") is not None:
                    raise Unsupported(f"{n.name} divides by an input-dependent tensor or rounds")
                c = self.const(b, shape, n)
                if not bool((c != 0).all()):
                    raise Unsupported(f"{n.name} divides by zero")
                s = 1.0 / c
            else:
                s = self.const(b if a is u else a, shape, n)
            if str(t).endswith("_") or t in (operator.imul, operator.itruediv):
                self.sole_user(u, n)
        self.add(n, "scale", (self.ir[u],), s=s, t=torch.zeros(shape, dtype=torch.float64))

    def module(self, n: fx.Node, ins: list[fx.Node], m: nn.Module) -> None:
        label = f"{n.target} ({type(m).__name__})" if n.op == "call_module" else n.name
        if m._forward_hooks or m._forward_pre_hooks:
            raise Unsupported(f"{label} has forward hooks, which may change its output")
        if len(ins) != 1:
            raise Unsupported(f"{label} combines several inputs")
        u = ins[0]
        iu = self.ir[u]
        shape_in = self.nodes[iu].shape
        t = type(m)
        if t is nn.Conv2d:
            assert isinstance(m, nn.Conv2d)
            if m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise Unsupported(f"{label} uses padding {m.padding!r} ({m.padding_mode}); only numeric zero "
                                  "padding is understood")
            self.add(n, "conv", (iu,), weight=_f64(m.weight), bias=_f64(m.bias), stride=_pair(m.stride),
                     padding=_pair(m.padding), dilation=_pair(m.dilation), groups=int(m.groups))
        elif t is nn.Linear:
            assert isinstance(m, nn.Linear)
            if len(shape_in) != 1:
                raise Unsupported(f"{label} acts on per-sample shape {shape_in}; only vectors are understood")
            b = _f64(m.bias)
            self.add(n, "linear", (iu,), weight=_f64(m.weight),
                     bias=b if b is not None else torch.zeros(m.out_features, dtype=torch.float64))
        elif t in (nn.BatchNorm1d, nn.BatchNorm2d):
            self.batchnorm(n, u, m, label)
        elif t in ACTS:
            if getattr(m, "inplace", False):
                self.sole_user(u, n)
            self.add(n, "act", (iu,), module=m)
        elif t is MinMax or (t is GroupSort and getattr(m, "group", 0) == 2):
            c = shape_in[0]
            if c % 2:
                raise Unsupported(f"{label} on {c} channels (an odd number)")
            if t is MinMax:
                ia, ib = torch.arange(c // 2), torch.arange(c // 2, c)
            else:
                ia, ib = torch.arange(0, c, 2), torch.arange(1, c, 2)
            self.add(n, "pairsort", (iu,), ia=ia, ib=ib, halves=t is MinMax)
        elif t is GroupSort and getattr(m, "group", 0) == 1:
            self.alias(n, u, view=False)
        elif t is GroupSort:
            raise Unsupported(f"{label} sorts groups of {getattr(m, 'group', '?')}; CROWN here relaxes pairs only")
        elif t is nn.MaxPool2d:
            assert isinstance(m, nn.MaxPool2d)
            if m.return_indices or m.ceil_mode or _pair(m.dilation) != (1, 1) or len(shape_in) != 3:
                raise Unsupported(f"{label} returns indices, uses ceil mode or dilation, or is not on images")
            k = _pair(m.kernel_size)
            self.add(n, "maxpool", (iu,), kernel=k, stride=_pair(m.stride if m.stride else k),
                     padding=_pair(m.padding))
        elif t in (nn.AvgPool2d, nn.AdaptiveAvgPool2d):
            self.avgpool(n, iu, m, label, shape_in)
        elif t in _IDENTITY:
            self.alias(n, u, view=True)
        elif t is nn.Flatten or t is nn.Unflatten:
            self.view(n, u)
        elif t is Normalize:
            assert isinstance(m, Normalize)
            shape = self.shape(n)
            self.add(n, "scale", (iu,), s=torch.full(shape, 1.0 / m.std, dtype=torch.float64),
                     t=torch.full(shape, -m.mean / m.std, dtype=torch.float64))
        elif t is ChannelNormalize:
            assert isinstance(m, ChannelNormalize)
            shape = self.shape(n)
            if shape != shape_in or shape[0] != len(m.std_values):
                raise Unsupported(f"{label} broadcasts its {len(m.std_values)} channels to shape {shape_in}")
            std = torch.tensor(m.std_values, dtype=torch.float64).view(-1, *([1] * (len(shape) - 1)))
            mean = torch.tensor(m.mean_values, dtype=torch.float64).view(-1, *([1] * (len(shape) - 1)))
            self.add(n, "scale", (iu,), s=(1.0 / std).expand(shape).clone(), t=(-mean / std).expand(shape).clone())
        else:
            raise Unsupported(f"{label} is a layer CROWN here does not understand")

    def batchnorm(self, n: fx.Node, u: fx.Node, m: nn.Module, label: str) -> None:
        assert isinstance(m, nn.modules.batchnorm._BatchNorm)
        if m.training or m.running_var is None or m.running_mean is None:
            raise Unsupported(f"{label} normalises by the batch (training mode or no running statistics)")
        k = 1.0 / torch.sqrt(m.running_var.detach().double().cpu() + m.eps)
        shift = -m.running_mean.detach().double().cpu() * k
        if m.weight is not None:
            w = m.weight.detach().double().cpu()
            k, shift = k * w, shift * w
        if m.bias is not None:
            shift = shift + m.bias.detach().double().cpu()
        iu = self.ir[u]
        prev = self.nodes[iu]
        shape = self.shape(n)
        if shape[0] != k.numel():
            raise Unsupported(f"{label} has {k.numel()} channels for input of shape {shape}")
        # fold into the conv/linear layer it directly follows, when it is that layer's only user
        if prev.kind in ("conv", "linear") and len(u.users) == 1 and u not in self.view_of \
                and prev.p.get("foldable", True) and (prev.kind == "conv" or len(shape) == 1):
            w = prev.p["weight"]
            b = prev.p["bias"] if prev.p["bias"] is not None else torch.zeros(w.shape[0], dtype=torch.float64)
            prev.p["weight"] = w * k.view(-1, *([1] * (w.dim() - 1)))
            prev.p["bias"] = b * k + shift
            self.ir[n] = iu
            return
        view = (-1, *([1] * (len(shape) - 1)))
        self.add(n, "scale", (iu,), s=k.view(view).expand(shape).clone(), t=shift.view(view).expand(shape).clone())

    def avgpool(self, n: fx.Node, iu: int, m: nn.Module, label: str, shape_in: tuple[int, ...]) -> None:
        if len(shape_in) != 3:
            raise Unsupported(f"{label} on per-sample shape {shape_in}; only images are understood")
        c, h, w = shape_in
        if isinstance(m, nn.AdaptiveAvgPool2d):
            o = m.output_size
            oh, ow = (o, o) if isinstance(o, int) else (h, w) if o is None else (o[0] or h, o[1] or w)
            if h % oh or w % ow:
                raise Unsupported(f"{label} pools {h}x{w} to {oh}x{ow}, which does not divide")
            k, s, p = (h // oh, w // ow), (h // oh, w // ow), (0, 0)
        else:
            assert isinstance(m, nn.AvgPool2d)
            k = _pair(m.kernel_size)
            s = _pair(m.stride if m.stride else k)
            p = _pair(m.padding)
            if m.ceil_mode or m.divisor_override is not None or (not m.count_include_pad and p != (0, 0)):
                raise Unsupported(f"{label} uses ceil mode, a divisor override or excludes padding from the count")
        weight = torch.full((c, 1, *k), 1.0 / (k[0] * k[1]), dtype=torch.float64)
        self.add(n, "conv", (iu,), weight=weight, bias=None, stride=s, padding=p, dilation=(1, 1), groups=c,
                 foldable=False)
