"""Sound upper bounds on the L2 Lipschitz constant (layer product, layer pairs, LipSDP, graph) and their report."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.devices import device_of as _device
from ..models.activations import is_sorting
from .lipsdp import lipsdp
from .structure import SLACK, Affine, _chain, activation_slopes, affine_ops, known_layers


def gram_spectral_bound(A: torch.Tensor, *, iters: int = 18, tol: float = 1e-6) -> float:
    """An upper bound on ``σ_max(A)`` by construction (Gram iteration, Delattre et al. 2023).

    ``A``: any matrix ``(m, n)``. With ``G_0 = A``, ``G_{k+1} = G_kᵀ G_k`` one has
    ``σ_max(A)^(2^k) = σ_max(G_k) ≤ ||G_k||_F``, so every ``||G_k||_F^(1/2^k)`` is
    an upper bound; it falls to ``σ_max`` as k grows. Computed in float64 with
    rescaling (the log of the scale is tracked), the smallest bound is returned;
    it stops early once a step improves the bound by less than ``tol`` (relative).
    """
    G = A.detach().double()
    if G.shape[0] < G.shape[1]:
        G = G.T
    G = G.T @ G  # k = 1, the smaller Gram matrix
    log_s = 0.0
    best = math.inf
    for k in range(1, iters + 1):
        f = float(torch.linalg.matrix_norm(G, ord="fro"))
        if f == 0.0:
            return 0.0
        log_s += math.log(f)
        bound = math.exp(log_s / 2**k)
        if bound > best * (1 - tol):  # converged: later bounds improve by less than tol (relative)
            best = min(best, bound)
            break
        best = bound
        G = G / f
        G = G.T @ G
        log_s *= 2
    return best * (1 + 1e-9)


def _spec_norm(W: torch.Tensor) -> float:
    """``σ_max`` of a float64 matrix via SVD, with a relative slack against rounding."""
    if W.numel() == 0:
        return 0.0
    return float(torch.linalg.matrix_norm(W, ord=2)) * (1 + SLACK)


def layer_norms(model: nn.Module, in_shape: tuple[int, ...], *, iters: int = 100,
                seed: int = 0, fast: bool = False) -> list[tuple[str, float]]:
    """Operator norms (L2) of each leaf layer, walking ``in_shape`` through the model.

    Linear: ``σ_max`` by SVD. Conv2d: a Gram-iteration bound on its dense matrix
    at the actual input size (an upper bound by construction, unlike power
    iteration, which approaches ``σ_max`` from below); with ``fast``, the
    circular (FFT) bound of :func:`robustclip.bounds.conv_norms.conv_module_bounds`
    instead, which never builds the dense matrix (looser, milliseconds). Activations: their
    Lipschitz constants (1 for ReLU and tanh, 1/4 for sigmoid, ``max(1, |a|)``
    for LeakyReLU). Normalize: ``1/std``. Flatten, Identity: 1. Raises
    ``ValueError`` with the reason for a model :func:`known_layers` does not
    understand. ``iters`` and ``seed`` are kept for compatibility (unused).
    """
    from ..models.specs import Normalize

    layers, why = known_layers(model)
    if layers is None:
        raise ValueError(f"no Lipschitz upper bound: {why}")
    out: list[tuple[str, float]] = []
    shape = tuple(in_shape)
    for name, layer in layers:
        with torch.no_grad():
            next_shape = tuple(layer(torch.zeros((1, *shape), device=_device(model))).shape[1:])
        if isinstance(layer, nn.Linear):
            out.append((name, _spec_norm(layer.weight.detach().double().cpu())))
        elif isinstance(layer, nn.Conv2d):
            ops, why = (None, "the fast bound does not densify") if fast else affine_ops(nn.Sequential(layer), shape)
            if ops is None:  # too large to densify: the circular (FFT) bound of conv_norms
                from .conv_norms import conv_module_bounds

                got = conv_module_bounds(layer, shape)
                if got is None:
                    raise ValueError(f"no Lipschitz upper bound: {why}")
                out.append((name, got[0]))
                shape = next_shape
                continue
            conv = ops[0]
            assert isinstance(conv, Affine)
            out.append((name, gram_spectral_bound(conv.W)))
        elif isinstance(layer, Normalize):
            out.append((name, 1.0 / layer.std))
        elif isinstance(layer, (nn.Flatten, nn.Identity)):
            out.append((name, 1.0))
        elif is_sorting(layer):
            out.append((name, 1.0))  # a permutation on every linear piece
        else:
            slopes = activation_slopes(layer)
            assert slopes is not None, type(layer)
            out.append((name, max(abs(slopes[0]), abs(slopes[1]))))
        shape = next_shape
    return out


def upper_bound(model: nn.Module, in_shape: tuple[int, ...], *, iters: int = 100, seed: int = 0) -> float:
    """Product of per-layer operator norms: an upper bound on the L2 Lipschitz constant.

    Models that are not a plain ``nn.Sequential`` chain (BatchNorm, pooling, residual blocks, their own
    ``forward``) are bounded through their ``torch.fx`` graph (:mod:`robustclip.bounds.graph`). Raises
    ``ValueError`` (with the reason) for models that are not fully understood.
    """
    layers, _ = known_layers(model)
    if layers is None:
        return graph_bound(model, in_shape).l2
    return math.prod(v for _, v in layer_norms(model, in_shape, iters=iters, seed=seed))


def graph_bound(model: nn.Module, in_shape: tuple[int, ...]) -> Any:
    """:func:`robustclip.bounds.graph.graph_upper_bound` (L2 and L∞); ``ValueError`` with the reason when the
    model is not understood."""
    from .graph import Unsupported, graph_upper_bound

    try:
        return graph_upper_bound(model, in_shape)
    except Unsupported as exc:
        raise ValueError(f"no Lipschitz upper bound: {exc}") from None


def layer_pair_bound(ops: list[Affine | nn.Module], last: torch.Tensor | None = None,
                     cache: dict[tuple[str, int], float] | None = None) -> float:
    """Upper bound combining adjacent layers: ``||W2 D W1|| ≤ m||W2 W1|| + r||W2|| ||W1||``.

    For an activation with slopes in ``[a, b]`` between ``W1`` and ``W2``, its
    Jacobian ``D`` is diagonal with entries in ``[a, b]``, i.e. ``D = m I + r S``
    with ``m = (a+b)/2``, ``r = (b-a)/2`` and ``|S| ≤ 1``. A dynamic programme
    picks, along the chain, single layers or such pairs to minimise the product.
    ``last`` replaces the final matrix (e.g. a row difference ``w_y − w_j``).
    """
    mats, factors, between = _chain(ops)
    if last is not None:
        mats = mats[:-1] + [last]
    n = len(mats)
    if n == 0:
        return math.prod(factors)
    cache = {} if cache is None else cache  # norms not involving ``last`` are shared between calls

    def cached(key: tuple[str, int], fn: Any) -> float:
        if key[1] >= n - 1 and last is not None:
            return float(fn())
        if key not in cache:
            cache[key] = float(fn())
        return cache[key]

    norms = [cached(("norm", i), lambda W=W: _spec_norm(W)) for i, W in enumerate(mats)]
    best = [math.inf] * (n + 1)
    best[0] = factors[0]
    for i in range(1, n + 1):
        best[i] = best[i - 1] * norms[i - 1] * factors[i]
        s = between[i - 1] if i >= 2 else None
        if s is not None:
            m, r = (s[0] + s[1]) / 2, (s[1] - s[0]) / 2
            prod = cached(("pair", i - 1), lambda i=i: _spec_norm(mats[i - 1] @ mats[i - 2]))
            pair = m * prod + r * norms[i - 1] * norms[i - 2]
            best[i] = min(best[i], best[i - 2] * pair * factors[i])
    return best[n]


@dataclass
class UpperBound:
    """One sound upper bound: its method, value, cost and the assumptions it rests on."""

    method: str
    value: float
    seconds: float
    assumptions: str
    pairs: list[list[float]] | None = None  # per-class-pair constants L(f_y − f_j), (K, K)


@dataclass
class LipschitzReport:
    """Lower and upper bounds on the L2 Lipschitz constant, with their cost.

    ``upper`` is the smallest sound upper bound (None, with ``upper_reason``,
    for models whose structure is not fully understood); ``uppers`` lists each
    method's bound; ``lower`` is the best lower bound and ``lower_method`` the
    method that found it.
    """

    lower: float
    upper: float | None
    lower_quotient: float
    lower_jacobian: float
    exact: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    lower_method: str = ""
    upper_method: str | None = None
    upper_reason: str | None = None
    uppers: list[UpperBound] = field(default_factory=list)
    lower_methods: dict[str, float] = field(default_factory=dict)
    plan: dict[str, Any] | None = None
    """The lower-bound ascent's cost-bounded settings (:class:`robustclip.bounds.budget.AscentPlan`), if any."""

    @property
    def ratio(self) -> float | None:
        """``upper / lower`` (inf when the lower bound is 0; None without an upper bound)."""
        if self.upper is None:
            return None
        return self.upper / self.lower if self.lower > 0 else math.inf

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ratio"] = self.ratio
        return d


