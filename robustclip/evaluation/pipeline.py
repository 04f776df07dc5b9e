"""The one train → checkpoint → evaluate path, with one set of defaults, for the CLI, sweeps, the gate and the paper.

>>> from robustclip.evaluation import pipeline
>>> pipeline.LIPSCHITZ_PAIRS
64

``train_to_checkpoint(cfg, out)`` trains and writes a checkpoint; ``evaluate_model(model, meta, suite=...)`` and
``evaluate_checkpoint(path, suite=...)`` return an :class:`Evaluation`: the attack results, the Lipschitz report
and the checkpoint's metadata, plus tidy rows ready for a results table.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import stats
from ..attacks.suites import Suite, load_suite
from ..bounds import budget as lipschitz_budget
from ..bounds import lipschitz as lipschitz_mod  # evaluate_model's ``lipschitz`` keyword shadows the module name
from ..bounds import upper
from ..checkpoints import foreign as loading
from ..checkpoints import format as checkpoints
from ..checkpoints.format import CheckpointMeta
from ..core import devices
from ..core import progress as progress_mod
from ..core.devices import device_of, resolve_device
from ..core.files import sha256_file
from ..core.inputs import factory_digest
from ..data import datasets as data
from ..data.userdata import load_data_file
from ..errors import RobustclipError
from ..models import specs as models
from ..training.config import TrainConfig
from ..training.trainer import TrainResult, train
from . import attacking
from . import runner as evaluation

LIPSCHITZ_PAIRS = 64
"""Pairs (and Jacobian start points) of the Lipschitz lower-bound ascent, everywhere."""
LIPSCHITZ_POINTS = 512
"""The first this many evaluation inputs seed the Lipschitz ascent."""
LIPSCHITZ_MODES: dict[str, dict[str, int]] = {"full": {"pairs": LIPSCHITZ_PAIRS, "steps": 50},
                                              "fast": {"pairs": 16, "steps": 15}}
"""Unscaled settings of the Lipschitz estimate per ``lipschitz=`` mode (``off`` computes only the upper bound); a
model whose ascent would cost more than the mode's budget runs fewer (see :mod:`robustclip.bounds.budget`)."""


@dataclass
class Evaluation:
    """What evaluating one model gives.

    ``result``: the attack evaluation (None for a regression model). ``lipschitz``: lower and upper bounds with
    their cost (and the exact constant for 1-D models). ``meta``: the checkpoint's metadata. ``rows``: tidy dicts
    (``attack``, ``norm``, ``eps``, ``accuracy``, ``n``, ``ci_low``, ``ci_high``, and ``mse`` for regression),
    including ``clean_full`` (clean accuracy on the whole test split) when asked for. ``name``: the model's label.
    """

    result: evaluation.EvalResult | None
    lipschitz: upper.LipschitzReport
    meta: CheckpointMeta
    name: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def lipschitz_dict(self) -> dict[str, Any]:
        """The Lipschitz report as a JSON-ready dict, with the model's name."""
        return {"model": self.name, **self.lipschitz.to_dict()}


def user_test_set(model: nn.Module, path: str | os.PathLike[str], *, name: str) -> data.Split:
    """A user's held-out test data (:func:`robustclip.data.userdata.load_data_file`), checked against ``model``:
    logits on its inputs, every label below the number of outputs."""
    test = load_data_file(path)
    k = loading.check_classifier(model, test.x, None, name=name)
    if int(test.y.max()) >= k:
        raise RobustclipError(f"the test data {path} has label {int(test.y.max())} but model {name} has {k} outputs",
                              f"labels must lie in 0..{k - 1}")
    return test


