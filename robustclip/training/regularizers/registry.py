"""Regularisers and the λ schedule.

The trainer minimises ``data_loss + λ · penalty`` and knows nothing about any
one method. Each regulariser may ask for extra input rows to pass through the
model beside the batch (CLIP's pairs, or adversarial examples built from the
batch and its labels), returns its unscaled penalty on their outputs, and may
update its own state after the optimiser step. Stateful regularisers save and
restore that state with ``state_dict()`` / ``load_state_dict()``.

Methods live in :data:`REGISTRY`: adding one is one entry. The entry carries its factory, the settings tables it
reads (:data:`SETTINGS`: each with its schema, its CLI flag and its sweep key), its default λ, whether it needs class
labels, and its label in reports; the trainer, ``robustclip train``, sweeps and reports read them from here. A method
with a new kind of settings adds one :class:`Settings` entry too (its values then live in
``TrainConfig.settings[NAME]``). ``tests/test_contracts.py`` runs every entry through the same checks.

Methods: ``none`` (plain training), ``weight`` (``Σ ||W||_F^2``), ``clip``
(the CLIP penalty: the largest difference quotient over a set of input pairs
that chases the steepest directions of the network by gradient ascent), and
the yardsticks ``adversarial`` (PGD adversarial training) and ``trades``
(TRADES), both in :mod:`robustclip.training.regularizers.adversarial`, and the hybrid
``clip-adversarial`` (adversarial training with CLIP's penalty on top); certified
training ``lipschitz-margin`` (GloRo-style, :mod:`robustclip.training.regularizers.lipmargin`) and its
hybrid ``clip-lipschitz-margin``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from ...bounds import lipschitz
from ...core import validate
from ...errors import RobustclipError
from .adversarial import AdversarialConfig, AdversarialRegularizer, make_adversarial, make_trades, parse_config
from .base import Regularizer
from .lipmargin import LipschitzMarginRegularizer, MarginConfig, margin_config


class WeightRegularizer(Regularizer):
    """``Σ ||W||_F^2`` over the weight matrices of every ``nn.Linear`` and the
    kernels of every ``nn.Conv2d``; biases and normalisation constants do not count.
    """

    name = "weight"

    def penalty(self, model: nn.Module, extra_out: torch.Tensor | None) -> torch.Tensor:
        weights = [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        return torch.stack([w.square().sum() for w in weights]).sum()


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
        self.P = lipschitz.init_pairs(x, self.cfg.pairs, mode=self.cfg.init, radius=self.cfg.radius,
                                      generator=self.gen)
        self.eta = torch.full((self.cfg.pairs,), self.cfg.eta, device=x.device)
        self.q_prev = None

    def bind(self, model: nn.Module) -> None:
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
            self.P, _ = lipschitz.pair_ascent(self._model, self.P, steps=self.cfg.ascent_steps - 1, eta=self.eta)
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
        q = lipschitz.quotients_from_outputs(extra_out[:rows], self.P)
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
        self.P = lipschitz.ascent_move(self.P, grad, self.eta)
        self._moves += 1
        if self._moves % 16 == 0:  # collapse is slow (the quotient's denominator is floored): check now and then
            lipschitz.separate(self.P, generator=self.gen)

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


class ClipAdversarialRegularizer(Regularizer):
    """The hybrid ``clip-adversarial``: PGD adversarial training with CLIP's penalty on top.

    The trainer minimises ``CE(f(x), y) + w · CE(f(x_adv), y) + λ · Lip(f)``: ``w`` is the adversarial weight of
    :class:`~robustclip.training.regularizers.adversarial.AdversarialConfig` (1, half clean and half adversarial,
    unless ``share`` says
    otherwise) and does not move with λ, so λ keeps CLIP's meaning and the discrepancy principle still steers it.
    The extra rows are CLIP's pairs ``(2m, *in_shape)`` followed by the batch's PGD examples ``(n, *in_shape)``,
    all in [0, 1]; one epoch costs about one of PGD-AT with the same steps plus CLIP's pair rows.
    """

    name = "clip-adversarial"
    unscaled = True

    def __init__(self, clip: ClipConfig | None = None, adversarial: AdversarialConfig | None = None, *,
                 seed: int = 0) -> None:
        self.clip = ClipRegularizer(clip, seed=seed)
        self.adv = AdversarialRegularizer(adversarial, seed=seed)
        if self.clip.cfg.margin > 0:
            raise RobustclipError("clip-adversarial takes no CLIP margin", "drop margin=..., or use --reg clip")
        self._k = 0
        self._fixed: torch.Tensor | None = None

    def bind(self, model: nn.Module) -> None:
        self.clip.bind(model)
        self.adv.bind(model)

    def extra_inputs(self, x: torch.Tensor, step: int, y: torch.Tensor | None = None) -> torch.Tensor | None:
        """``cat([P, x_adv])``: CLIP's pairs (on its steps) then the PGD examples of batch ``x``."""
        adv = self.adv.extra_inputs(x, step, y)
        assert adv is not None
        pairs = self.clip.extra_inputs(x, step, y)
        self._k = 0 if pairs is None else pairs.shape[0]
        return adv if pairs is None else torch.cat([pairs, adv])

    def penalty(self, model: nn.Module, extra_out: torch.Tensor | None) -> torch.Tensor | None:
        """CLIP's penalty on the pair rows; the adversarial cross-entropy is kept for :meth:`unscaled_penalty`."""
        if extra_out is None:
            self._fixed = None
            return None
        self._fixed = self.adv.penalty(model, extra_out[self._k :])
        return self.clip.penalty(model, extra_out[: self._k]) if self._k else None

    def unscaled_penalty(self) -> torch.Tensor | None:
        """``w · CE(f(x_adv), y)`` of the last step (a scalar ≥ 0 with graph)."""
        fixed, self._fixed = self._fixed, None
        return fixed

    def after_step(self) -> None:
        self.clip.after_step()
        self.adv.after_step()

    def estimate(self) -> float | None:
        return self.clip.estimate()

    def peek(self) -> float | None:
        return self.clip.peek()

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "clip": self.clip.config(), "adversarial": self.adv.config()}

    def state_dict(self) -> dict[str, Any]:
        return self.clip.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clip.load_state_dict(state)


