"""The hybrids: CLIP's penalty on top of PGD adversarial training (``clip-adversarial``) or of certified training
(``clip-lipschitz-margin``), with their factories."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...errors import RobustclipError
from .adversarial import AdversarialConfig, AdversarialRegularizer, parse_config
from .base import Regularizer
from .clip import ClipConfig, ClipRegularizer, clip_config
from .lipmargin import LipschitzMarginRegularizer, MarginConfig, margin_config


class _ClipHybrid(Regularizer):
    """What both hybrids share: CLIP (``self.clip``) beside another method (``self.other``), both bound to the model
    and stepped after each optimiser step; λ scales CLIP's penalty alone, and the estimate is CLIP's."""

    unscaled = True
    clip: ClipRegularizer
    other: Regularizer

    def _check_margin(self, fix: str) -> None:
        if self.clip.cfg.margin > 0:
            raise RobustclipError(f"{self.name} takes no CLIP margin", fix)

    def bind(self, model: nn.Module, in_shape: tuple[int, ...] | None = None) -> None:
        self.clip.bind(model, in_shape)
        self.other.bind(model, in_shape)

    def after_step(self) -> None:
        self.clip.after_step()
        self.other.after_step()

    def estimate(self) -> float | None:
        return self.clip.estimate()

    def peek(self) -> float | None:
        return self.clip.peek()


class ClipAdversarialRegularizer(_ClipHybrid):
    """The hybrid ``clip-adversarial``: PGD adversarial training with CLIP's penalty on top.

    The trainer minimises ``CE(f(x), y) + w · CE(f(x_adv), y) + λ · Lip(f)``: ``w`` is the adversarial weight of
    :class:`~robustclip.training.regularizers.adversarial.AdversarialConfig` (1, half clean and half adversarial,
    unless ``share`` says
    otherwise) and does not move with λ, so λ keeps CLIP's meaning and the discrepancy principle still steers it.
    The extra rows are CLIP's pairs ``(2m, *in_shape)`` followed by the batch's PGD examples ``(n, *in_shape)``,
    all in [0, 1]; one epoch costs about one of PGD-AT with the same steps plus CLIP's pair rows.
    """

    name = "clip-adversarial"

    def __init__(self, clip: ClipConfig | None = None, adversarial: AdversarialConfig | None = None, *,
                 seed: int = 0) -> None:
        self.clip = ClipRegularizer(clip, seed=seed)
        self.adv = self.other = AdversarialRegularizer(adversarial, seed=seed)
        self._check_margin("drop margin=..., or use --reg clip")
        self._k = 0
        self._fixed: torch.Tensor | None = None

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

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "clip": self.clip.config(), "adversarial": self.adv.config()}

    def state_dict(self) -> dict[str, Any]:
        return self.clip.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clip.load_state_dict(state)


class ClipMarginRegularizer(_ClipHybrid):
    """The hybrid ``clip-lipschitz-margin``: certified training (``lipschitz-margin``) with CLIP's penalty on top.

    The trainer minimises the margin loss (weight 1, see :mod:`robustclip.training.regularizers.lipmargin`) plus
    ``λ · Lip(f)``, CLIP's
    largest difference quotient over its pairs ``(2m, *in_shape)`` (the extra rows), so λ keeps CLIP's meaning.
    """

    name = "clip-lipschitz-margin"

    def __init__(self, clip: ClipConfig | None = None, margin: MarginConfig | None = None, *, seed: int = 0) -> None:
        self.clip = ClipRegularizer(clip, seed=seed)
        self.margin = self.other = LipschitzMarginRegularizer(margin, seed=seed)
        self._check_margin("drop margin=... from --clip")
        self.data_weight = self.margin.data_weight

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

    def selection_score(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float | None:
        return self.margin.selection_score(model, x, y)

    def config(self) -> dict[str, Any]:
        return {"name": self.name, "clip": self.clip.config(), "margin": self.margin.config()}

    def state_dict(self) -> dict[str, Any]:
        return {"clip": self.clip.state_dict(), "margin": self.margin.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.clip.load_state_dict(state["clip"])
        self.margin.load_state_dict(state["margin"])


def _tables(params: dict[str, Any], name: str, other: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A hybrid's settings ``{"clip": {...}, other: {...}}`` split into its two tables (each may be missing)."""
    bad = sorted(set(params) - {"clip", other})
    if bad:
        raise RobustclipError(f"{name} settings are the tables clip and {other}, got {bad[0]!r}",
                              f"use clip={{...}} and {other}={{...}}")
    return dict(params.get("clip") or {}), dict(params.get(other) or {})


def make_clip_adversarial(params: dict[str, Any], seed: int) -> Regularizer:
    """The registry's factory of ``clip-adversarial`` (settings: the tables ``clip`` and ``adversarial``)."""
    clip, adversarial = _tables(params, "clip-adversarial", "adversarial")
    return ClipAdversarialRegularizer(clip_config(clip), parse_config(adversarial, "clip-adversarial"), seed=seed)


def make_clip_margin(params: dict[str, Any], seed: int) -> Regularizer:
    """The registry's factory of ``clip-lipschitz-margin`` (settings: the tables ``clip`` and ``margin``)."""
    clip, margin = _tables(params, "clip-lipschitz-margin", "margin")
    return ClipMarginRegularizer(clip_config(clip), margin_config(margin), seed=seed)
