"""Certified training through a global Lipschitz bound (``--reg lipschitz-margin``, GloRo-style).

GloRo nets (Leino et al., ICML 2021) train through a global bound: for a net
``f = W_L ∘ body`` with logits ``y`` ``(N, K)`` and predicted class ``j``, the
extra "⊥" logit is

    ``y_⊥ = max_{i ≠ j} (y_i + ε · K_ji)``,  ``K_ji = L(body) · ||W_j − W_i||``,

with ``L(body)`` the product of the per-layer operator norms of everything
before the last linear layer and ``W_j`` the last layer's rows. If ``y_j >
y_⊥`` then no L2 perturbation of size ``< ε`` changes the class, provided
``L(body)`` really bounds the body's Lipschitz constant.

During training ``L(body)`` comes from one power-iteration step per layer and
weight step, with persistent vectors (dense layers through ``W``/``Wᵀ``,
convolutions through ``conv2d``/``conv_transpose2d`` at the layer's input
size), differentiable in the weights. Power iteration approaches ``σ_max``
from below, so this estimate certifies nothing: certificates come from the
sound bounds of :mod:`robustclip.bounds.lipschitz` (SVD for dense layers, a Gram
bound on the convolution's matrix) through :mod:`robustclip.bounds.certify`.

Losses: ``ce``, the cross-entropy of the ⊥-augmented logits ``(N, K+1)``
(the clean cross-entropy is then switched off); ``trades`` (GloRo's
TRADES-style loss), ``CE(y, label) + w · KL(softmax([y, −∞]) || softmax([y,
y_⊥]))``. ε is ramped geometrically from ``eps_start · ε`` to ``eps_end · ε``
over the first ``ramp`` fraction of training, then held.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ...core import validate
from ...core.modes import eval_mode
from ...errors import RobustclipError
from ...models.activations import is_sorting
from .base import Regularizer

LOSSES = ("trades", "ce")


@dataclass
class MarginConfig:
    """Settings of ``lipschitz-margin``.

    eps: the L2 radius to certify (MNIST's standard 1.58). loss: ``trades`` or
    ``ce`` (see the module). weight: the KL weight ``w`` of ``trades`` (GloRo's
    MNIST recipe: 1.5). eps_start, eps_end: the ramp's ends as multiples of eps
    (0.01 and 1.1); ramp: the fraction of all weight steps the ramp takes (0.5).
    power_iters: power-iteration steps per layer and weight step (1).
    """

    eps: float = 1.58
    loss: str = "trades"
    weight: float = 1.5
    eps_start: float = 0.01
    eps_end: float = 1.1
    ramp: float = 0.5
    power_iters: int = 1

    def validate(self) -> None:
        """Every setting of the right type, finite and in range."""
        num = validate.number
        num(self.eps, "margin eps", lo=0, lo_open=True, hi=100, fix="use the L2 radius to certify, e.g. eps=1.58")
        if not isinstance(self.loss, str) or self.loss not in LOSSES:
            raise RobustclipError(f"unknown margin loss {self.loss!r:.80}", f"use one of {', '.join(LOSSES)}")
        num(self.weight, "margin weight", lo=0, hi=1e4, fix="use e.g. weight=1.5")
        num(self.eps_start, "margin eps_start", lo=0, lo_open=True, hi=100, fix="use e.g. eps_start=0.01")
        num(self.eps_end, "margin eps_end", lo=0, lo_open=True, hi=100, fix="use e.g. eps_end=1.1")
        num(self.ramp, "margin ramp", lo=0, hi=1, fix="use a fraction of training, e.g. ramp=0.5")
        num(self.power_iters, "margin power_iters", integer=True, lo=1, hi=1000, fix="use e.g. power_iters=1")


def margin_config(params: dict[str, Any]) -> MarginConfig:
    """A validated :class:`MarginConfig` from a settings dict (``--margin KEY=VALUE``)."""
    try:
        cfg = MarginConfig(**params)
    except TypeError as exc:
        raise RobustclipError(f"bad lipschitz-margin setting: {exc}",
                              f"use fields of MarginConfig: {', '.join(MarginConfig.__dataclass_fields__)}") from None
    cfg.validate()
    return cfg


class BodyBound:
    """A differentiable estimate of ``L(body)`` by power iteration with persistent vectors.

    Built from an ``nn.Sequential`` whose last leaf is ``nn.Linear`` (the logit
    layer) and whose other leaves are Linear, Conv2d, Flatten, Identity,
    Normalize or a 1-Lipschitz or slope-bounded activation. ``in_shape``: the
    per-sample input shape, e.g. ``(1, 28, 28)``.
    """

    def __init__(self, model: nn.Module, in_shape: tuple[int, ...], *, seed: int = 0) -> None:
        from ...bounds.structure import activation_slopes, known_layers
        from ...models.specs import Normalize

        layers, why = known_layers(model)
        if layers is None:
            raise RobustclipError(f"lipschitz-margin cannot bound this model: {why}",
                                  "use a spec of fc, cnn or cnn4c3f")
        leaves = [m for _, m in layers if not isinstance(m, (nn.Flatten, nn.Identity))]
        if not leaves or not isinstance(leaves[-1], nn.Linear):
            raise RobustclipError("lipschitz-margin needs a model whose last layer is linear (the logits)",
                                  "drop the output activation from the spec")
        self.head: nn.Linear = leaves[-1]
        gen = torch.Generator().manual_seed(seed + 4243)
        self.const = 1.0
        self.layers: list[tuple[nn.Module, torch.Tensor, tuple[int, ...]]] = []
        shape = tuple(in_shape)
        dev = self.head.weight.device
        for _, m in layers:
            if m is self.head:
                break
            with torch.no_grad():
                nxt = tuple(m(torch.zeros((1, *shape), device=dev)).shape[1:])
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                u = torch.randn((1, *shape), generator=gen).to(dev)
                self.layers.append((m, u / u.norm(), shape))
            elif isinstance(m, Normalize):
                self.const /= m.std
            elif is_sorting(m) or isinstance(m, (nn.Flatten, nn.Identity)):
                pass
            else:
                s = activation_slopes(m)
                assert s is not None
                self.const *= max(abs(s[0]), abs(s[1]))
            shape = nxt

    @staticmethod
    def _fwd(m: nn.Module, u: torch.Tensor) -> torch.Tensor:
        if isinstance(m, nn.Linear):
            return F.linear(u, m.weight)
        assert isinstance(m, nn.Conv2d)
        return F.conv2d(u, m.weight, None, m.stride, m.padding, m.dilation, m.groups)

    @staticmethod
    def _adj(m: nn.Module, v: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        if isinstance(m, nn.Linear):
            return v @ m.weight
        assert isinstance(m, nn.Conv2d)
        out = []
        for d in range(2):
            s, p, k, dl = m.stride[d], m.padding[d], m.kernel_size[d], m.dilation[d]
            base = (v.shape[2 + d] - 1) * s - 2 * int(p) + dl * (k - 1) + 1
            out.append(shape[1 + d] - base)
        pad = m.padding if isinstance(m.padding, tuple) else (0, 0)  # known_layers admits numeric padding only
        return F.conv_transpose2d(v, m.weight, None, m.stride, pad, tuple(out), m.groups, m.dilation)

    def norms(self, iters: int = 1, *, grad: bool = True) -> list[torch.Tensor]:
        """Per-layer ``σ`` estimates ``||W u||`` after ``iters`` power steps (from below; with graph if ``grad``)."""
        out = []
        for i, (m, u, shape) in enumerate(self.layers):
            with torch.no_grad():
                for _ in range(iters):
                    u = self._adj(m, self._fwd(m, u), shape)
                    u = u / u.norm().clamp_min(1e-30)
            self.layers[i] = (m, u, shape)
            with torch.set_grad_enabled(grad):
                out.append(self._fwd(m, u).norm())
        return out

    def body(self, iters: int = 1, *, grad: bool = True) -> torch.Tensor:
        """The product estimate of ``L(body)`` (a scalar tensor)."""
        norms = self.norms(iters, grad=grad)
        w = self.head.weight
        prod = torch.ones((), dtype=w.dtype, device=w.device) * self.const
        for n in norms:
            prod = prod * n
        return prod

    def pair_constants(self, iters: int = 1, *, grad: bool = True) -> torch.Tensor:
        """``K`` ``(K, K)``: ``L(body) · ||W_j − W_i||``, zero on the diagonal."""
        with torch.set_grad_enabled(grad):
            body = self.body(iters, grad=grad)
            return body * row_distances(self.head.weight)

    def state(self) -> list[torch.Tensor]:
        """The persistent vectors (to resume a run)."""
        return [u.detach().clone() for _, u, _ in self.layers]

    def load(self, vectors: list[torch.Tensor]) -> None:
        """Restore what :meth:`state` returned."""
        self.layers = [(m, v, s) for (m, _, s), v in zip(self.layers, vectors)]


def row_distances(W: torch.Tensor) -> torch.Tensor:
    """``||W_j − W_i||_2`` ``(K, K)`` for the rows of ``W`` ``(K, n)``: differentiable, zero (no NaN) on the
    diagonal."""
    d = W.unsqueeze(0) - W.unsqueeze(1)
    sq = d.square().sum(-1)
    eye = torch.eye(W.shape[0], dtype=torch.bool, device=W.device)
    return torch.where(eye, torch.zeros_like(sq), sq.masked_fill(eye, 1.0).sqrt())


def bot_logits(logits: torch.Tensor, pairs: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """The ⊥-augmented logits ``(N, K+1)``: ``y_⊥ = max_{i≠j}(y_i + ε · K_ji)``, ``j`` the predicted class.

    ``logits`` ``(N, K)``; ``pairs`` ``(K, K)`` with ``pairs[j, i]`` the constant of ``f_j − f_i``; ``eps`` L2 radius.
    """
    j = logits.detach().argmax(1)
    raised = logits + eps * pairs[j]  # (N, K): y_i + ε K_ji
    raised = raised.masked_fill(F.one_hot(j, logits.shape[1]).bool(), -math.inf)
    return torch.cat([logits, raised.max(1, keepdim=True).values], 1)


def margin_loss(logits: torch.Tensor, y: torch.Tensor, pairs: torch.Tensor, eps: float | torch.Tensor, *,
                loss: str = "trades") -> torch.Tensor:
    """The certified-training term (a scalar): ``ce``: CE of the ⊥ logits; ``trades``: KL(clean ‖ ⊥-augmented).

    ``logits`` ``(N, K)`` with labels ``y`` ``(N,)``; ``pairs`` ``(K, K)``; ``eps`` the current L2 radius.
    """
    aug = bot_logits(logits, pairs, eps)
    if loss == "ce":
        return F.cross_entropy(aug, y)
    logq = F.log_softmax(aug, 1)[:, :-1]
    logp = F.log_softmax(logits, 1)
    return (logp.exp() * (logp - logq)).sum(1).mean()


def ramped_eps(cfg: MarginConfig, step: int, total: int | None) -> float:
    """ε at weight step ``step`` of ``total``: geometric from ``eps_start·ε`` to ``eps_end·ε`` over ``ramp·total``."""
    a, b = cfg.eps_start * cfg.eps, cfg.eps_end * cfg.eps
    if not total or cfg.ramp <= 0:
        return b
    t = min(1.0, step / max(1.0, cfg.ramp * total))
    return math.exp(math.log(a) + t * (math.log(b) - math.log(a)))


class LipschitzMarginRegularizer(Regularizer):
    """``lipschitz-margin``: the GloRo loss through the power-iteration bound (see the module).

    No extra rows: it reads the batch's logits (:meth:`batch_outputs`) and
    returns its term through :meth:`unscaled_penalty` (weight 1, not λ). With
    ``loss="ce"`` the trainer's clean cross-entropy is switched off
    (``data_weight = 0``).
    """

    name = "lipschitz-margin"
    unscaled = True

    def __init__(self, cfg: MarginConfig | None = None, *, seed: int = 0) -> None:
        self.cfg = cfg or MarginConfig()
        self.cfg.validate()
        self.seed = seed
        self.data_weight = 0.0 if self.cfg.loss == "ce" else 1.0
        self.bound: BodyBound | None = None
        self.total: int | None = None
        self._step = 0
        self._term: torch.Tensor | None = None
        self._last_eps = 0.0
        self._last_body = 0.0

    def bind(self, model: nn.Module, in_shape: tuple[int, ...] | None = None) -> None:
        from ...models.specs import input_shape

        spec = getattr(model, "spec", None)
        shape = input_shape(spec) if isinstance(spec, dict) else in_shape
        if shape is None:
            raise RobustclipError("lipschitz-margin needs the model's input shape",
                                  "build the model from a spec, or train it on data (the trainer passes the shape)")
        self.bound = BodyBound(model, shape, seed=self.seed)

    def plan(self, total_steps: int) -> None:
        self.total = total_steps

    def current_eps(self) -> float:
        """The ramped training radius at the current step."""
        return ramped_eps(self.cfg, self._step, self.total)

    def batch_outputs(self, out: torch.Tensor, y: torch.Tensor) -> None:
        assert self.bound is not None, "bind() first"
        pairs = self.bound.pair_constants(self.cfg.power_iters)
        eps = self.current_eps()
        term = margin_loss(out, y, pairs, eps, loss=self.cfg.loss)
        self._term = term * self.cfg.weight if self.cfg.loss == "trades" else term
        self._last_eps = eps
        self._last_body = float(pairs.detach().max())

    def unscaled_penalty(self) -> torch.Tensor | None:
        term, self._term = self._term, None
        return term

    def after_step(self) -> None:
        self._step += 1

    @torch.no_grad()
    def selection_score(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """Validation accuracy certified at ``eps`` by the power-iteration estimate (10 more steps): for model
        selection only, never a certificate. ``x`` ``(N, ...)`` in [0,1], ``y`` ``(N,)``; a fraction."""
        assert self.bound is not None
        pairs = self.bound.pair_constants(10, grad=False)
        hits = 0
        with eval_mode(model):
            for i in range(0, x.shape[0], 2048):
                out = model(x[i : i + 2048])
                aug = bot_logits(out, pairs, self.cfg.eps)
                hits += int((aug.argmax(1) == y[i : i + 2048]).sum())
        return hits / max(1, x.shape[0])

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.cfg)}

    def state_dict(self) -> dict[str, Any]:
        return {"step": self._step, "vectors": self.bound.state() if self.bound else []}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._step = int(state["step"])
        if self.bound is not None and state.get("vectors"):
            self.bound.load(state["vectors"])


def make_margin(params: dict[str, Any], seed: int) -> Regularizer:
    """The registry's factory of ``lipschitz-margin`` (settings: :class:`MarginConfig` fields)."""
    return LipschitzMarginRegularizer(margin_config(params), seed=seed)