class ClipMarginRegularizer(Regularizer):
    """The hybrid ``clip-lipschitz-margin``: certified training (``lipschitz-margin``) with CLIP's penalty on top.

    The trainer minimises the margin loss (weight 1, see :mod:`robustclip.training.regularizers.lipmargin`) plus
    ``λ · Lip(f)``, CLIP's
    largest difference quotient over its pairs ``(2m, *in_shape)`` (the extra rows), so λ keeps CLIP's meaning.
    """

    name = "clip-lipschitz-margin"
    unscaled = True

    def __init__(self, clip: ClipConfig | None = None, margin: MarginConfig | None = None, *, seed: int = 0) -> None:
        self.clip = ClipRegularizer(clip, seed=seed)
        self.margin = LipschitzMarginRegularizer(margin, seed=seed)
        if self.clip.cfg.margin > 0:
            raise RobustclipError("clip-lipschitz-margin takes no CLIP margin", "drop margin=... from --clip")
        self.data_weight = self.margin.data_weight

    def bind(self, model: nn.Module) -> None:
        self.clip.bind(model)
        self.margin.bind(model)

    def plan(self, total_steps: int) -> None:
        self.margin.plan(total_steps)

    def batch_outputs(self, out: torch.Tensor, y: torch.Tensor) -> None:
        self.margin.batch_outputs(out, y)

    def extra_inputs(self, x: torch.Tensor, step: int, y: torch.Tensor | None = None) -> torch.Tensor | None:
        return self.clip.extra_inputs(x, step, y)

    def penalty(self, model: nn.Module, extra_out: torch.Tensor | None) -> torch.Tensor | None:
        return self.clip.penalty(model, extra_out)

    def unscaled_penalty(self) -> torch.Tensor | None:
        return self.margin.unscaled_penalty()

    def after_step(self) -> None:
        self.clip.after_step()
        self.margin.after_step()

    def selection_score(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float | None:
        return self.margin.selection_score(model, x, y)

    def estimate(self) -> float | None:
        return self.clip.estimate()

    def peek(self) -> float | None:
        return self.clip.peek()

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "clip": self.clip.config(), "margin": self.margin.config()}

    def state_dict(self) -> dict[str, Any]:
        return {"clip": self.clip.state_dict(), "margin": self.margin.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clip.load_state_dict(state["clip"])
        self.margin.load_state_dict(state["margin"])


def _clip_config(params: dict[str, Any]) -> ClipConfig:
    try:
        return ClipConfig(**params)
    except TypeError as exc:
        raise RobustclipError(f"bad CLIP setting: {exc}",
                              f"use fields of ClipConfig: {', '.join(ClipConfig.__dataclass_fields__)}") from None


def _clip_factory(params: dict[str, Any], seed: int) -> Regularizer:
    return ClipRegularizer(_clip_config(params), seed=seed)


def _adversarial_factory(params: dict[str, Any], seed: int) -> Regularizer:
    return make_adversarial(params, seed)


def _trades_factory(params: dict[str, Any], seed: int) -> Regularizer:
    return make_trades(params, seed)


def _hybrid_factory(params: dict[str, Any], seed: int) -> Regularizer:
    bad = sorted(set(params) - {"clip", "adversarial"})
    if bad:
        raise RobustclipError(f"clip-adversarial settings are the tables clip and adversarial, got {bad[0]!r}",
                              "use clip={...} and adversarial={...}")
    return ClipAdversarialRegularizer(_clip_config(dict(params.get("clip") or {})),
                                      parse_config(dict(params.get("adversarial") or {}), "clip-adversarial"),
                                      seed=seed)


def _margin_factory(params: dict[str, Any], seed: int) -> Regularizer:
    return LipschitzMarginRegularizer(margin_config(params), seed=seed)


def _clip_margin_factory(params: dict[str, Any], seed: int) -> Regularizer:
    bad = sorted(set(params) - {"clip", "margin"})
    if bad:
        raise RobustclipError(f"clip-lipschitz-margin settings are the tables clip and margin, got {bad[0]!r}",
                              "use clip={...} and margin={...}")
    return ClipMarginRegularizer(_clip_config(dict(params.get("clip") or {})),
                                 margin_config(dict(params.get("margin") or {})), seed=seed)


@dataclass(frozen=True)
class Settings:
    """One table of regulariser settings: where it lives and how users set it.

    The table's name (its key in :data:`SETTINGS`) is the :class:`~robustclip.training.trainer.TrainConfig` field and
    the
    sweep files' ``[[method]]`` key that hold it (``TrainConfig.settings[NAME]`` when the config has no such field);
    ``flag`` is its repeatable ``KEY=VALUE`` option of ``robustclip train``; ``schema`` the dataclass whose fields are
    its keys; ``example`` one ``KEY=VALUE`` for error messages; ``help`` the option's help text.
    """

    flag: str
    schema: type
    example: str
    help: str

    @property
    def keys(self) -> tuple[str, ...]:
        """The setting names the schema accepts."""
        return tuple(self.schema.__dataclass_fields__)  # type: ignore[attr-defined]


SETTINGS: dict[str, Settings] = {
    "clip": Settings("--clip", ClipConfig, "pairs=32",
                     "CLIP setting, repeatable: pairs, init, radius, ascent_steps, eta, reduce, cap, refresh_every, "
                     "every, margin (an L2 radius: Lipschitz-margin training for certificates)"),
    "adversarial": Settings("--adv", AdversarialConfig, "eps=2",
                            "adversarial / trades setting, repeatable: norm (L2, Linf), eps, steps (1..100), "
                            "step_size, random_start, share (λ = s/(1-s))"),
    "margin": Settings("--margin", MarginConfig, "eps=1.58",
                       "lipschitz-margin setting (certified training), repeatable: eps (L2 radius, default 1.58), "
                       "loss (trades, ce), weight (TRADES KL weight, 1.5), eps_start, eps_end, ramp, power_iters"),
}
"""Every settings table a regulariser may read, by name."""


@dataclass(frozen=True)
class RegularizerEntry:
    """One method of the registry.

    ``factory(params, seed)`` builds it; ``params_field`` names the :data:`SETTINGS` table that holds its settings, or
    None; a hybrid names a tuple of tables and its factory gets ``{table: settings}``; ``takes_lam`` says whether λ
    means anything for it; ``default_lam`` is λ when a user gives none (``robustclip train``); ``needs_labels``: it
    trains on class labels (no regression); ``label``: its name in reports; ``doc``: one line for ``--help``.
    """

    factory: Callable[[dict[str, Any], int], Regularizer]
    params_field: str | tuple[str, ...] | None = None
    takes_lam: bool = True
    doc: str = ""
    label: str = ""
    default_lam: float = 0.0
    needs_labels: bool = False

    @property
    def fields(self) -> tuple[str, ...]:
        """The TrainConfig fields holding this method's settings (empty when it has none)."""
        if self.params_field is None:
            return ()
        return (self.params_field,) if isinstance(self.params_field, str) else self.params_field


# Default λ: CLIP λ = 0.2 with ClipConfig's defaults, chosen on validation data for robustness per second at <= 0.5
# points of clean validation accuracy lost (benchmarks/tune_defaults.py); adversarial λ = 1 is half clean, half
# adversarial; TRADES' β = 1 is its paper's mildest; the CLIP + certified-training hybrid's λ = 0.1 is a starting
# point, not tuned (robustclip/presets/certified-cpu.toml sweeps 0.01 and 0.05).
REGISTRY: dict[str, RegularizerEntry] = {
    "none": RegularizerEntry(lambda p, s: Regularizer(), takes_lam=False, doc="plain training",
                             label="no regularisation"),
    "weight": RegularizerEntry(lambda p, s: WeightRegularizer(), doc="λ·Σ‖W‖² over Linear and Conv2d weights",
                               label="weight regularisation", default_lam=1e-4),
    "clip": RegularizerEntry(_clip_factory, params_field="clip", doc="CLIP: λ·(largest difference quotient)",
                             label="CLIP", default_lam=0.2),
    "adversarial": RegularizerEntry(_adversarial_factory, params_field="adversarial",
                                    doc="PGD adversarial training: λ·CE(f(x_adv), y); λ = s/(1-s) for a share s",
                                    label="adversarial training", default_lam=1.0, needs_labels=True),
    "trades": RegularizerEntry(_trades_factory, params_field="adversarial",
                               doc="TRADES: β·KL(f(x) ‖ f(x_adv)) with β = λ, the adversary maximising the KL",
                               label="TRADES", default_lam=1.0, needs_labels=True),
    "clip-adversarial": RegularizerEntry(_hybrid_factory, params_field=("clip", "adversarial"),
                                         doc="hybrid: PGD adversarial training plus λ·(CLIP's largest quotient)",
                                         label="CLIP + adversarial training", default_lam=0.3, needs_labels=True),
    "lipschitz-margin": RegularizerEntry(_margin_factory, params_field="margin", takes_lam=False,
                                         doc="certified training (GloRo-style): the ⊥-logit loss through a "
                                             "power-iteration Lipschitz bound, ε ramped",
                                         label="certified training (Lipschitz margin)", needs_labels=True),
    "clip-lipschitz-margin": RegularizerEntry(_clip_margin_factory, params_field=("clip", "margin"),
                                              doc="hybrid: certified training plus λ·(CLIP's largest quotient)",
                                              label="CLIP + certified training", default_lam=0.1,
                                              needs_labels=True),
}
REGULARIZERS = tuple(REGISTRY)


def users(table: str) -> tuple[str, ...]:
    """The methods of :data:`REGISTRY` that read the settings table ``table``."""
    return tuple(name for name, e in REGISTRY.items() if table in e.fields)


def make(name: str, *, seed: int = 0, **params: Any) -> Regularizer:
    """Build the regulariser ``name`` of :data:`REGISTRY` with its settings ``params``.

    Example:
        >>> make("clip", pairs=4).cfg.pairs
        4
    """
    entry = REGISTRY.get(name)
    if entry is None:
        raise RobustclipError(f"unknown regulariser {name!r}", f"use one of {', '.join(REGISTRY)}")
    if params and entry.params_field is None:
        raise RobustclipError(f"regulariser {name!r} takes no settings, got {sorted(params)}", "drop them")
    return entry.factory(dict(params), seed)


# --------------------------------------------------------------------------- λ schedule


@dataclass
class LambdaSchedule:
    """λ per epoch: fixed, or the paper's discrepancy principle.

    Epochs ``0 .. warmup-1`` train at λ = 0. From epoch ``warmup`` on, λ starts
    at ``lam``. With a target accuracy τ (``target``), after every ``every``-th
    epoch λ rises by ``step`` if the epoch's training accuracy is ≥ τ and falls
    by ``step`` (never below 0) otherwise. Without τ, λ stays fixed.
    ``history`` holds the λ used in each epoch.
    """

    lam: float = 0.0
    target: float | None = None
    step: float = 0.01
    every: int = 1
    warmup: int = 0
    history: list[float] = field(default_factory=list)
    _current: float | None = None

    def __post_init__(self) -> None:
        num = validate.number
        num(self.lam, "--lam (λ)", lo=0, fix="pass e.g. --lam 0.1")
        if self.target is not None:
            num(self.target, "--target-acc (τ)", lo=0, lo_open=True, hi=1, fix="pass e.g. --target-acc 0.97")
        num(self.step, "--lam-step", lo=0, fix="pass e.g. --lam-step 0.01")
        num(self.every, "--lam-every", integer=True, lo=1, fix="pass e.g. --lam-every 1")
        num(self.warmup, "warm-up (--warmup)", integer=True, lo=0, fix="pass e.g. --warmup 2")

    def value(self, epoch: int) -> float:
        """λ to use in ``epoch`` (0-based); records it in ``history``."""
        if epoch < self.warmup:
            lam = 0.0
        else:
            if self._current is None:
                self._current = self.lam
            lam = self._current
        if len(self.history) <= epoch:
            self.history.append(lam)
        return lam

    def update(self, epoch: int, train_acc: float | None) -> None:
        """Apply the discrepancy rule after ``epoch`` with its training accuracy."""
        if self.target is None or epoch < self.warmup or self._current is None:
            return
        if (epoch - self.warmup + 1) % self.every:
            return
        if train_acc is not None and train_acc >= self.target:
            self._current = self._current + self.step
        else:
            self._current = max(0.0, self._current - self.step)

    @property
    def final(self) -> float:
        return self._current if self._current is not None else 0.0

    def config(self) -> dict[str, Any]:
        return {"lam": self.lam, "target": self.target, "step": self.step, "every": self.every, "warmup": self.warmup}
