"""The trainer: data loss + λ · regulariser, with the λ schedule, history and checkpoints.

One loop serves classification (cross-entropy on MNIST-like data) and the 1-D
regression (mean squared error). The same seed on the CPU gives bit-identical
weights. Ctrl-C ends training cleanly with the best weights so far.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from . import data as data_mod
from . import lipschitz, models, regularizers
from .errors import RobustclipError

OPTIMIZERS = ("sgd", "adam")


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in the checkpoint).

    ``model``: a model spec (None: the default for the dataset). ``reg``:
    ``none``, ``weight`` or ``clip``; ``clip`` holds :class:`ClipConfig` fields.
    ``lam``, ``target_acc``, ``lam_step``, ``lam_every``, ``warmup``: the λ
    schedule (fixed λ when ``target_acc`` is None). ``n_train``: use only the
    first n training samples (after the seeded train/validation split).
    ``select``: keep the weights of the epoch with the best validation score,
    optionally only among epochs whose training accuracy reached τ
    (``require_target``).
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
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    seed: int = 0
    device: str = "cpu"
    val_fraction: float = 0.1
    n_train: int | None = None
    select: bool = True
    require_target: bool = False
    lip_probe_pairs: int = 16

    @classmethod
    def for_dataset(cls, dataset: str, **kw: Any) -> "TrainConfig":
        """Defaults that suit ``dataset`` (regression: Adam, full batch, 600 epochs)."""
        if dataset == "regression":
            base = dict(optimizer="adam", lr=0.01, batch_size=40, epochs=600, val_fraction=0.0,
                        clip={"init": "noise", "pairs": 16, "radius": 0.05, "refresh_every": 50, "eta": 0.02})
            base.update({k: v for k, v in kw.items() if v is not None})
            return cls(dataset=dataset, **base)
        return cls(dataset=dataset, **{k: v for k, v in kw.items() if v is not None})

    def validate(self) -> None:
        if self.dataset not in data_mod.DATASETS:
            raise RobustclipError(f"unknown dataset {self.dataset!r}", f"use one of {', '.join(data_mod.DATASETS)}")
        if self.reg not in regularizers.REGULARIZERS:
            raise RobustclipError(f"unknown regulariser {self.reg!r}", f"use one of {', '.join(regularizers.REGULARIZERS)}")
        if self.optimizer not in OPTIMIZERS:
            raise RobustclipError(f"unknown optimizer {self.optimizer!r}", f"use one of {', '.join(OPTIMIZERS)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise RobustclipError("epochs and batch size must be >= 1", "pass e.g. --epochs 10 --batch-size 128")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise RobustclipError(f"learning rate must be positive, got {self.lr}", "pass e.g. --lr 0.1")
        if self.target_acc is not None and self.dataset == "regression":
            raise RobustclipError("the discrepancy principle (--target-acc) needs a classification dataset",
                                  "use a fixed --lam for regression")
        if self.reg == "none" and (self.lam > 0 or self.target_acc is not None):
            raise RobustclipError("--reg none takes no λ", "drop --lam/--target-acc, or pick --reg weight or clip")
        if self.n_train is not None and self.n_train < 1:
            raise RobustclipError(f"n_train must be >= 1, got {self.n_train}", "pass a positive --n-train")
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise RobustclipError(f"device {self.device!r} asked for, but CUDA is not available", "use --device cpu")
        regularizers.LambdaSchedule(lam=self.lam, target=self.target_acc, step=self.lam_step,
                                    every=self.lam_every, warmup=self.warmup)
        if self.reg == "clip":
            regularizers.make("clip", **self.clip)

    def model_spec(self) -> dict[str, Any]:
        return self.model or models.default_spec("mlp1d" if self.dataset == "regression" else "fc", self.dataset)


@dataclass
class TrainResult:
    """The trained model (best weights selected), its history and metadata."""

    model: nn.Module
    history: list[dict[str, Any]]
    meta: dict[str, Any]
    interrupted: bool = False


def _seed_all(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def load_training_data(cfg: TrainConfig, data_dir: str | None = None) -> tuple[data_mod.Split, data_mod.Split | None]:
    """The (train, validation) splits for ``cfg``; validation is None for none."""
    if cfg.dataset == "regression":
        return data_mod.regression("train"), data_mod.regression("val")
    full = data_mod.load(cfg.dataset, "train", data_dir=data_dir)
    train, val = data_mod.train_val_split(full, val_fraction=cfg.val_fraction, seed=cfg.seed)
    return train.subset(cfg.n_train), (val if len(val) else None)


@torch.no_grad()
def score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, regression: bool, batch: int = 4096) -> float:
    """Accuracy in [0,1] (classification) or mean squared error (regression)."""
    was = model.training
    model.eval()
    total = 0.0
    for i in range(0, x.shape[0], batch):
        out = model(x[i : i + batch])
        yb = y[i : i + batch]
        total += float(((out - yb) ** 2).sum()) if regression else float((out.argmax(1) == yb).sum())
    model.train(was)
    return total / max(x.shape[0], 1)


def train(cfg: TrainConfig, *, data_dir: str | None = None, progress: bool = True,
          on_epoch: Callable[[dict[str, Any]], None] | None = None,
          splits: tuple[data_mod.Split, data_mod.Split | None] | None = None) -> TrainResult:
    """Train a model as ``cfg`` says and return it with its history.

    ``splits`` may pass preloaded (train, validation) data; otherwise it is
    loaded from ``data_dir``. A KeyboardInterrupt stops after the current step
    and returns the best weights so far with ``interrupted=True``.
    """
    from tqdm.auto import tqdm

    cfg.validate()
    regression = cfg.dataset == "regression"
    gen = _seed_all(cfg.seed)
    train_split, val_split = splits or load_training_data(cfg, data_dir)
    dev = torch.device(cfg.device)
    X, Y = train_split.x.to(dev), train_split.y.to(dev)
    spec = cfg.model_spec()
    model = models.build(spec).to(dev)
    if models.output_size(spec) == 1 and not regression or (regression and models.output_size(spec) != 1):
        raise RobustclipError(f"model output size {models.output_size(spec)} does not fit dataset {cfg.dataset}",
                              "use a model spec with 10 outputs for images and 1 for regression")
    reg = regularizers.make(cfg.reg, seed=cfg.seed, **(cfg.clip if cfg.reg == "clip" else {}))
    if isinstance(reg, regularizers.ClipRegularizer):
        reg.bind(model)
    sched = regularizers.LambdaSchedule(lam=cfg.lam, target=cfg.target_acc, step=cfg.lam_step,
                                        every=cfg.lam_every, warmup=cfg.warmup)
    if cfg.optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    crit: nn.Module = nn.MSELoss() if regression else nn.CrossEntropyLoss()
    n = X.shape[0]
    bs = min(cfg.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    history: list[dict[str, Any]] = []
    best_state, best_score, best_epoch = None, -math.inf, -1
    probe_gen = torch.Generator().manual_seed(cfg.seed + 1)
    probe_x = (val_split.x if val_split is not None and len(val_split) else train_split.x)[:512].to(dev)
    step = 0
    interrupted = False
    t_start = time.perf_counter()
    try:
        for epoch in range(cfg.epochs):
            lam = sched.value(epoch)
            model.train()
            t0 = time.perf_counter()
            perm = torch.randperm(n, generator=gen).to(dev)
            loss_sum = torch.zeros((), device=dev)
            correct = torch.zeros((), device=dev, dtype=torch.long)
            bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                       leave=False, mininterval=0.5, dynamic_ncols=True)
            for i in bar:
                idx = perm[i * bs : (i + 1) * bs]
                xb, yb = X[idx], Y[idx]
                extra = reg.extra_inputs(xb, step) if lam > 0 else None
                out = model(torch.cat([xb, extra]) if extra is not None else xb)
                out_b = out[: xb.shape[0]]
                loss = crit(out_b, yb)
                total = loss
                if lam > 0:
                    pen = reg.penalty(model, out[xb.shape[0] :] if extra is not None else None)
                    if pen is not None:
                        total = loss + lam * pen
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                if lam > 0:
                    reg.after_step()
                loss_sum += loss.detach() * xb.shape[0]
                if not regression:
                    correct += (out_b.detach().argmax(1) == yb).sum()
                step += 1
                if progress and i % 50 == 0:
                    bar.set_postfix(loss=f"{float(loss):.3f}", lam=f"{lam:.3g}", refresh=False)
            bar.close()
            train_seconds = time.perf_counter() - t0
            train_loss = float(loss_sum) / n
            train_acc = None if regression else float(correct) / n
            lip_train = reg.estimate() if lam > 0 else None
            lip_probe = _probe(model, probe_x, cfg.lip_probe_pairs, probe_gen)
            rec: dict[str, Any] = {"epoch": epoch + 1, "lam": lam, "train_loss": train_loss, "train_acc": train_acc}
            if val_split is not None and len(val_split):
                v = score(model, val_split.x.to(dev), val_split.y.to(dev), regression=regression)
                rec["val_mse" if regression else "val_acc"] = v
                sel = -v if regression else v
            else:
                sel = -train_loss
            rec.update({"lip_train": lip_train, "lip_probe": lip_probe, "seconds": train_seconds,
                        "epoch_seconds": time.perf_counter() - t0})
            history.append(rec)
            eligible = not (cfg.require_target and cfg.target_acc is not None and (train_acc or 0) < cfg.target_acc)
            if not cfg.select or (eligible and sel >= best_score) or best_state is None:
                best_state = copy.deepcopy(model.state_dict())
                best_score, best_epoch = sel, epoch + 1
            sched.update(epoch, train_acc)
            if progress:
                msg = f"epoch {epoch + 1}/{cfg.epochs}  loss {train_loss:.4f}"
                if train_acc is not None:
                    msg += f"  train {train_acc:.4f}"
                if "val_acc" in rec:
                    msg += f"  val {rec['val_acc']:.4f}"
                msg += f"  λ {lam:.4g}  Lip≥{lip_probe:.3g}  {train_seconds:.1f}s"
                tqdm.write(msg)
            if on_epoch:
                on_epoch(rec)
    except KeyboardInterrupt:
        interrupted = True
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    meta = {
        "dataset": cfg.dataset,
        "data": {"source": train_split.source, "n_train": n, "n_val": len(val_split) if val_split is not None else 0},
        "train": {
            **asdict(cfg),
            "model": spec,
            "method": cfg.reg,
            "regularizer": reg.config(),
            "lam_schedule": sched.config(),
            "lam_history": sched.history,
            "final_lam": sched.final if cfg.target_acc is not None else (cfg.lam if cfg.reg != "none" else 0.0),
            "best_epoch": best_epoch,
            "epochs_run": len(history),
            "interrupted": interrupted,
            "seconds": time.perf_counter() - t_start,
        },
        "history": history,
        "metrics": {k: history[best_epoch - 1][k] for k in ("train_acc", "val_acc", "val_mse", "train_loss")
                    if best_epoch >= 1 and k in history[best_epoch - 1]},
    }
    return TrainResult(model=model, history=history, meta=meta, interrupted=interrupted)


def _probe(model: nn.Module, x: torch.Tensor, pairs: int, gen: torch.Generator) -> float:
    """A cheap lower bound on the Lipschitz constant: a few ascent steps on data pairs."""
    if pairs <= 0:
        return float("nan")
    P = lipschitz.init_pairs(x, pairs, mode="partial_random", radius=0.5 if x.dim() > 2 else 0.05, generator=gen)
    _, q = lipschitz.pair_ascent(model, P, steps=5)
    return float(q.max())
