"""The trainer: data loss + λ · regulariser, with the λ schedule, history and checkpoints (the run's settings:
:mod:`robustclip.training.config`).

One loop serves classification (cross-entropy on MNIST-like data) and the 1-D
regression (mean squared error). The same seed on the CPU gives bit-identical
weights. Ctrl-C ends training cleanly with the best weights so far.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from ..bounds import pairs as pairs_mod
from ..checkpoints.format import CheckpointMeta
from ..core.devices import resolve_device
from ..core.modes import eval_mode
from ..data import datasets as data_mod
from ..errors import RobustclipError
from ..models import specs as models
from .config import (
    TrainConfig,
)
from .regularizers import registry as regularizers

EXPLODE = 1e6
"""A step whose loss exceeds this many times the run's first loss (or any NaN/Inf loss) stops the run."""


class TrainingDiverged(RobustclipError):
    """The loss became NaN or infinite, or exploded: nothing is saved as a finished model."""


@dataclass
class TrainResult:
    """The trained model (best weights selected), its history and metadata."""

    model: nn.Module
    history: list[dict[str, Any]]
    meta: CheckpointMeta
    interrupted: bool = False


def _seed_all(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def learning_rate(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of 0-based ``epoch`` under ``cfg.lr_schedule`` (see :data:`LR_SCHEDULES`)."""
    if cfg.lr_schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    return cfg.lr


def load_training_data(cfg: TrainConfig, data_dir: str | None = None) -> tuple[data_mod.Split, data_mod.Split | None]:
    """The (train, validation) splits for ``cfg``; validation is None for none. A user's ``cfg.data`` is split
    stratified and seeded (:func:`robustclip.data.datasets.stratified_split`); the digest of its validation indices
    is in the validation split's ``source``."""
    if cfg.data is not None:
        from ..data.userdata import load_data_file

        full = load_data_file(cfg.data)
        train, val, digest = data_mod.stratified_split(full, val_fraction=cfg.val_fraction, seed=cfg.seed)
        val = data_mod.Split(val.x, val.y, val.dataset, "val", f"{full.source}; validation indices sha256 {digest}")
        return train.subset(cfg.n_train), (val if len(val) else None)
    entry = data_mod.REGISTRY.get(cfg.dataset)
    if entry is not None and "val" in entry.splits:  # a validation split of its own (the regression's)
        return (data_mod.load(cfg.dataset, "train", data_dir=data_dir),
                data_mod.load(cfg.dataset, "val", data_dir=data_dir))
    full = data_mod.load(cfg.dataset, "train", data_dir=data_dir)
    train, val = data_mod.train_val_split(full, val_fraction=cfg.val_fraction, seed=cfg.seed)
    return train.subset(cfg.n_train), (val if len(val) else None)


@torch.no_grad()
def score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, regression: bool, batch: int = 4096) -> float:
    """Accuracy in [0,1] (classification) or mean squared error (regression)."""
    total = 0.0
    with eval_mode(model):
        for i in range(0, x.shape[0], batch):
            out = model(x[i : i + batch])
            yb = y[i : i + batch]
            total += float(((out - yb) ** 2).sum()) if regression else float((out.argmax(1) == yb).sum())
    return total / max(x.shape[0], 1)


class Trainer:
    """A training run, one epoch at a time: ``Trainer(cfg).run()`` or ``.epoch()`` in a loop.

    Holds the model, optimiser, regulariser, λ schedule and history. The same
    seed on the CPU gives bit-identical weights.
    """

    def __init__(self, cfg: TrainConfig, *, data_dir: str | None = None, progress: bool = True,
                 splits: tuple[data_mod.Split, data_mod.Split | None] | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.progress = progress
        self.regression = data_mod.is_regression(cfg.dataset)
        self.gen = _seed_all(cfg.seed)
        self.train_split, self.val_split = splits or load_training_data(cfg, data_dir)
        self.dev = resolve_device(cfg.device)
        self.X, self.Y = self.train_split.x.to(self.dev), self.train_split.y.to(self.dev)
        self.Xv: torch.Tensor | None = None
        self.Yv: torch.Tensor | None = None
        if self.val_split is not None and len(self.val_split):
            self.Xv, self.Yv = self.val_split.x.to(self.dev), self.val_split.y.to(self.dev)
        self.model, self.spec = self._build_model()
        self.reg = regularizers.make(cfg.reg, seed=cfg.seed, **cfg.reg_params())
        self.reg.bind(self.model, tuple(self.X.shape[1:]))
        self.reg.plan(cfg.epochs * math.ceil(self.X.shape[0] / max(1, min(cfg.batch_size, self.X.shape[0]))))
        self.sched = cfg.lam_schedule()
        if cfg.optimizer == "sgd":
            self.opt: torch.optim.Optimizer = torch.optim.SGD(self.model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
        else:
            self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.crit: nn.Module = nn.MSELoss() if self.regression else nn.CrossEntropyLoss()
        self.history: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_score, self.best_epoch = -math.inf, -1
        self.best_eligible = False
        self.probe_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.probe_x = (self.Xv if self.Xv is not None else self.X)[:512]
        self.step = 0
        self.first_loss: float | None = None
        self.t_start = time.perf_counter()

    def _build_model(self) -> tuple[nn.Module, dict[str, Any] | None]:
        """The network (on the run's device) and its spec (None for a user's factory). A user's model or data is
        checked before training: logits ``(N, k)`` on the data's inputs, every label below ``k``."""
        cfg = self.cfg
        if cfg.factory is not None:
            from ..checkpoints.foreign import build_from_factory

            model, spec = build_from_factory(cfg.factory), None
        else:
            spec = cfg.model_spec()
            out = models.output_size(spec)
            if (out == 1) != self.regression:
                raise RobustclipError(f"model output size {out} does not fit dataset {cfg.dataset}",
                                      "use a model spec with 10 outputs for images and 1 for regression")
            model = models.build(spec)
        model = model.to(self.dev)
        if cfg.factory is not None or cfg.data is not None:
            from ..checkpoints.foreign import check_classifier

            k = check_classifier(model, self.X, None, name=cfg.factory or "the model")
            top = int(self.Y.max())
            if top >= k:
                raise RobustclipError(f"the training data has label {top} but the model has {k} outputs",
                                      f"give the model one output per class (at least {top + 1}), or check the labels")
        return model, spec

    def _check_loss(self, total: torch.Tensor, epoch: int, i: int) -> None:
        """Stop the run on a NaN or infinite loss, or one :data:`EXPLODE` times the first step's."""
        v = float(total.detach())
        if self.first_loss is None and math.isfinite(v):
            self.first_loss = abs(v)
        ref = max(self.first_loss or 0.0, 1e-3)
        if not math.isfinite(v) or v > EXPLODE * ref:
            what = "is not finite" if not math.isfinite(v) else f"exploded (first step: {ref:.3g})"
            raise TrainingDiverged(f"training diverged in epoch {epoch + 1}, step {i + 1}: the loss {v:.3g} {what}; "
                                   "nothing was saved", f"lower the learning rate, e.g. --lr {self.cfg.lr / 10:g}")

    def epoch(self) -> dict[str, Any]:
        """Train one epoch; return (and record) its history entry."""
        from ..core import progress

        cfg, model, reg = self.cfg, self.model, self.reg
        epoch = len(self.history)
        lam = self.sched.value(epoch)
        lr = learning_rate(cfg, epoch)
        for group in self.opt.param_groups:
            group["lr"] = lr
        model.train()
        n = self.X.shape[0]
        bs = min(cfg.batch_size, n)
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=self.gen).to(self.dev)
        loss_sum = torch.zeros((), device=self.dev)
        correct = torch.zeros((), device=self.dev, dtype=torch.long)
        steps = math.ceil(n / bs)
        bar = progress.bar(range(steps), enabled=self.progress and steps >= 20, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                           leave=False, mininterval=0.5, dynamic_ncols=True)
        for i in bar:
            idx = perm[i * bs : (i + 1) * bs]
            xb, yb = self.X[idx], self.Y[idx]
            loss, out_b = self._step(xb, yb, lam, epoch, i)
            loss_sum += loss.detach() * xb.shape[0]
            if not self.regression:
                correct += (out_b.detach().argmax(1) == yb).sum()
            self.step += 1
            if self.progress and i % 50 == 0:
                post = {"loss": f"{float(loss):.3f}", "λ": f"{lam:.3g}"}
                if not self.regression:
                    post["acc"] = f"{float(correct) / min((i + 1) * bs, n):.3f}"
                lip_now = reg.peek() if lam > 0 else None
                if lip_now:
                    post["Lip≥"] = f"{lip_now:.3g}"
                bar.set_postfix(post, refresh=False)
        bar.close()
        train_seconds = time.perf_counter() - t0
        train_loss = float(loss_sum) / n
        train_acc = None if self.regression else float(correct) / n
        rec: dict[str, Any] = {"epoch": epoch + 1, "lam": lam, "lr": lr, "train_loss": train_loss,
                               "train_acc": train_acc}
        sel = self._validate(rec)
        rec["lip_train"] = reg.estimate() if lam > 0 else None
        probe_now = (epoch + 1) % max(cfg.lip_probe_every, 1) == 0 or epoch + 1 == cfg.epochs
        rec["lip_probe"] = _probe(model, self.probe_x, cfg.lip_probe_pairs, self.probe_gen) if probe_now else None
        rec["seconds"] = train_seconds
        rec["epoch_seconds"] = time.perf_counter() - t0
        self.history.append(rec)
        self._keep_best(sel, epoch, train_acc)
        self.sched.update(epoch, train_acc)
        # tiny epochs (e.g. the full-batch regression) report only their last epoch
        if self.progress and (steps >= 20 or len(self.history) == cfg.epochs):
            progress.write(_epoch_line(rec, cfg.epochs))
        return rec

    def _step(self, xb: torch.Tensor, yb: torch.Tensor, lam: float, epoch: int, i: int,
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """One weight step on batch ``xb`` ``(B, ...)``, ``yb``: data loss plus λ · penalty (and a hybrid's unscaled
        term), checked, backward, optimiser step, the regulariser's update. Returns (data loss, batch outputs)."""
        model, reg = self.model, self.reg
        on = lam > 0 or reg.unscaled  # a hybrid's weight-1 term stays on at λ = 0 (warm-up, discrepancy)
        extra = reg.extra_inputs(xb, self.step, y=yb) if on else None
        out_b = model(xb)
        # The extra rows get their own forward pass: concatenated with the batch,
        # autograd would compute the input gradient of every batch row too.
        out_e = model(extra) if extra is not None else None
        loss = self.crit(out_b, yb)
        total = loss if reg.data_weight == 1.0 else reg.data_weight * loss
        if on:
            reg.batch_outputs(out_b, yb)
            pen = reg.penalty(model, out_e)
            if pen is not None and lam > 0:
                total = total + lam * pen
            fixed = reg.unscaled_penalty()
            if fixed is not None:
                total = total + fixed
        self._check_loss(total, epoch, i)
        self.opt.zero_grad(set_to_none=True)
        total.backward()
        self.opt.step()
        if on:
            reg.after_step()
        return loss, out_b

    def _validate(self, rec: dict[str, Any]) -> float:
        """Score the epoch on the validation split into ``rec``; returns the selection score (higher is better;
        minus the training loss without a validation split)."""
        if self.Xv is None or self.Yv is None:
            return -float(rec["train_loss"])
        v = score(self.model, self.Xv, self.Yv, regression=self.regression)
        rec["val_mse" if self.regression else "val_acc"] = v
        sel = -v if self.regression else v
        alt = self.reg.selection_score(self.model, self.Xv, self.Yv)
        if alt is not None:
            rec["val_select"] = sel = alt
        return sel

    def _keep_best(self, sel: float, epoch: int, train_acc: float | None) -> None:
        """Keep this epoch's weights when they are the best so far (or selection is off)."""
        cfg = self.cfg
        eligible = not (cfg.require_target and cfg.target_acc is not None and (train_acc or 0) < cfg.target_acc)
        # an epoch that reaches τ always beats a fallback that did not
        if (not cfg.select or self.best_state is None
                or (eligible and (not self.best_eligible or sel >= self.best_score))):
            self.best_state = copy.deepcopy(self.model.state_dict())
            self.best_score, self.best_epoch, self.best_eligible = sel, epoch + 1, eligible

    def run(self, on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
        """Train the remaining epochs; Ctrl-C stops cleanly with the best weights so far.

        An interruption before any epoch finished has nothing worth keeping: the KeyboardInterrupt propagates.
        A non-finite or exploding loss raises :class:`TrainingDiverged`.
        """
        interrupted = False
        try:
            while len(self.history) < self.cfg.epochs:
                rec = self.epoch()
                if on_epoch:
                    on_epoch(rec)
        except KeyboardInterrupt:
            if self.best_state is None:
                raise
            interrupted = True
        return self.result(interrupted=interrupted)

    def result(self, *, interrupted: bool = False) -> TrainResult:
        """The model with the selected (best) weights, history and metadata."""
        cfg, model = self.cfg, self.model
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
        model.eval()
        best = self.history[self.best_epoch - 1] if self.best_epoch >= 1 else {}
        takes_lam = regularizers.REGISTRY[cfg.reg].takes_lam
        meta = CheckpointMeta(
            dataset=cfg.dataset if cfg.data is None else self.train_split.dataset,
            model=self.spec,
            data={"source": self.train_split.source, "n_train": int(self.X.shape[0]),
                  "n_val": int(self.Xv.shape[0]) if self.Xv is not None else 0,
                  "val_fraction": cfg.val_fraction, "split_seed": cfg.seed,
                  **({"validation": self.val_split.source} if cfg.data is not None and self.val_split else {})},
            train={
                **asdict(cfg),
                "device": str(self.dev),  # the device it ran on ("auto" resolved), beside what was asked
                "device_requested": cfg.device,
                "model": self.spec,
                "method": cfg.reg,
                "regularizer": self.reg.config(),
                "lam_schedule": self.sched.config(),
                "lam_history": list(self.sched.history),
                "final_lam": self.sched.final if cfg.target_acc is not None else (cfg.lam if takes_lam else 0.0),
                "best_epoch": self.best_epoch,
                "epochs_run": len(self.history),
                "interrupted": interrupted,
                "seconds": sum(h["epoch_seconds"] for h in self.history),
            },
            history=self.history,
            metrics={k: best[k] for k in ("train_acc", "val_acc", "val_mse", "train_loss") if k in best},
            factory=cfg.factory,
            extra={"status": "partial" if interrupted else "complete",
                   **({"method": cfg.reg, "lam": cfg.lam if takes_lam else 0.0, "seed": cfg.seed}
                      if cfg.factory is not None or cfg.data is not None else {})},
        )
        return TrainResult(model=model, history=self.history, meta=meta, interrupted=interrupted)


def train(cfg: TrainConfig, *, data_dir: str | None = None, progress: bool = True,
          on_epoch: Callable[[dict[str, Any]], None] | None = None,
          splits: tuple[data_mod.Split, data_mod.Split | None] | None = None) -> TrainResult:
    """Train a model as ``cfg`` says and return it with its history.

    ``splits`` may pass preloaded (train, validation) data; otherwise it is
    loaded from ``data_dir``. A KeyboardInterrupt stops after the current step
    and returns the best weights so far with ``interrupted=True`` (metadata
    ``status: "partial"``); one before the first epoch finished propagates.
    A NaN, infinite or exploding loss raises :class:`TrainingDiverged`.

    Args:
        cfg: the run (dataset, model spec, regulariser from
            :data:`robustclip.training.regularizers.registry.REGISTRY`, λ schedule, optimiser, seed); the same seed on
            the CPU gives bit-identical weights.

    Returns:
        A :class:`TrainResult`: the model with the selected epoch's weights, the per-epoch ``history`` and the
        typed checkpoint ``meta`` (:class:`~robustclip.checkpoints.format.CheckpointMeta`).

    Example::

        res = robustclip.train(robustclip.TrainConfig(dataset="mnist", reg="clip", lam=0.1, epochs=5))
        robustclip.save(res.model, "clip.safetensors", res.meta)
    """
    return Trainer(cfg, data_dir=data_dir, progress=progress, splits=splits).run(on_epoch)


def _probe(model: nn.Module, x: torch.Tensor, pairs: int, gen: torch.Generator) -> float:
    """A cheap lower bound on the Lipschitz constant: a few ascent steps on data pairs."""
    if pairs <= 0:
        return float("nan")
    P = pairs_mod.init_pairs(x, pairs, mode="partial_random", radius=0.5 if x.dim() > 2 else 0.05, generator=gen)
    _, q = pairs_mod.pair_ascent(model, P, steps=5)
    return float(q.max())


def _epoch_line(rec: dict[str, Any], epochs: int) -> str:
    """The console line of one finished epoch (its history entry ``rec``)."""
    msg = f"epoch {rec['epoch']}/{epochs}  loss {rec['train_loss']:.4f}"
    if rec["train_acc"] is not None:
        msg += f"  train {rec['train_acc']:.4f}"
    if "val_acc" in rec:
        msg += f"  val {rec['val_acc']:.4f}"
    msg += f"  λ {rec['lam']:.4g}"
    if rec["lip_probe"] is not None:
        msg += f"  Lip≥{rec['lip_probe']:.3g}"
    msg += f"  {rec['seconds']:.1f}s"
    return msg