def train_to_checkpoint(cfg: TrainConfig, out: str | os.PathLike[str] | None, *, data_dir: str | None = None,
                        progress: bool = True, name: str | None = None, command: str | None = None,
                        sweep_run: dict[str, Any] | None = None) -> TrainResult:
    """Train as ``cfg`` says and, when ``out`` is given, save the checkpoint there (atomically).

    ``name``, ``command`` and ``sweep_run`` are recorded in the metadata. With ``cfg.test_data``, the clean
    accuracy on it (a fraction in [0, 1]) is recorded as ``metrics["test_acc"]``. Returns the :class:`TrainResult`.
    """
    res = train(cfg, data_dir=data_dir, progress=progress)
    if cfg.test_data is not None:
        test = user_test_set(res.model, cfg.test_data, name=name or "model")
        k = int((evaluation.predict(res.model, test.x).argmax(1).cpu() == test.y).sum())
        res.meta.metrics["test_acc"] = k / len(test)
        res.meta.data["test"] = test.source
    res.meta.name = name
    res.meta.command = command
    res.meta.sweep_run = sweep_run
    if out is not None:
        checkpoints.save(res.model, out, res.meta)
    return res


def evaluate_model(model: nn.Module, meta: CheckpointMeta, *, suite: str | Suite | None = None,
                   data_dir: str | None = None, n: int | None = None, batch_size: int | None = None,
                   seed: int | None = None, progress: bool = True, name: str = "model",
                   clean_full: bool = False, eval_set: data.Split | None = None,
                   device: str | torch.device | None = None, lipschitz: str = "full",
                   keep_adversarial: bool = False, cache_dir: str | os.PathLike[str] | None = None,
                   checkpoint_sha256: str | None = None, refine_lipschitz: bool = True,
                   attack_certified: bool = False, model_code: str | None = None) -> Evaluation:
    """Evaluate a model of ``meta.dataset`` on its test split, or on ``eval_set`` (a user's data, any input shape:
    see :func:`robustclip.data.userdata.load_data_file`; the number of classes then comes from the model's
    output).

    Classifiers: the suite's attacks on the first ``n`` (default: the suite's n) test images, and Lipschitz
    bounds from :data:`LIPSCHITZ_PAIRS` ascents seeded on the first :data:`LIPSCHITZ_POINTS` of them. With
    ``clean_full``, clean accuracy on the whole test split too. Regression models: test MSE and the exact
    Lipschitz constant. ``lipschitz``: ``full``, ``fast`` (:data:`LIPSCHITZ_MODES`: fewer pairs and steps) or
    ``off`` (only the upper bound, which certification needs; the lower bound is the trivial 0). With ``full``,
    ``refine_lipschitz`` adds the longer ascent and ECLipsE of ``lipschitz.estimate(refine=True)`` (a few seconds;
    the CI gate turns it off, so its committed baselines keep their estimator).

    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``; None: where the model already is): the model moves there;
    the data stays on the CPU and moves one batch at a time; the Lipschitz ascents run there too, bounds and
    certificates with TF32 off. The result's meta records the device, its name, the CUDA version, the TF32 flags,
    the deterministic-algorithms and cuDNN flags and the thread counts. ``keep_adversarial``: keep
    the adversarial examples that broke each sample (see :func:`robustclip.evaluation.runner.evaluate`).

    ``cache_dir``: keep finished attacks there and reuse them (resume; see :mod:`robustclip.evaluation.cache`), keyed
    by ``checkpoint_sha256`` and ``model_code`` (a digest of the code that builds the model, see
    :func:`robustclip.core.inputs.factory_digest`) among the rest; the gate never passes one.
    ``attack_certified``: the suite's ``skip_certified`` attacks attack certified samples too (see
    :func:`robustclip.evaluation.runner.evaluate`).
    """
    if lipschitz not in ("full", "fast", "off"):
        raise RobustclipError(f"unknown Lipschitz mode {lipschitz!r}", "use full, fast or off")
    if device is not None:
        model = model.to(resolve_device(device))
    dev = device_of(model)
    dataset = meta.dataset if eval_set is None else eval_set.dataset
    in_shape = models.input_shape(meta.model) if meta.model and eval_set is None else None
    if data.is_regression(dataset) and eval_set is None:
        test = data.load(dataset, "test")
        lip_seed = 0 if seed is None else seed
        lip = lipschitz_mod.estimate(model, data.load(dataset, "train").x.to(dev), in_shape=in_shape, seed=lip_seed,
                                     exact=True, pairs=LIPSCHITZ_PAIRS)
        with torch.no_grad():
            mse = float(((model(test.x.to(dev)).cpu() - test.y) ** 2).mean())
        rows = [{"attack": "fit", "norm": "none", "eps": 0.0, "accuracy": float("nan"), "n": len(test),
                 "ci_low": float("nan"), "ci_high": float("nan"), "mse": mse}]
        return Evaluation(None, lip, meta, name, rows)
    if suite is None:
        raise RobustclipError(f"model {name} is a {dataset} classifier and needs an attack suite", "pass --suite")
    s = load_suite(suite)
    if eval_set is None:
        split = data.load(dataset, "test", data_dir=data_dir).subset(n or s.n)
        n_classes = loading.check_classifier(model, split.x, data.classes(dataset), name=name)
    else:
        split = eval_set.subset(n or s.n)
        n_classes = loading.check_classifier(model, split.x, None, name=name)
        if int(split.y.max()) >= n_classes:
            raise RobustclipError(f"the data has label {int(split.y.max())} but model {name} has {n_classes} outputs",
                                  f"labels must lie in 0..{n_classes - 1}")
    lip_seed = s.seed if seed is None else seed
    with devices.exact_math() as exact_flags:  # TF32 rounding could void a bound or a certificate
        lip, res = _bounds_and_attacks(model, split, s, in_shape=in_shape, lip_seed=lip_seed, lipschitz=lipschitz,
                                       dev=dev, name=name, dataset=dataset, n_classes=n_classes,
                                       batch_size=batch_size, seed=seed, progress=progress,
                                       keep_adversarial=keep_adversarial, refine=refine_lipschitz,
                                       attack_certified=attack_certified,
                                       cache=_attack_cache(cache_dir, s, split, checkpoint_sha256, dev, batch_size,
                                                           seed, model_code))
    res.meta.update(devices.describe(dev))
    res.meta.update({f"bounds_{k}": v for k, v in exact_flags.items()})
    if lip.plan is not None:
        res.meta["lipschitz_plan"] = lip.plan
    res.meta["data_source"] = split.source
    from .cache import images_digest

    res.meta["images_sha256"] = images_digest(split.x, split.y)  # pairs evaluations on the same images (compare)
    rows = res.frame.drop(columns=["model", "dataset"]).to_dict(orient="records")
    if clean_full:
        full = data.load(dataset, "test", data_dir=data_dir) if eval_set is None else eval_set
        if len(full) > len(split):  # clean accuracy is cheap: also report it on the whole test set
            k = int((attacking.predict(model, full.x).argmax(1) == full.y).sum())
            lo, hi = stats.wilson(k, len(full))
            rows.append({"attack": "clean_full", "norm": "none", "eps": 0.0, "accuracy": k / len(full),
                         "n": len(full), "ci_low": lo, "ci_high": hi})
    return Evaluation(res, lip, meta, name, rows, info={"lipschitz": lipschitz})


