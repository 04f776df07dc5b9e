"""Certify robustness per sample: sound lower bounds on logit margins over L2 and L∞ balls (CROWN-style).

A sample ``x`` ``(C, H, W)`` or ``(d,)`` in [0,1] with label ``y`` is
*certified* at radius ε when no input ``x'`` in the ball ``||x' − x|| ≤ ε``
(L2 or L∞) that also lies in [0,1] changes the predicted class. Two sound
methods are offered, and the best certified set is their union:

``lipschitz``
    global, per class pair (GloRo-style): ``f_y(x) − f_j(x) > L_yj · r`` for
    every ``j ≠ y``, with ``L_yj`` an upper bound on the L2 Lipschitz constant
    of ``f_y − f_j`` (:func:`robustclip.bounds.upper.upper_bounds`) and ``r`` the
    L2 radius (``√d · ε`` for L∞).
``crown``
    local, per sample: a backward linear relaxation (CROWN, Zhang et al.
    2018) of the network, with the last affine layer folded into the
    specification matrix ``C`` whose rows are ``e_y − e_j``, so each margin
    ``f_y − f_j`` is bounded directly. ReLU/LeakyReLU use the usual
    triangle relaxation; sigmoid and tanh use, per neuron, the line pair of
    least area among several slopes (secant and tangents at points of the
    pre-activation interval ``[l, u]``) whose intercepts are computed
    *exactly* (the extrema of ``σ(z) − k z`` on ``[l, u]``), so every line is
    a sound bound whatever slope is chosen. Intermediate bounds come from the
    same backward pass. The input domain is the ball intersected with [0,1]:
    L∞ gives a box; for L2 the minimum of a linear function over ball ∩ box is
    bounded from below by Lagrange duality (any multiplier is sound), taking
    the better of that and the box bound.

Why not auto_LiRPA: its released package requires torch < 1.13, and this
project runs on torch 2.x, so the relaxation is implemented here.

Two implementations: fully connected chains (:func:`robustclip.bounds.lipschitz.known_layers`
with no convolution and elementwise activations) use dense matrices, as
written here; everything else (convolutions as operators, BatchNorm, pooling,
residual sums, MinMax, a module's own forward) goes to the graph CROWN of
:mod:`robustclip.bounds.crown` (:func:`crown_route`).

Soundness assumptions: one of the two understands the model, which runs in
eval mode; bounds are computed in float64 on the model as given, and a
margin counts as certified only above ``margin_tol`` (default ``1e-5``), which
absorbs the float32 rounding of the model itself. Certificates hold for inputs
in [0,1] (the threat model of the attack suites).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.devices import device_of
from ..core.modes import eval_mode
from ..errors import RobustclipError
from ..models.activations import is_sorting
from .crown.ir import Plan
from .crown.radii import certify_ascending, certify_cells, graph_margins
from .crown.tracing import build_plan
from .relaxations import concretize_lower, relax
from .structure import Affine, affine_ops
from .upper import UpperBound, best_pairs, upper_bounds

NORMS = ("L2", "Linf")
METHODS = ("lipschitz", "crown")
MARGIN_TOL = 1e-5


# --------------------------------------------------------------------------- structure


def logit_ops(model: nn.Module, in_shape: tuple[int, ...]) -> tuple[list[Affine | nn.Module] | None, str | None]:
    """The model as affine/activation ops with trailing strictly increasing activations removed.

    A strictly increasing elementwise map on the outputs (sigmoid, tanh,
    LeakyReLU with positive slope) never changes the argmax, so certifying the
    logits before it certifies the model. Returns ``(None, reason)`` for
    models that are not fully understood.
    """
    ops, why = affine_ops(model, in_shape)
    if ops is None:
        return None, why
    while ops and not isinstance(ops[-1], Affine) and _strictly_increasing(ops[-1]):
        ops = ops[:-1]
    if not ops:
        return None, "the model has no affine layer"
    return ops, None


def crown_route(model: nn.Module, in_shape: tuple[int, ...],
                ) -> tuple[list[Affine | nn.Module] | None, Plan | None, str | None]:
    """Which CROWN takes the model: ``(ops, None, None)`` the dense-matrix one (fully connected chains of
    elementwise activations), ``(None, plan, None)`` the graph one (:mod:`robustclip.bounds.crown`: anything with
    a convolution, BatchNorm, pooling, residual sums, MinMax, its own forward), ``(None, None, reason)`` neither.
    Call it with the model in eval mode (BatchNorm uses its running statistics)."""
    ops, why = logit_ops(model, in_shape)
    chain = ops is not None and not any(is_sorting(op) for op in ops)
    if chain and not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return ops, None, None
    plan, why_graph = build_plan(model, in_shape)
    if plan is not None:
        return None, plan, None
    if chain:
        return ops, None, None
    return None, None, why_graph or why


def _strictly_increasing(layer: nn.Module) -> bool:
    if isinstance(layer, (nn.Sigmoid, nn.Tanh)):
        return True
    return isinstance(layer, nn.LeakyReLU) and layer.negative_slope > 0


# --------------------------------------------------------------------------- CROWN


def _first_layer_bounds(aff: Affine, x0: torch.Tensor, eps: float, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds ``(N, n)`` of ``W x + b`` over the ball ∩ [0,1] by matrix products only (no per-sample dual).

    L∞: exact (a box). L2: the better of the ball bound ``W x0 + b ± eps ||w_i||``
    and the box bound (each coordinate within eps of ``x0`` and in [0,1]).
    """
    W, b = aff.W, aff.b
    lo = (x0 - eps).clamp(0, 1)
    hi = (x0 + eps).clamp(0, 1)
    mid, rad = (lo + hi) / 2, (hi - lo) / 2
    centre = mid @ W.T + b
    spread = rad @ W.abs().T
    l_box, u_box = centre - spread, centre + spread
    if norm == "Linf":
        return l_box, u_box
    c0 = x0 @ W.T + b
    r = eps * W.norm(dim=1)
    slack = 1e-12 * (c0.abs() + r + 1)
    return torch.maximum(c0 - r, l_box) - slack, torch.minimum(c0 + r, u_box) + slack


