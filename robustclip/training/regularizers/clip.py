"""CLIP's regulariser (``--reg clip``): the largest difference quotient over an adaptive pair set, its settings
(:class:`ClipConfig`) and its factory. The pair geometry lives in :mod:`robustclip.bounds.pairs`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ...bounds import pairs as pairs_mod
from ...core import validate
from ...errors import RobustclipError
from .base import Regularizer


@dataclass
class ClipConfig:
    """Settings of the CLIP regulariser.

    The defaults (64 pairs drawn 2.0 apart in L2, redrawn every 20 steps, the penalty on every step) were chosen on
    validation data for robustness per second of training on the paper's MNIST net (``benchmarks/tune_defaults.py``;
    with λ = 0.2 in the CLI); the first release's cheaper ones (16 pairs, radius 0.5, redrawn every 200 steps, every
    2nd step) bought a third of the robustness for about half the extra cost.

    pairs: number m of pairs in X_Lip. init: ``partial_random``, ``plain`` or
    ``noise`` (see :func:`robustclip.bounds.lipschitz.init_pairs`). radius: L2 distance
    of ``partial_random`` pairs. ascent_steps: ascent moves of the pairs per
    weight step; the first is fused with the weight step, further ones run
    before it on the current weights. eta: initial ascent step (L2, per pair),
    grown ×1.2 when a pair's quotient rose since the last step and halved when
    it fell. reduce: ``max`` (the paper) or ``mean``. cap: skip the penalty
    in a step whose largest quotient exceeds it. refresh_every: redraw the pairs
    from the current batch every this many steps. margin: an L2 radius r > 0 turns
    on Lipschitz-margin training (Tsuzuku et al. 2018; GloRo nets, Leino et al.
    2021) with CLIP's own estimate: the batch also passes through the model, and
    the penalty adds the cross-entropy of its logits with every wrong class
    raised by ``√2 · r · q_max`` (q_max the largest quotient, with its gradient),
    which asks for a logit margin that would certify radius r if q_max were the
    Lipschitz constant. every: apply the penalty (and move the pairs) every k-th
    step only, scaled by k so the average strength is λ.
    """

    pairs: int = 64
    init: str = "partial_random"
    radius: float = 2.0
    ascent_steps: int = 1
    eta: float = 0.1
    reduce: str = "max"
    cap: float = 1e4
    refresh_every: int = 20
    every: int = 1
    margin: float = 0.0

    def validate(self) -> None:
        """Every setting of the right type, finite and in range (``--clip radius=nan`` must not turn CLIP off)."""
        num = validate.number
        num(self.pairs, "CLIP pairs", integer=True, lo=1, hi=100_000, fix="use e.g. pairs=16")
        if not isinstance(self.init, str) or self.init not in ("plain", "partial_random", "noise"):
            raise RobustclipError(f"unknown CLIP pair init {self.init!r:.80}", "use plain, partial_random or noise")
        if not isinstance(self.reduce, str) or self.reduce not in ("max", "mean"):
            raise RobustclipError(f"unknown CLIP reduction {self.reduce!r:.80}", "use max or mean")
        for key in ("ascent_steps", "refresh_every", "every"):
            num(getattr(self, key), f"CLIP {key}", integer=True, lo=1, hi=1_000_000, fix=f"set {key} to 1 or more")
        for key in ("eta", "radius", "cap"):
            num(getattr(self, key), f"CLIP {key}", lo=0, lo_open=True,
                fix="use the default or a positive finite value")
        num(self.margin, "CLIP margin", lo=0, hi=100, fix="use 0 (off) or the L2 radius to train for, e.g. margin=1.58")


# Weight of the non-maximal pairs in the "max" penalty. It lets the single
# backward pass deliver an ascent direction for every pair (each direction is
# normalised per pair, so its scale is irrelevant), while the weights feel the
# other pairs 10^4 times less than the maximal one: the penalty is max(q) up to
# a relative 1e-4, far below the noise of a stochastic gradient.
_TIE = 1e-4


class ClipRegularizer(Regularizer):
    """CLIP: penalise the largest difference quotient over an adaptive pair set.

    Per weight step (cost: ``2·pairs`` extra rows in the forward and backward
    pass the batch needs anyway):

    1. the pairs ``P`` ``(2m, ...)`` go through the model beside the batch;
    2. the penalty is ``max_i q_i`` (or the mean), and its backward pass also
       yields each pair's gradient;
    3. after the optimiser step each pair moves by its adaptive step along its
       normalised gradient (projected to [0,1], kept apart so ``x != x'``).

    So the pairs used at step t+1 have ascended on the weights of step t: the
    paper's "ascend, then descend" with a one-step lag, for half the cost.
    """

    name = "clip"

    def __init__(self, cfg: ClipConfig | None = None, *, seed: int = 0) -> None:
        self.cfg = cfg or ClipConfig()
        self.cfg.validate()
        self.gen = torch.Generator().manual_seed(seed + 7919)
        self.P: torch.Tensor | None = None
        self.eta: torch.Tensor | None = None
        self.q_prev: torch.Tensor | None = None
        self._active = False
        self._max_seen = 0.0
        self._skipped = 0
        self._moves = 0
        self._skip = False
        self._model: nn.Module | None = None
        self._y: torch.Tensor | None = None

    def reset(self, x: torch.Tensor) -> None:
        """Draw a fresh pair set from data ``x`` ``(N, ...)``."""
        self.P = pairs_mod.init_pairs(x, self.cfg.pairs, mode=self.cfg.init, radius=self.cfg.radius,
                                      generator=self.gen)
        self.eta = torch.full((self.cfg.pairs,), self.cfg.eta, device=x.device)
        self.q_prev = None

    def bind(self, model: nn.Module, in_shape: tuple[int, ...] | None = None) -> None:
        """Tell the regulariser which model it serves (for extra ascent steps)."""
        self._model = model

    def extra_inputs(self, x: torch.Tensor, step: int, y: torch.Tensor | None = None) -> torch.Tensor | None:
        self._active = step % self.cfg.every == 0
        if not self._active:
            return None
        if self.P is None or step % self.cfg.refresh_every == 0:
            self.reset(x)
        assert self.P is not None and self.eta is not None
        if self.cfg.ascent_steps > 1 and self._model is not None:
            self.P, _ = pairs_mod.pair_ascent(self._model, self.P, steps=self.cfg.ascent_steps - 1, eta=self.eta)
        self.P.requires_grad_(True)
        if self.cfg.margin > 0 and y is not None:
            self._y = y
            return torch.cat([self.P, x.detach()])
        self._y = None
        return self.P

    def penalty(self, model: nn.Module, extra_out: torch.Tensor | None) -> torch.Tensor | None:
        if not self._active or extra_out is None:
            return None
        assert self.P is not None
        rows = self.P.shape[0]
        q = pairs_mod.quotients_from_outputs(extra_out[:rows], self.P)
        self._q = q.detach()
        qmax_t = q.max()
        qmax = qmax_t.item()
        if qmax > self._max_seen:
            self._max_seen = qmax
        if not math.isfinite(qmax) or qmax > self.cfg.cap:
            self._skipped += 1  # unstable pairs: no penalty now, redraw them next step
            self._skip = True
            return None
        self._skip = False
        pen = q.mean() if self.cfg.reduce == "mean" else qmax_t + _TIE * q.sum()
        if self._y is not None:
            logits = extra_out[rows:]
            wrong = 1.0 - nn.functional.one_hot(self._y, logits.shape[1]).to(logits.dtype)
            pen = pen + nn.functional.cross_entropy(logits + math.sqrt(2.0) * self.cfg.margin * qmax_t * wrong,
                                                    self._y)
        return pen * self.cfg.every if self.cfg.every > 1 else pen

    def after_step(self) -> None:
        if not self._active or self.P is None:
            return
        P, grad = self.P, self.P.grad
        self.P = P.detach()
        if grad is None or self._skip:  # penalty skipped by the cap: redraw from the next batch
            self.P = None
            return
        assert self.eta is not None
        if self.q_prev is not None:
            up = self._q > self.q_prev
            self.eta = torch.where(up, self.eta * 1.2, self.eta * 0.5).clamp_(1e-4, 2.0)
        self.q_prev = self._q
        self.P = pairs_mod.ascent_move(self.P, grad, self.eta)
        self._moves += 1
        if self._moves % 16 == 0:  # collapse is slow (the quotient's denominator is floored): check now and then
            pairs_mod.separate(self.P, generator=self.gen)

    def estimate(self) -> float | None:
        v, self._max_seen = self._max_seen, 0.0
        return v

    def peek(self) -> float | None:
        return self._max_seen or None

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.cfg)}

    def state_dict(self) -> dict[str, Any]:
        """Pairs, step sizes, last quotients, counters and the generator state: enough to resume exactly."""
        return {"P": None if self.P is None else self.P.detach().clone(),
                "eta": None if self.eta is None else self.eta.clone(),
                "q_prev": None if self.q_prev is None else self.q_prev.clone(),
                "gen": self.gen.get_state(), "max_seen": self._max_seen, "skipped": self._skipped,
                "moves": self._moves}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.P, self.eta, self.q_prev = state["P"], state["eta"], state["q_prev"]
        self.gen.set_state(state["gen"])
        self._max_seen, self._skipped, self._moves = state["max_seen"], state["skipped"], state["moves"]


def clip_config(params: dict[str, Any]) -> ClipConfig:
    """A :class:`ClipConfig` from a settings dict (``--clip KEY=VALUE``); unknown keys are a one-line error."""
    try:
        return ClipConfig(**params)
    except TypeError as exc:
        raise RobustclipError(f"bad CLIP setting: {exc}",
                              f"use fields of ClipConfig: {', '.join(ClipConfig.__dataclass_fields__)}") from None


def make_clip(params: dict[str, Any], seed: int) -> Regularizer:
    """The registry's factory of ``clip``."""
    return ClipRegularizer(clip_config(params), seed=seed)