def _announce(model: nn.Module, split: data.Split, s: Suite, plan: Any, lipschitz: str) -> None:
    """Before long work: the estimated time from a short timed probe and the settings that would make it cheaper."""
    from . import time_estimate

    rate = time_estimate.probe_rate(model, split.x)
    est = time_estimate.estimate_seconds(model, s, len(split), rate, tuple(split.x.shape[1:]), plan)
    if est["total"] >= time_estimate.LONG:
        progress_mod.note(time_estimate.advice(est, n=len(split), lipschitz=lipschitz))


def _attack_cache(cache_dir: str | os.PathLike[str] | None, s: Suite, split: data.Split, sha: str | None,
                  dev: torch.device, batch_size: int | None, seed: int | None, model_code: str | None) -> Any:
    """The resume cache of one evaluation (None without ``cache_dir`` or a checkpoint digest)."""
    if cache_dir is None or sha is None:
        return None
    from ..attacks.suites import suite_digest
    from .cache import AttackCache, images_digest

    return AttackCache(cache_dir, {"suite": suite_digest(s.raw), "checkpoint": sha,
                                   "images": images_digest(split.x, split.y), "n": len(split), "seed": seed,
                                   "batch_size": batch_size or s.batch_size, "device": dev.type,
                                   "model_code": model_code})