class Crown:
    """Backward linear bounds for one batch ``x0`` ``(N, d)`` in [0,1] at radius ``eps`` in ``norm``.

    ``ops``: from :func:`logit_ops`. Bounds of every activation's input are
    computed once, in order, by a backward pass from that layer.
    """

    def __init__(self, ops: list[Affine | nn.Module], x0: torch.Tensor, eps: float, norm: str, *,
                 first_cheap: bool = True) -> None:
        self.ops, self.x0, self.eps, self.norm = ops, x0.double(), float(eps), norm
        self.first_cheap = first_cheap
        self.relax: dict[int, tuple[torch.Tensor, ...]] = {}
        self.bounds: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for i, op in enumerate(ops):  # op i maps node i to node i+1
            if not isinstance(op, Affine):
                l, u = self.node_bounds(i)
                self.relax[i] = relax(op, l, u)

    def node_bounds(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(l, u)`` ``(N, n_i)`` of node i (node 0 is the input)."""
        if i in self.bounds:
            return self.bounds[i]
        if i == 0:
            lo = (self.x0 - self.eps).clamp(0, 1)
            hi = (self.x0 + self.eps).clamp(0, 1)
            out = (lo, hi)
        elif i == 1 and isinstance(aff := self.ops[0], Affine) and self.first_cheap:
            out = _first_layer_bounds(aff, self.x0, self.eps, self.norm)
        elif isinstance(aff := self.ops[i - 1], Affine):
            W, b = aff.W, aff.b
            n = W.shape[0]
            N = self.x0.shape[0]
            A = torch.cat([W, -W]).unsqueeze(0).expand(N, -1, -1)
            c = torch.cat([b, -b]).unsqueeze(0).expand(N, -1)
            low = self.backward(i - 1, A, c, search_steps=6)  # a coarser multiplier search: still sound
            out = (low[:, :n], -low[:, n:])
        else:
            act = self.ops[i - 1]
            assert isinstance(act, nn.Module)
            l, u = self.node_bounds(i - 1)
            out = (act(l), act(u))  # every known activation is monotone non-decreasing
        self.bounds[i] = out
        return out

    def backward(self, k: int, A: torch.Tensor, c: torch.Tensor, *, search_steps: int = 12) -> torch.Tensor:
        """Lower bound ``(N, m)`` of ``A h_k + c`` with ``A`` ``(N, m, n_k)``, ``c`` ``(N, m)``."""
        for i in range(k - 1, -1, -1):
            op = self.ops[i]
            if isinstance(op, Affine):
                c = c + A @ op.b
                A = A @ op.W
            else:
                aL, bL, aU, bU = self.relax[i]
                Ap, An = A.clamp_min(0), A.clamp_max(0)
                c = c + (Ap * bL.unsqueeze(1)).sum(-1) + (An * bU.unsqueeze(1)).sum(-1)
                A = Ap * aL.unsqueeze(1) + An * aU.unsqueeze(1)
        return concretize_lower(A, c, self.x0, self.eps, self.norm, search_steps=search_steps)

    def margins(self, y: torch.Tensor, K: int) -> torch.Tensor:
        """Lower bounds ``(N, K)`` of ``f_y − f_j`` (``+inf`` at ``j = y``)."""
        N = self.x0.shape[0]
        C = torch.eye(K, dtype=torch.float64)[y].unsqueeze(1) - torch.eye(K, dtype=torch.float64).unsqueeze(0)
        last = self.ops[-1]
        k = len(self.ops)
        if isinstance(last, Affine):  # fold the last affine layer into the specification
            A, c, k = C @ last.W, C @ last.b, k - 1
        else:
            A, c = C, torch.zeros(N, K, dtype=torch.float64)
        low = self.backward(k, A, c)
        return low.masked_fill(torch.eye(K, dtype=torch.bool)[y], math.inf)


def crown_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str, *,
                  batch_size: int = 50, ops: list[Affine | nn.Module] | None = None,
                  plan: Plan | None = None) -> torch.Tensor:
    """CROWN lower bounds ``(N, K)`` on ``f_y(x') − f_j(x')`` over the ε-ball ∩ [0,1] (``+inf`` at ``j = y``).

    ``x``: ``(N, ...)`` in [0,1]; ``y``: ``(N,)`` labels. The model goes to the
    CROWN :func:`crown_route` picks (or the given ``ops`` / ``plan``). Dense
    path, L2: a fast pass bounds the first layer by matrix products only;
    samples it does not certify are redone with the Lagrange-dual bound on
    the first layer too, and the larger of the two (sound) lower bounds is
    returned. Raises :class:`RobustclipError` for models that are not fully
    understood.
    """
    _check(x, eps, norm)
    if ops is None and plan is None:
        with eval_mode(model):
            ops, plan, why = crown_route(model, tuple(x.shape[1:]))
        if ops is None and plan is None:
            raise RobustclipError(f"cannot certify this model: {why}",
                                  "use layers robustclip.bounds.crown understands (see docs/bounds.md)")
    if plan is not None:
        return graph_margins(plan, x, y, eps, norm, batch_size=batch_size)
    assert ops is not None
    K = _n_out(ops)
    out = []
    flat = x.detach().cpu().double().flatten(1)
    yc = y.cpu()
    for i in range(0, flat.shape[0], batch_size):
        xb, yb = flat[i : i + batch_size], yc[i : i + batch_size]
        m = Crown(ops, xb, eps, norm, first_cheap=True).margins(yb, K)
        if norm == "L2":  # samples the fast pass leaves open get the dual bound on the first layer too
            redo = ~(m > MARGIN_TOL).all(dim=1)
            if bool(redo.any()):
                full = Crown(ops, xb[redo], eps, norm, first_cheap=False).margins(yb[redo], K)
                m[redo] = torch.maximum(m[redo], full)  # both are sound lower bounds
        out.append(m)
    return torch.cat(out) if out else torch.zeros(0, K, dtype=torch.float64)


def _n_out(ops: list[Affine | nn.Module]) -> int:
    for op in reversed(ops):
        if isinstance(op, Affine):
            return int(op.W.shape[0])
    raise AssertionError("no affine op")


def _check(x: torch.Tensor, eps: float, norm: str) -> None:
    if norm not in NORMS:
        raise RobustclipError(f"unknown norm {norm!r}", f"use one of {', '.join(NORMS)}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise RobustclipError(f"ε must be a finite number ≥ 0, got {eps!r}", "e.g. eps=0.5")
    if x.numel() and (not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1):
        raise RobustclipError("inputs must be finite and lie in [0,1]", "put normalisation inside the model")


# --------------------------------------------------------------------------- global certificates


def lipschitz_certified(logits: torch.Tensor, y: torch.Tensor, pairs: torch.Tensor, radius: float, *,
                        margin_tol: float = MARGIN_TOL) -> torch.Tensor:
    """Per-class-pair Lipschitz certificate ``(N,)`` bool: ``f_y − f_j > L_yj · radius`` for all ``j ≠ y``.

    ``logits``: ``(N, K)``; ``pairs``: ``(K, K)`` upper bounds on the L2
    Lipschitz constants of ``f_y − f_j``; ``radius``: L2 radius ≥ 0.
    """
    lg = logits.double().cpu()
    gap = lg.gather(1, y.view(-1, 1).cpu()) - lg  # (N, K)
    need = pairs.double()[y.cpu()] * radius + margin_tol  # (N, K)
    ok = (gap > need) | torch.eye(lg.shape[1], dtype=torch.bool)[y.cpu()]
    return ok.all(dim=1) & (lg.argmax(1) == y.cpu())


# --------------------------------------------------------------------------- the result


@dataclass
class CertResult:
    """Per-sample certificates: ``per_method[method][(norm, eps)]`` bool ``(N,)``; ``best`` is their union.

    ``seconds[method]``: time spent; ``info``: bounds used and reasons a
    method was skipped.
    """

    per_method: dict[str, dict[tuple[str, float], torch.Tensor]] = field(default_factory=dict)
    best: dict[tuple[str, float], torch.Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def certify(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cells: list[tuple[str, float]], *,
            methods: tuple[str, ...] = METHODS, uppers: list[UpperBound] | None = None,
            sdp: bool = False, batch_size: int = 50, margin_tol: float = MARGIN_TOL,
            prefilter: int = 10, broken: dict[tuple[str, float], torch.Tensor] | None = None) -> CertResult:
    """Certify every sample of ``x`` ``(N, ...)`` in [0,1] with labels ``y`` ``(N,)`` at each (norm, ε) cell.

    ``methods``: any of ``lipschitz`` (per-class-pair global constants from
    ``uppers``, computed when None; ``sdp`` adds LipSDP) and ``crown``.
    CROWN skips samples the Lipschitz method certified, and runs from the
    smallest ε of each norm up: it tries a sample only while it was certified
    at every smaller ε (CROWN's margins shrink as the ball grows). Before
    CROWN, ``prefilter`` steps of PGD (0: none) look for adversarial examples
    in the ball; samples broken there cannot be certified and are skipped
    (this only saves time: a skipped sample is never counted as certified).
    ``broken``: per cell, bool ``(N,)``, samples an attack already broke there (``evaluate`` passes its strong
    attacks' per-sample worst case); CROWN skips them the same way.
    A model that is not fully understood gets no certificate (every entry
    False, the reason in ``info['reason']``).
    """
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise RobustclipError(f"unknown certification method {bad[0]!r}", f"use some of {', '.join(METHODS)}")
    for norm, eps in cells:
        _check(x[:0], eps, norm)
    res = CertResult()
    n = x.shape[0]
    none = {cell: torch.zeros(n, dtype=torch.bool) for cell in cells}
    res.best = {cell: v.clone() for cell, v in none.items()}
    in_shape = tuple(x.shape[1:])
    with eval_mode(model):  # every submodule's own flag restored after
        ops, plan, why = crown_route(model, in_shape)
        if ops is None and plan is None:
            res.info["reason"] = why
            return res
        with torch.no_grad():
            logits = model(x.to(device_of(model))).detach().cpu()
        if "lipschitz" in methods:
            t0 = time.perf_counter()
            if uppers is None:
                uppers, _ = upper_bounds(model, in_shape, sdp=sdp)
            pairs = best_pairs(uppers)
            finite = [u.value for u in uppers if math.isfinite(u.value)]
            if pairs is None and finite:
                K = logits.shape[1]
                pairs = torch.full((K, K), math.sqrt(2) * min(finite), dtype=torch.float64)
            res.info["lipschitz"] = {u.method: u.value for u in uppers}
            got = {}
            for norm, eps in cells:
                r = eps if norm == "L2" else eps * math.sqrt(x[0].numel())
                got[(norm, eps)] = (lipschitz_certified(logits, y, pairs, r, margin_tol=margin_tol)
                                    if pairs is not None else none[(norm, eps)].clone())
            res.per_method["lipschitz"] = got
            res.seconds["lipschitz"] = time.perf_counter() - t0
        if "crown" in methods and plan is not None:
            t0 = time.perf_counter()
            res.per_method["crown"] = certify_cells(
                plan, x, y, cells, logits.argmax(1) == y.cpu(), res.per_method.get("lipschitz", {}),
                broken=_prefilter(model, prefilter), known_broken=broken, batch_size=batch_size,
                margin_tol=margin_tol)
            res.seconds["crown"] = time.perf_counter() - t0
        elif "crown" in methods:
            assert ops is not None
            t0 = time.perf_counter()
            xc, yc = x.cpu(), y.cpu()

            def dense(sub: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
                m = crown_margins(model, xc[sub], yc[sub], eps, norm, batch_size=batch_size, ops=ops)
                return (m > margin_tol).all(dim=1)

            got = certify_ascending(cells, logits.argmax(1) == yc, res.per_method.get("lipschitz", {}), dense,
                                    x=xc, y=yc, broken=_prefilter(model, prefilter), known_broken=broken,
                                    batch_size=max(batch_size, n))
            res.per_method["crown"] = got
            res.seconds["crown"] = time.perf_counter() - t0
    for got in res.per_method.values():
        for cell, ok in got.items():
            res.best[cell] |= ok
    return res


def _prefilter(model: nn.Module, steps: int) -> Any:
    """The ``broken`` callback of :func:`robustclip.bounds.crown.radii.certify_cells`: ``steps`` of PGD (None: 0)."""
    if steps <= 0:
        return None
    return lambda xb, yb, todo, e, nm: _broken(model, xb, yb, todo, e, nm, steps=steps)


def _broken(model: nn.Module, x: torch.Tensor, y: torch.Tensor, todo: torch.Tensor, eps: float, norm: str, *,
            steps: int) -> torch.Tensor:
    """Bool ``(N,)``: True where ``steps`` of PGD (cross-entropy) found a misclassified point in the ball ∩ [0,1]."""
    dev = device_of(model)
    out = torch.zeros(x.shape[0], dtype=torch.bool)
    idx = todo.nonzero().flatten()
    xs, ys = x[idx].to(dev), y[idx].to(dev)
    view = (-1, *([1] * (xs.dim() - 1)))
    delta = torch.zeros_like(xs)
    alpha = 2.5 * eps / steps
    for _ in range(steps):
        d = delta.clone().requires_grad_(True)
        loss = nn.functional.cross_entropy(model((xs + d).clamp(0, 1)), ys, reduction="sum")
        (g,) = torch.autograd.grad(loss, d)
        with torch.no_grad():
            if norm == "L2":
                delta = delta + alpha * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
                delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0).view(view)
            else:
                delta = (delta + alpha * g.sign()).clamp(-eps, eps)
            delta = (xs + delta).clamp(0, 1) - xs
    with torch.no_grad():
        out[idx] = (model(xs + delta).argmax(1) != ys).cpu()
    return out


def certified_radius(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, *, hi: float,
                     steps: int = 12, batch_size: int = 50) -> torch.Tensor:
    """The largest ε ``(N,)`` CROWN certifies per sample, by bisection on ``[0, hi]`` (0: none found).

    Every returned ε was itself certified, so it is a sound certified radius:
    no adversarial example exists closer than it (in ``norm``, inside [0,1]).
    """
    with eval_mode(model):
        ops, plan, why = crown_route(model, tuple(x.shape[1:]))
    if ops is None and plan is None:
        raise RobustclipError(f"cannot certify this model: {why}",
                              "use layers robustclip.bounds.crown understands (see docs/bounds.md)")
    n = x.shape[0]
    with torch.no_grad():
        correct = (model(x).argmax(1) == y).cpu()
    lo_e = torch.zeros(n, dtype=torch.float64)
    hi_e = torch.full((n,), float(hi), dtype=torch.float64)
    for _ in range(steps):
        mid = (lo_e + hi_e) / 2
        ok = torch.zeros(n, dtype=torch.bool)
        for i in range(n):  # one ε per sample
            if bool(correct[i]):
                m = crown_margins(model, x[i : i + 1], y[i : i + 1], float(mid[i]), norm, ops=ops, plan=plan)
                ok[i] = bool((m > MARGIN_TOL).all())
        lo_e = torch.where(ok, mid, lo_e)
        hi_e = torch.where(ok, hi_e, mid)
    return lo_e
