"""The settings of a training run (:class:`TrainConfig`, stored in the checkpoint) and their validation."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

from ..core import validate
from ..core.devices import resolve_device
from ..data import datasets as data_mod
from ..errors import RobustclipError
from ..models import specs as models
from .regularizers import registry as regularizers
from .schedule import LambdaSchedule

OPTIMIZERS = ("sgd", "adam")
MAX_EPOCHS = 100_000
LR_SCHEDULES = ("constant", "cosine")
"""``constant``: ``lr`` throughout; ``cosine``: ``lr · (1 + cos(π · epoch / epochs)) / 2``, set as each epoch
starts."""


CUSTOM = "custom"
"""The ``dataset`` of a run on the user's own ``data``."""

TABLE_FIELDS = ("clip", "adversarial")
"""Settings tables with a :class:`TrainConfig` field of their own (the rest live in ``TrainConfig.settings``)."""


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint).

    ``model``: a model spec (None: the default for the dataset). ``reg``: a
    name of :data:`~robustclip.training.regularizers.registry.REGISTRY` (``none``, ``weight``,
    ``clip``, ``adversarial``, ``trades``, ``clip-adversarial``); ``clip`` holds
    :class:`ClipConfig` fields, ``adversarial`` the
    :class:`~robustclip.training.regularizers.adversarial.AdversarialConfig` fields of ``adversarial``
    and ``trades``; the hybrid ``clip-adversarial`` reads both. ``settings``: the tables of
    :data:`~robustclip.training.regularizers.registry.SETTINGS` that have no field of their own (a newer method's), by
    name:
    ``settings["margin"]`` holds the :class:`~robustclip.training.regularizers.lipmargin.MarginConfig` fields of
    ``lipschitz-margin``
    (and, with ``clip``, of ``clip-lipschitz-margin``).
    ``lam``, ``target_acc``, ``lam_step``, ``lam_every``, ``warmup``: the λ
    schedule (fixed λ when ``target_acc`` is None). ``n_train``: use only the
    first n training samples (after the seeded train/validation split).
    ``select``: keep the weights of the epoch with the best validation score,
    optionally only among epochs whose training accuracy reached τ
    (``require_target``).

    A user's own model and data: ``factory`` (``"MODULE:CALLABLE"``, imported only when the run starts, see
    :func:`robustclip.checkpoints.foreign.build_from_factory`) builds the network instead of ``model``; ``data``
    (an ``.npz``/safetensors file or an image folder, see :func:`robustclip.data.userdata.load_data_file`) is the
    training set, with ``dataset = "custom"``; its validation split is carved stratified and seeded
    (:func:`robustclip.data.datasets.stratified_split`). ``test_data`` names the held-out test set that a sweep
    run's evaluation (and ``robustclip train``'s closing test accuracy) uses.
    """

    dataset: str = "mnist"
    model: dict[str, Any] | None = None
    reg: str = "none"
    lam: float = 0.0
    target_acc: float | None = None
    lam_step: float = 0.01
    lam_every: int = 1
    warmup: int = 0
    clip: dict[str, Any] = field(default_factory=dict)
    adversarial: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    lr_schedule: str = "constant"
    momentum: float = 0.9
    seed: int = 0
    device: str = "cpu"
    val_fraction: float = 0.1
    n_train: int | None = None
    select: bool = True
    require_target: bool = False
    lip_probe_pairs: int = 16
    lip_probe_every: int = 1
    factory: str | None = None
    data: str | None = None
    test_data: str | None = None

    @classmethod
    def for_dataset(cls, dataset: str, **kw: Any) -> TrainConfig:
        """Defaults that suit ``dataset`` (regression: Adam, full batch, 600 epochs)."""
        if data_mod.is_regression(dataset):
            base: dict[str, Any] = dict(optimizer="adam", lr=0.01, batch_size=40, epochs=600, val_fraction=0.0,
                                        lip_probe_every=25, clip={"init": "noise", "pairs": 16, "radius": 0.05,
                                                                  "refresh_every": 50, "eta": 0.02, "every": 2})
            base.update({k: v for k, v in kw.items() if v is not None})
            return cls(dataset=dataset, **base)
        return cls(dataset=dataset, **{k: v for k, v in kw.items() if v is not None})

    def validate(self) -> None:
        """Check every field where a config enters (CLI, sweeps, Python): names known, numbers finite and in range.

        Raises :class:`RobustclipError` naming the field (as its CLI flag) and the fix.
        """
        self._validate_sources()
        if not isinstance(self.reg, str) or self.reg not in regularizers.REGULARIZERS:
            raise RobustclipError(f"unknown regulariser {self.reg!r}",
                                  f"use one of {', '.join(regularizers.REGULARIZERS)}")
        if not isinstance(self.optimizer, str) or self.optimizer not in OPTIMIZERS:
            raise RobustclipError(f"unknown optimizer {self.optimizer!r}", f"use one of {', '.join(OPTIMIZERS)}")
        if not isinstance(self.lr_schedule, str) or self.lr_schedule not in LR_SCHEDULES:
            raise RobustclipError(f"unknown learning-rate schedule {self.lr_schedule!r:.80}",
                                  f"use one of {', '.join(LR_SCHEDULES)}")
        num = validate.number
        num(self.epochs, "--epochs", integer=True, lo=1, hi=MAX_EPOCHS, fix="pass e.g. --epochs 10")
        num(self.batch_size, "--batch-size", integer=True, lo=1, hi=1_000_000, fix="pass e.g. --batch-size 128")
        num(self.lr, "--lr (learning rate)", lo=0, lo_open=True, fix="pass e.g. --lr 0.1")
        num(self.momentum, "momentum", lo=0, hi=1, hi_open=True, fix="use e.g. momentum 0.9")
        num(self.warmup, "--warmup", integer=True, lo=0, hi=MAX_EPOCHS, fix="pass e.g. --warmup 2")
        self.lam_schedule()  # checks λ, τ, --lam-step and --lam-every
        num(self.val_fraction, "validation fraction", lo=0, hi=1, hi_open=True, fix="use e.g. 0.1")
        num(self.lip_probe_pairs, "lip_probe_pairs", integer=True, lo=0, hi=100_000)
        num(self.lip_probe_every, "lip_probe_every", integer=True, lo=1)
        validate.seed(self.seed, "--seed")
        if self.n_train is not None:
            num(self.n_train, "--n-train", integer=True, lo=1, fix="pass a positive --n-train")
        if not isinstance(self.settings, dict):
            raise RobustclipError(f"settings must be a table of tables, got {self.settings!r:.80}",
                                  'e.g. settings = { clip = { pairs = 32 } }')
        for name, table in regularizers.SETTINGS.items():
            got = self._table(name)
            if got is not None and not isinstance(got, dict):
                raise RobustclipError(f"{name} settings must be a table, got {got!r:.80}",
                                      f"e.g. {table.flag} {table.example}")
        if not isinstance(self.device, str):
            raise RobustclipError(f"unknown device {self.device!r:.80}", "use --device auto, cpu or cuda")
        resolve_device(self.device)  # the one device check (auto, cpu, cuda, cuda:N; a missing GPU is one line)
        if self.target_acc is not None and data_mod.is_regression(self.dataset):
            raise RobustclipError("the discrepancy principle (--target-acc) needs a classification dataset",
                                  "use a fixed --lam for regression")
        if data_mod.is_regression(self.dataset) and regularizers.REGISTRY[self.reg].needs_labels:
            raise RobustclipError(f"--reg {self.reg} needs class labels; the regression has none",
                                  "use --reg weight or --reg clip for regression")
        if not regularizers.REGISTRY[self.reg].takes_lam and (self.lam > 0 or self.target_acc is not None):
            raise RobustclipError(f"--reg {self.reg} takes no λ",
                                  "drop --lam/--target-acc, or pick --reg weight or clip")
        regularizers.make(self.reg, **self.reg_params())
        if self.factory is None:  # a factory is the user's code: it runs when the run starts, not to validate
            _check_spec(json.dumps(self.model_spec(), sort_keys=True, default=str))

    def _validate_sources(self) -> None:
        """The dataset, or the user's ``data`` (``dataset = "custom"``), ``test_data`` and ``factory``."""
        from ..checkpoints.format import check_factory_ref

        if self.data is None and self.dataset == CUSTOM:
            raise RobustclipError("dataset custom needs the training data", "pass --data FILE|DIR")
        if self.data is not None:
            if self.dataset != CUSTOM:
                raise RobustclipError(f"--data and --dataset {self.dataset} name two training sets",
                                      "pass one of them")
            if self.dataset == CUSTOM and self.model is None and self.factory is None:
                raise RobustclipError("--data needs a model for its inputs", "pass --model MODULE:CALLABLE")
        elif not isinstance(self.dataset, str) or self.dataset not in data_mod.REGISTRY:
            raise RobustclipError(f"unknown dataset {self.dataset!r}", f"use one of {', '.join(data_mod.REGISTRY)}")
        for what, value in (("--data", self.data), ("--test-data", self.test_data)):
            if value is not None and (not isinstance(value, str) or not value):
                raise RobustclipError(f"{what} must be a path, got {value!r:.80}", f"pass {what} FILE|DIR")
        if self.test_data is not None and self.dataset == "regression":
            raise RobustclipError("--test-data applies to classification data", "drop it for the regression")
        if self.factory is not None:
            if self.model is not None:
                raise RobustclipError("a model spec and a factory name two models", "pass one of them")
            check_factory_ref(self.factory, what="--model")



    def lam_schedule(self) -> LambdaSchedule:
        """A fresh λ schedule from ``lam``, ``target_acc``, ``lam_step``, ``lam_every`` and ``warmup`` (checked)."""
        return LambdaSchedule(lam=self.lam, target=self.target_acc, step=self.lam_step, every=self.lam_every,
                              warmup=self.warmup)

    def _table(self, name: str) -> Any:
        """The settings table ``name``: the field of that name, else ``settings[name]`` ({} when absent)."""
        if name in TABLE_FIELDS:
            return getattr(self, name)
        return self.settings.get(name, {}) if isinstance(self.settings, dict) else {}

    @staticmethod
    def table_kwargs(tables: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments of :class:`TrainConfig` for settings tables by name (None: the default): the tables
        with a field of their own as that field, the others in ``settings``."""
        kw: dict[str, Any] = {}
        for name, value in tables.items():
            if value is None:
                continue
            if name in TABLE_FIELDS:
                kw[name] = value
            else:
                kw.setdefault("settings", {})[name] = value
        return kw

    def reg_params(self) -> dict[str, Any]:
        """Settings of the chosen regulariser (the tables its registry entry names), else {}."""
        entry = regularizers.REGISTRY.get(self.reg)
        if entry is None or not entry.fields:
            return {}
        if isinstance(entry.params_field, str):
            return dict(self._table(entry.params_field) or {})
        return {f: dict(self._table(f) or {}) for f in entry.fields}

    def model_spec(self) -> dict[str, Any]:
        return self.model or models.default_spec(None, self.dataset)


@functools.lru_cache(maxsize=256)
def _check_spec(spec_json: str) -> None:
    """Build the model of a spec once to check it (sizes are capped before anything is allocated); a sweep of
    100,000 runs over a few architectures builds each architecture once, not once per run."""
    models.build(json.loads(spec_json))