def upper_bounds(model: nn.Module, in_shape: tuple[int, ...], *, sdp: bool = False, solver: str = "SCS",
                 fast: bool = False) -> tuple[list[UpperBound], str | None]:
    """Every sound upper bound available for ``model``, or ``([], reason)``.

    Methods: ``layer_product`` (always), ``layer_pair`` (affine chains), and
    with ``sdp=True`` ``lipsdp`` (fully connected chains; needs cvxpy, the
    ``sdp`` extra: without it the reason is recorded in the list as a
    method with value inf). :func:`robustclip.bounds.eclipse.eclipse_upper` adds
    the ECLipsE bound. Each carries per-class-pair constants when the
    model's last op is affine (``√2·L`` and ``||w_y − w_j||`` based).
    Models that are not such a chain (BatchNorm, pooling, residual blocks,
    their own ``forward``) get one method, ``graph_product``
    (:mod:`robustclip.bounds.graph`, no per-pair constants), or ``([], reason)``.

    ``fast`` (``--lipschitz fast``): one cheap method only, ``layer_product_fft`` (per-layer norms with the
    circular FFT bound for convolutions, no dense matrices, GloRo's per-pair constants) for chains, and
    ``graph_product`` otherwise; ``sdp`` is ignored. Sound, usually looser than the full set.
    """
    if known_layers(model)[0] is None:  # BatchNorm, pooling, residual blocks, its own forward: the traced graph
        t0 = time.perf_counter()
        try:
            gb = graph_bound(model, in_shape)
        except ValueError as exc:
            return [], str(exc).removeprefix("no Lipschitz upper bound: ")
        return [UpperBound("graph_product", gb.l2, time.perf_counter() - t0,
                           "torch.fx graph: per-layer norms multiplied along paths, residual sums added "
                           "(L(s) + L(f)); conv: circular FFT bound or dense SVD; BatchNorm folded after conv/linear, "
                           f"else max |γ|/√(σ²+ε); max pool √m; avg pool Schur test; L∞→L∞ bound {gb.linf:.6g}")], None
    try:
        t0 = time.perf_counter()
        norms = layer_norms(model, in_shape, fast=fast)
        prod = math.prod(v for _, v in norms)
        t_prod = time.perf_counter() - t0
    except ValueError as exc:
        return [], str(exc).removeprefix("no Lipschitz upper bound: ")
    if fast:
        return [_fast_product(model, norms, prod, t_prod)], None
    out = [UpperBound("layer_product", prod, t_prod, "product of per-layer norms (SVD; conv: Gram iteration "
                      "on the dense matrix at this input size); activation slopes sigmoid ≤ 1/4, relu/tanh ≤ 1")]
    t0 = time.perf_counter()
    ops, why = affine_ops(model, in_shape)
    if ops is None:
        out[0].assumptions += f"; no other bounds: {why}"
        return out, None
    mats, _, _ = _chain(ops)
    last_affine = bool(ops) and isinstance(ops[-1], Affine)
    rows = mats[-1] if last_affine else None

    def pair_matrix(L: float, per_row: Any = None) -> list[list[float]] | None:
        return None if rows is None else _pair_matrix(rows.shape[0], L, per_row)

    out[0].pairs = pair_matrix(prod, _head_pairs(model, norms))
    lp = layer_pair_bound(ops)
    pairs = None
    if rows is not None:
        rws = rows
        shared: dict[tuple[str, int], float] = {}
        pairs = pair_matrix(lp, lambda y, j: layer_pair_bound(ops, last=(rws[y] - rws[j]).view(1, -1), cache=shared))
    out.append(UpperBound("layer_pair", min(lp, prod), time.perf_counter() - t0,
                          "adjacent layers combined as ||W2 D W1|| ≤ m||W2W1|| + r||W2||·||W1|| for activation "
                          "slopes in [m−r, m+r]; pair constants use the row differences w_y − w_j", pairs))
    if sdp:
        t0 = time.perf_counter()
        try:
            L, P, info = lipsdp(ops, solver=solver, pair_rows=rows)
            Pl = None
            if P is not None:
                P.fill_diagonal_(0.0)
                Pl = P.tolist()
            out.append(UpperBound("lipsdp", L, time.perf_counter() - t0,
                                  f"LipSDP-Neuron (slope-restricted activations), solved with {info['solver']} "
                                  f"({info['status']}), multipliers re-verified in float64 (eigenvalues); "
                                  f"matrix {info['matrix_size']}x{info['matrix_size']} after row-space reduction", Pl))
        except ImportError:
            out.append(UpperBound("lipsdp", math.inf, 0.0, "not computed: cvxpy is not installed "
                                  "(pip install 'robustclip[sdp]')"))
        except ValueError as exc:
            out.append(UpperBound("lipsdp", math.inf, time.perf_counter() - t0, f"not computed: {exc}"))
    return out, None