def _bounds_and_attacks(model: nn.Module, split: data.Split, s: Suite, *, in_shape: tuple[int, ...] | None,
                        lip_seed: int, lipschitz: str, dev: torch.device, name: str, dataset: str, n_classes: int,
                        batch_size: int | None, seed: int | None, progress: bool, keep_adversarial: bool = False,
                        cache: Any = None, refine: bool = False, attack_certified: bool = False
                        ) -> tuple[upper.LipschitzReport, evaluation.EvalResult]:
    """The Lipschitz report (within the mode's cost budget) and the attack evaluation of :func:`evaluate_model`."""
    if lipschitz == "off":
        t_up = time.perf_counter()
        up: float | None = None
        why: str | None = None
        try:
            up = upper.upper_bound(model, in_shape or tuple(split.x.shape[1:]), seed=lip_seed)
        except ValueError as exc:  # not understood: no upper bound and no certificate, with the reason
            why = str(exc).removeprefix("no Lipschitz upper bound: ")
        lip = upper.LipschitzReport(lower=0.0, upper=up, lower_quotient=0.0, lower_jacobian=0.0,
                                            seconds={"upper": time.perf_counter() - t_up}, seed=lip_seed,
                                            upper_reason=why)
    else:
        plan = lipschitz_budget.plan_ascent(model, in_shape or tuple(split.x.shape[1:]), lipschitz)
        if progress:
            progress_mod.note(plan.describe())
            _announce(model, split, s, plan, lipschitz)
        lip = lipschitz_mod.estimate(model, split.x[:LIPSCHITZ_POINTS].to(dev), in_shape=in_shape, seed=lip_seed,
                                     plan=plan, fast_upper=lipschitz == "fast",
                                     refine=refine and lipschitz == "full")
    res = evaluation.evaluate(model, split.x, split.y, suite=s, model_name=name, dataset=dataset,
                              n_classes=n_classes, batch_size=batch_size, seed=seed,
                              lip_upper=None, lip_lower=lip.lower, progress=progress,  # sound per-pair bounds
                              keep_adversarial=keep_adversarial, cache=cache, attack_certified=attack_certified)
    if cache is not None:
        res.meta["attack_cache"] = {"folder": str(cache.folder), "hits": cache.hits, "misses": cache.misses,
                                    "rejected": cache.rejected}
    return lip, res


VAL_N = 1000
"""The most validation images a sweep run scores for model selection by default (the run's own held-out split,
never test images); a run scores as many as the test images it is evaluated on, up to this."""


def selection_suite(suite: Suite) -> Suite:
    """The cheap attack pair that scores validation data for model selection, at ``suite``'s headline (norm, ε):
    PGD (100 steps), then APGD-CE (100 steps) on the samples PGD did not break."""
    from ..attacks.suites import parse_suite

    norm, eps = suite.headline or ("L2", 2.0)
    return parse_suite({"name": f"selection-{norm}-{eps:g}", "seed": suite.seed, "cascade": True,
                        "batch_size": suite.batch_size, "certify": False,
                        "attack": [{"type": "clean"}, {"type": "pgd", "norm": norm, "eps": eps, "steps": 100},
                                   {"type": "apgd", "norm": norm, "eps": eps, "steps": 100, "loss": "ce"}]},
                       where="<selection suite>")


def validation_rows(model: nn.Module, cfg: TrainConfig, suite: Suite, *, data_dir: str | None = None,
                    n: int = VAL_N) -> list[dict[str, Any]]:
    """Rows ``val_clean`` and ``val_worst_case`` (at the suite's headline) on the first ``n`` images of ``cfg``'s own
    validation split: what sweeps and reports select settings and checkpoints by, so no choice looks at test images.

    Empty for regression and for a config without a validation split.
    """
    from ..training.trainer import load_training_data

    if data.is_regression(cfg.dataset):
        return []
    _, val = load_training_data(cfg, data_dir)
    if val is None or not len(val):
        return []
    val = val.subset(n)
    s = selection_suite(suite)
    res = evaluation.evaluate(model, val.x, val.y, suite=s, model_name="validation", dataset=cfg.dataset,
                              n_classes=data.classes(cfg.dataset), sanity=False, progress=False, certify=False)
    assert s.headline is not None
    norm, eps = s.headline
    rows = []
    for r in res.frame.drop(columns=["model", "dataset"]).to_dict(orient="records"):
        if r["attack"] == "clean":
            rows.append({**r, "attack": "val_clean"})
        elif r["attack"] == "worst_case" and r["norm"] == norm and abs(float(r["eps"]) - eps) < 1e-9:
            rows.append({**r, "attack": "val_worst_case"})
    return rows


