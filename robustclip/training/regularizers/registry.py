"""The regulariser registry: every training method, one :class:`RegularizerEntry` each, and its settings tables.

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
hybrid ``clip-lipschitz-margin``. Each method's code lives in its own module (``weight``, ``clip``, ``adversarial``,
``lipmargin``, ``hybrid``); this module is the table of entries (the λ schedule is
:mod:`robustclip.training.schedule`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...errors import RobustclipError
from .adversarial import AdversarialConfig, make_adversarial, make_trades
from .base import Regularizer
from .clip import ClipConfig, make_clip
from .hybrid import (
    make_clip_adversarial,
    make_clip_margin,
)
from .lipmargin import MarginConfig, make_margin
from .weight import WeightRegularizer


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
    "clip": RegularizerEntry(make_clip, params_field="clip", doc="CLIP: λ·(largest difference quotient)",
                             label="CLIP", default_lam=0.2),
    "adversarial": RegularizerEntry(make_adversarial, params_field="adversarial",
                                    doc="PGD adversarial training: λ·CE(f(x_adv), y); λ = s/(1-s) for a share s",
                                    label="adversarial training", default_lam=1.0, needs_labels=True),
    "trades": RegularizerEntry(make_trades, params_field="adversarial",
                               doc="TRADES: β·KL(f(x) ‖ f(x_adv)) with β = λ, the adversary maximising the KL",
                               label="TRADES", default_lam=1.0, needs_labels=True),
    "clip-adversarial": RegularizerEntry(make_clip_adversarial, params_field=("clip", "adversarial"),
                                         doc="hybrid: PGD adversarial training plus λ·(CLIP's largest quotient)",
                                         label="CLIP + adversarial training", default_lam=0.3, needs_labels=True),
    "lipschitz-margin": RegularizerEntry(make_margin, params_field="margin", takes_lam=False,
                                         doc="certified training (GloRo-style): the ⊥-logit loss through a "
                                             "power-iteration Lipschitz bound, ε ramped",
                                         label="certified training (Lipschitz margin)", needs_labels=True),
    "clip-lipschitz-margin": RegularizerEntry(make_clip_margin, params_field=("clip", "margin"),
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