def _pair_matrix(K: int, L: float, per_row: Any = None) -> list[list[float]]:
    """Per-class-pair constants ``(K, K)``: ``√2·L`` (any two logits of an L-Lipschitz map), lowered to
    ``per_row(y, j)`` where that is smaller; 0 on the diagonal."""
    P = torch.full((K, K), math.sqrt(2) * L, dtype=torch.float64)
    if per_row is not None:
        for y in range(K):
            for j in range(y + 1, K):
                P[y, j] = P[j, y] = min(float(P[y, j]), per_row(y, j))
    P.fill_diagonal_(0.0)
    return P.tolist()


def _fast_product(model: nn.Module, norms: list[tuple[str, float]], prod: float, seconds: float) -> UpperBound:
    """The ``layer_product_fft`` bound of ``upper_bounds(..., fast=True)``, with per-class-pair constants
    ``min(√2·L, L(body)·||w_y − w_j||)`` when the last leaf is linear."""
    head = _head_pairs(model, norms)
    layers, _ = known_layers(model)
    last = layers[-1][1] if layers else None
    pairs = _pair_matrix(last.out_features, prod, head) if head is not None and isinstance(last, nn.Linear) else None
    return UpperBound("layer_product_fft", prod, seconds,
                      "product of per-layer norms (SVD; conv: circular FFT bound, no dense matrix); activation "
                      "slopes sigmoid ≤ 1/4, relu/tanh ≤ 1 (--lipschitz fast: one cheap bound)", pairs)


def _head_pairs(model: nn.Module, norms: list[tuple[str, float]]) -> Any:
    """``(y, j) -> L(body) · ||w_y − w_j||`` (GloRo's class-pair constants; sound with the product bound of the
    body, ``norms`` from :func:`layer_norms`), or None when the last leaf is not linear."""
    layers, _ = known_layers(model)
    if not layers or not isinstance(layers[-1][1], nn.Linear):
        return None
    body = math.prod(v for _, v in norms[:-1])
    W = layers[-1][1].weight.detach().double().cpu()
    return lambda y, j: body * float((W[y] - W[j]).norm()) * (1 + SLACK)


def best_pairs(uppers: list[UpperBound]) -> torch.Tensor | None:
    """Elementwise minimum ``(K, K)`` of the per-class-pair constants over methods (None if none has them)."""
    mats = [torch.tensor(u.pairs, dtype=torch.float64) for u in uppers if u.pairs is not None]
    if not mats:
        return None
    return torch.stack(mats).min(dim=0).values