def evaluate_checkpoint(path: str | os.PathLike[str], *, suite: str | Suite, data_dir: str | None = None,
                        n: int | None = None, batch_size: int | None = None, seed: int | None = None,
                        progress: bool = True, model: str | None = None, dataset: str | None = None,
                        trust_factory: bool = False, data_file: str | os.PathLike[str] | None = None,
                        device: str | torch.device | None = None, lipschitz: str = "full",
                        keep_adversarial: bool = False, cache_dir: str | os.PathLike[str] | None = None,
                        refine_lipschitz: bool = True, attack_certified: bool = False) -> Evaluation:
    """Load a model and evaluate it under ``suite`` on its dataset's test split (see :func:`evaluate_model`).

    ``path``: a robustclip checkpoint, or a user's state_dict (safetensors, or ``.pt``/``.pth`` read with
    ``torch.load(weights_only=True)``) with ``model="MODULE:CALLABLE"`` naming the code that builds the network
    (imported: it runs) and ``dataset`` naming what it classifies; see
    :func:`robustclip.checkpoints.foreign.load_model`.
    ``data_file``: evaluate on the user's own data instead of a test split (see
    :func:`robustclip.data.userdata.load_data_file`). Raises :class:`~robustclip.errors.RobustclipError` for a
    regression checkpoint (attack suites need a classifier), a model of no known dataset, and every unreadable or
    tampered file. ``cache_dir``: resume from (and keep) finished attacks there; ``refine_lipschitz`` and
    ``attack_certified``: see :func:`evaluate_model`.
    """
    t0 = time.perf_counter()
    dev = resolve_device(device)  # fail before loading anything
    net, meta = loading.load_model(path, model=model, dataset=dataset, trust_factory=trust_factory)
    eval_set = None if data_file is None else load_data_file(data_file)
    if data.is_regression(meta.dataset):
        raise RobustclipError(f"{path} is a regression model; attack suites need a classifier",
                              "use robustclip.bounds.lipschitz.estimate(..., exact=True) for regression models")
    if eval_set is None and meta.dataset not in data.names(task="classification"):
        raise RobustclipError(f"{path} does not say which dataset its model classifies ({meta.dataset})",
                              f"pass --dataset {' or '.join(data.names(task='classification'))}, or your own data with "
                              "--data FILE|DIR")
    name = meta.name or Path(path).name.removesuffix(".safetensors").removesuffix(".pth").removesuffix(".pt")
    ev = evaluate_model(net, meta, suite=suite, data_dir=data_dir, n=n, batch_size=batch_size, seed=seed,
                        progress=progress, name=name, eval_set=eval_set, device=dev, lipschitz=lipschitz,
                        keep_adversarial=keep_adversarial, cache_dir=cache_dir, refine_lipschitz=refine_lipschitz,
                        attack_certified=attack_certified,
                        checkpoint_sha256=None if cache_dir is None else sha256_file(path),
                        model_code=None if cache_dir is None else factory_digest(model or meta.get("factory")))
    assert ev.result is not None
    train_cfg = meta.train
    train_meta = {k: train_cfg.get(k) for k in ("method", "lam", "target_acc", "seed", "epochs", "final_lam")}
    for k in ("method", "lam", "seed"):  # rc.save(model, path, meta={"method": "clip", "lam": 0.1, "seed": 0})
        if train_meta[k] is None and meta.get(k) is not None:
            train_meta[k] = meta.get(k)
    ev.result.meta.update({"checkpoint": str(path), "checkpoint_sha256": sha256_file(path), "train": train_meta})
    if meta.get("factory"):
        ev.result.meta["model_factory"] = meta["factory"]
    ev.info["seconds"] = time.perf_counter() - t0
    return ev
