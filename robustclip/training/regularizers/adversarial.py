"""Adversarial training and TRADES: the field's standard defences, as regularisers of the registry.

Both fit the regulariser protocol the trainer drives (see
:class:`robustclip.training.regularizers.registry.Regularizer`) with no
special case in the trainer:

* ``adversarial`` (PGD adversarial training, Madry et al.): ``extra_inputs(x, step, y)`` builds PGD examples of the
  batch with the bound model through torchattacks (the model in eval mode during the attack and restored after;
  every row stays in [0, 1]); ``penalty`` is the cross-entropy on them. The trainer minimises
  ``CE(f(x), y) + λ · CE(f(x_adv), y)``.
* ``trades`` (Zhang et al., 2019): the adversary maximises ``KL(f(x) ‖ f(x_adv))`` inside the ε-ball; the extra
  rows are the clean batch followed by its adversarial twins, and ``penalty`` is that KL divergence (mean over
  the batch), so the trainer minimises ``CE(f(x), y) + β · KL`` with ``β = λ``.

From a "share s of adversarial examples" to λ: the usual mix ``(1 - s) · CE(clean) + s · CE(adv)`` equals
``(1 - s) · (CE(clean) + s / (1 - s) · CE(adv))``, so ``λ = s / (1 - s)`` gives the same minimiser and the same
direction of every step (the learning rate is scaled by ``1 - s``). Half clean and half adversarial (s = 0.5) is
λ = 1; s = 0.75 is λ = 3. Either give λ, or give ``share`` in the settings and leave λ at 1: the penalty is then
multiplied by ``s / (1 - s)``.

Settings (the ``adversarial`` field of :class:`~robustclip.training.trainer.TrainConfig`, ``--adv KEY=VALUE`` on the
command line, ``adversarial = {...}`` in a sweep method) are :class:`AdversarialConfig`'s fields.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torchattacks
from torch import nn

from ...attacks import shapes
from ...errors import RobustclipError
from .base import Regularizer

MAX_STEPS = 100  # an inner attack is paid for on every weight step: more than this is almost surely a typo
NORMS = ("L2", "Linf")


@dataclass
class AdversarialConfig:
    """Settings of the inner attack of adversarial training and TRADES.

    norm: ``L2`` or ``Linf``. eps: radius of the ball around each training image, in that norm (L2: at most
    ``sqrt(784) = 28``, the diameter-ish scale of an MNIST image; Linf: at most 1). steps: PGD steps per weight step,
    1..100. step_size: PGD step (default ``2.5 · eps / steps``, Madry et al.'s rule). random_start: start from a
    random point of the ball (PGD) instead of the clean image. share: optional share s in (0, 1) of the adversarial
    loss in a ``(1 - s) · clean + s · adversarial`` mix; the penalty is then scaled by ``s / (1 - s)`` (use λ = 1).
    """

    norm: str = "L2"
    eps: float = 2.0
    steps: int = 7
    step_size: float | None = None
    random_start: bool = True
    share: float | None = None

    def validate(self) -> None:
        """Raise :class:`RobustclipError` for a setting out of range."""
        fix = "e.g. --adv norm=L2 --adv eps=2 --adv steps=7"
        if self.norm not in NORMS:
            raise RobustclipError(f"adversarial norm must be L2 or Linf, got {self.norm!r}", fix)
        limit = 1.0 if self.norm == "Linf" else 28.0
        if not _is_num(self.eps) or not 0 < self.eps <= limit:
            raise RobustclipError(f"adversarial eps must be a finite number in (0, {limit:g}] for {self.norm}, "
                                  f"got {self.eps!r}", fix)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise RobustclipError(f"adversarial steps must be a whole number in 1..{MAX_STEPS}, got {self.steps!r}",
                                  "use e.g. steps=7 (every weight step pays for these)")
        if self.step_size is not None and (not _is_num(self.step_size) or self.step_size <= 0):
            raise RobustclipError(f"adversarial step_size must be a finite number > 0, got {self.step_size!r}",
                                  "drop it for the default 2.5·eps/steps")
        if not isinstance(self.random_start, bool):
            raise RobustclipError(f"adversarial random_start must be true or false, got {self.random_start!r}",
                                  "use random_start=true or random_start=false")
        if self.share is not None and (not _is_num(self.share) or not 0 < self.share < 1):
            raise RobustclipError(f"adversarial share must be a number in (0, 1), got {self.share!r}",
                                  "use e.g. share=0.5 (half clean, half adversarial), or drop it and set λ")

    @property
    def alpha(self) -> float:
        """The PGD step actually used."""
        return float(self.step_size) if self.step_size is not None else 2.5 * float(self.eps) / self.steps

    @property
    def scale(self) -> float:
        """Factor on the penalty: ``s / (1 - s)`` with a share s, else 1."""
        return 1.0 if self.share is None else self.share / (1.0 - self.share)


def _is_num(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def parse_config(params: dict[str, Any], what: str) -> AdversarialConfig:
    """``params`` (as given by the user) as a validated :class:`AdversarialConfig`; ``what`` names the method."""
    try:
        cfg = AdversarialConfig(**params)
    except TypeError:
        bad = sorted(set(params) - set(AdversarialConfig.__dataclass_fields__))
        raise RobustclipError(f"unknown {what} setting {bad[0] if bad else params!r}",
                              f"use fields of AdversarialConfig: {', '.join(AdversarialConfig.__dataclass_fields__)}"
                              ) from None
    cfg.validate()
    return cfg


def _expand(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-row vector ``(n,)`` shaped to broadcast over ``like`` ``(n, ...)``."""
    return v.view(-1, *([1] * (like.dim() - 1)))


class KLPGD(torchattacks.attack.Attack):
    """TRADES' inner maximiser: PGD on ``KL(f(x) ‖ f(x'))`` over the L2 or L∞ ball of radius ``eps``.

    Works on inputs of any shape ``(n, ...)`` in [0, 1] and returns ``(n, ...)`` in [0, 1] within ``eps`` of the
    input. As TRADES does, the start is the clean image plus tiny Gaussian noise (σ = 0.001), since the KL's gradient
    vanishes at ``x' = x``. Labels are not used.
    """

    def __init__(self, model: nn.Module, eps: float, alpha: float, steps: int, norm: str = "L2",
                 generator: torch.Generator | None = None) -> None:
        super().__init__("KLPGD", model)
        self.eps, self.alpha, self.steps, self.norm = eps, alpha, steps, norm
        self.generator = generator
        self.supported_mode = ["default"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = images.clone().detach().to(self.device)
        with torch.no_grad():
            p_clean = F.softmax(self.get_logits(x), dim=1)
        noise = torch.randn(x.shape, generator=self.generator).to(x.device)
        adv = (x + 0.001 * noise).clamp(0, 1)
        for _ in range(self.steps):
            adv.requires_grad_(True)
            kl = F.kl_div(F.log_softmax(self.get_logits(adv), dim=1), p_clean, reduction="sum")
            (grad,) = torch.autograd.grad(kl, adv)
            with torch.no_grad():
                if self.norm == "Linf":
                    adv = adv + self.alpha * grad.sign()
                    delta = (adv - x).clamp(-self.eps, self.eps)
                else:
                    g = grad / _expand(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)
                    delta = adv + self.alpha * g - x
                    norms = delta.flatten(1).norm(dim=1)
                    delta = delta * _expand((self.eps / norms.clamp_min(1e-12)).clamp(max=1.0), delta)
                adv = (x + delta).clamp(0, 1)
        return adv.detach()


class AdversarialRegularizer(Regularizer):
    """PGD adversarial training: penalty ``CE(f(x_adv), y)`` (mean over the batch; × ``s/(1-s)`` with a share).

    Per weight step: ``steps`` forward and backward passes of the batch for the attack, then one extra forward
    and backward pass of the ``n`` adversarial rows ``(n, *in_shape)``, all in [0, 1].
    """

    name = "adversarial"

    def __init__(self, cfg: AdversarialConfig | None = None, *, seed: int = 0) -> None:
        self.cfg = cfg or AdversarialConfig()
        self.cfg.validate()
        self.seed = seed
        self._model: nn.Module | None = None
        self._y: torch.Tensor | None = None
        self._attack: torchattacks.attack.Attack | None = None

    def bind(self, model: nn.Module, in_shape: tuple[int, ...] | None = None) -> None:
        self._model = model
        self._attack = None

    def _labels(self, y: torch.Tensor | None) -> torch.Tensor:
        if y is None or y.is_floating_point():
            raise RobustclipError(f"--reg {self.name} needs class labels; this data has none (regression?)",
                                  "use --reg weight or --reg clip for regression")
        return y

    def build_attack(self, model: nn.Module) -> torchattacks.attack.Attack:
        """The torchattacks PGD (L2: ``PGDL2``, L∞: ``PGD``) of these settings on ``model``."""
        c = self.cfg
        cls = torchattacks.PGD if c.norm == "Linf" else torchattacks.PGDL2
        return cls(model, eps=float(c.eps), alpha=c.alpha, steps=c.steps, random_start=c.random_start)

    def extra_inputs(self, x: torch.Tensor, step: int, y: torch.Tensor | None = None) -> torch.Tensor | None:
        """PGD examples ``(n, *in_shape)`` in [0, 1] of batch ``x`` ``(n, *in_shape)`` with labels ``y`` ``(n,)``."""
        y = self._labels(y)
        if self._model is None:
            raise RobustclipError(f"--reg {self.name}: no model bound", "call bind(model) before the first step")
        if x.dim() < 2:
            raise RobustclipError(f"--reg {self.name} needs batches (n, ...), got shape {tuple(x.shape)}",
                                  "give one sample per row")
        if self._attack is None:  # torchattacks assumes (n, c, h, w): other inputs are attacked through the image view
            self._attack = self.build_attack(shapes.attack_model(self._model, tuple(x.shape[1:])))
        self._y = y
        return self._attack(shapes.to_view(x.detach()), y).detach().reshape(x.shape)

    def penalty(self, model: nn.Module, extra_out: torch.Tensor | None) -> torch.Tensor | None:
        """Cross-entropy (a scalar ≥ 0 with graph) of the adversarial logits ``(n, k)`` against the labels."""
        if extra_out is None or self._y is None:
            return None
        loss = F.cross_entropy(extra_out, self._y)
        return loss * self.cfg.scale if self.cfg.share is not None else loss

    def after_step(self) -> None:
        self._y = None

    def config(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.cfg), "alpha": self.cfg.alpha}


class TradesRegularizer(AdversarialRegularizer):
    """TRADES: penalty ``KL(f(x) ‖ f(x_adv))`` (mean over the batch), the adversary maximising that same KL.

    The extra rows are ``cat([x, x_adv])`` ``(2n, *in_shape)`` in [0, 1], so the penalty has the clean outputs
    with their graph; β of the paper is λ (they use β = 1 to 6). ``share`` rescales as for ``adversarial``.
    """

    name = "trades"

    def __init__(self, cfg: AdversarialConfig | None = None, *, seed: int = 0) -> None:
        super().__init__(cfg, seed=seed)
        self.gen = torch.Generator().manual_seed(seed + 104729)
        self._n = 0

    def build_attack(self, model: nn.Module) -> torchattacks.attack.Attack:
        c = self.cfg
        return KLPGD(model, eps=float(c.eps), alpha=c.alpha, steps=c.steps, norm=c.norm, generator=self.gen)

    def extra_inputs(self, x: torch.Tensor, step: int, y: torch.Tensor | None = None) -> torch.Tensor | None:
        """``cat([x, x_adv])`` ``(2n, *in_shape)`` in [0, 1]."""
        adv = super().extra_inputs(x, step, y)
        assert adv is not None
        self._n = x.shape[0]
        return torch.cat([x.detach(), adv])

    def penalty(self, model: nn.Module, extra_out: torch.Tensor | None) -> torch.Tensor | None:
        """``KL(softmax f(x) ‖ softmax f(x_adv))``, mean over the n rows (a scalar ≥ 0 with graph)."""
        if extra_out is None or self._y is None:
            return None
        clean, adv = extra_out[: self._n], extra_out[self._n :]
        kl = F.kl_div(F.log_softmax(adv, dim=1), F.softmax(clean, dim=1), reduction="batchmean")
        return kl * self.cfg.scale if self.cfg.share is not None else kl

    def state_dict(self) -> dict[str, Any]:
        """The generator of the attack's start noise (to resume a run exactly)."""
        return {"gen": self.gen.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "gen" in state:
            self.gen.set_state(state["gen"])


def make_adversarial(params: dict[str, Any], seed: int) -> Regularizer:
    """The ``adversarial`` entry's factory."""
    return AdversarialRegularizer(parse_config(params, "adversarial"), seed=seed)


def make_trades(params: dict[str, Any], seed: int) -> Regularizer:
    """The ``trades`` entry's factory."""
    return TradesRegularizer(parse_config(params, "trades"), seed=seed)
