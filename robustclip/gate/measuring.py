"""Measuring a checkpoint for the gate: evaluation, per-sample outcomes, image digest, Lipschitz estimates."""

from __future__ import annotations

import hashlib
import math
import platform
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..core.results import metric_key, row_key


@dataclass(frozen=True)
class ModelSource:
    """Where a checked model and its evaluation data come from, besides the checkpoint path.

    ``model``: ``MODULE:CALLABLE`` that builds a user's network for a plain state_dict (importing runs it).
    ``dataset``: the dataset it classifies. ``data_file``: the user's own evaluation data (safetensors or .npz)
    instead of a test split. ``device``: where the model and attacks run (None: the CPU).
    """

    model: str | None = None
    dataset: str | None = None
    data_file: str | None = None
    device: str | None = None


def _bounds(lower: float, upper: float | None) -> dict[str, list[float]]:
    """One estimate's bounds as lists; no ``upper`` for a model whose structure has no sound upper bound."""
    out = {"lower": [float(lower)]}
    if upper is not None:
        out["upper"] = [float(upper)]
    return out


def _fast_upper(model: Any, in_shape: tuple[int, ...]) -> float | None:
    """The ``--lipschitz fast`` upper bound (the smallest of ``upper_bounds(..., fast=True)``), or None."""
    from ..bounds.upper import upper_bounds

    ups, _ = upper_bounds(model, in_shape, fast=True)
    finite = [u.value for u in ups if math.isfinite(u.value)]
    return min(finite) if finite else None


def ev_model_device(ev: Any) -> str:
    """The device an evaluation ran on (as recorded in its meta), ``cpu`` when not recorded."""
    return str((ev.result.meta if ev.result is not None else {}).get("device") or "cpu")


def _eval_split(dataset: str, n: int, data_dir: str | None, data_file: str | None) -> Any:
    from ..data import datasets as data
    from ..data.userdata import load_data_file

    if data_file is not None:
        return load_data_file(data_file).subset(n)
    return data.load(dataset, "test", data_dir=data_dir).subset(n)


def images_digest(dataset: str, n: int, data_dir: str | None = None, *,
                  data_file: str | None = None) -> dict[str, Any]:
    """Which images a check evaluates: the first ``n`` of the test split (or of the user's data file), and a
    digest of their pixels and labels."""
    import torch

    split = _eval_split(dataset, n, data_dir, data_file)
    h = hashlib.sha256()
    h.update(repr(tuple(split.x.shape)).encode())
    h.update((split.x * 255).round().clamp(0, 255).to(torch.uint8).contiguous().numpy().tobytes())
    h.update(split.y.to(torch.int64).contiguous().numpy().tobytes())
    return {"split": "test", "first": int(split.x.shape[0]), "sha256": h.hexdigest()}


def metric_name(row: dict[str, Any]) -> str:
    """The metric's name in tables and baselines (see :func:`robustclip.core.results.row_key`)."""
    return row_key(row)


def environment(device: str | None = None) -> dict[str, Any]:
    """Where a result was made: the device (``cpu``, ``cuda:0``), its name, the CUDA version, TF32 flags, the CPU,
    threads and determinism settings. ``device``: the device the evaluation ran on (None: the CPU)."""
    import torch

    from ..core import devices

    return {**devices.describe(device), "machine": platform.machine(),
            "processor": platform.processor() or "unknown",
            "platform": platform.platform(), "torch_threads": torch.get_num_threads(),
            "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled())}


def estimator_version() -> str:
    """The Lipschitz estimator's version (``robustclip.bounds.lipschitz.ESTIMATOR_VERSION``)."""
    from ..bounds import lipschitz

    return str(getattr(lipschitz, "ESTIMATOR_VERSION", "unversioned"))


@dataclass
class Measured:
    """One checkpoint evaluated for the gate: rows, per-sample outcomes, images and Lipschitz estimates.

    ``lipschitz[mode][bound]``: estimates (one per ascent seed) for ``mode`` in full/fast and bound lower/upper.
    """

    path: str
    sha256: str | None
    dataset: str
    n: int
    seed: int
    frame: pd.DataFrame
    outcomes: dict[str, np.ndarray]
    images: dict[str, Any]
    lipschitz: dict[str, dict[str, list[float]]]
    flags: list[str] = field(default_factory=list)
    seconds: float = 0.0
    plans: dict[str, dict[str, int]] = field(default_factory=dict)
    """The Lipschitz ascent settings per mode (:meth:`robustclip.bounds.budget.AscentPlan.settings`)."""
    device: str = "cpu"
    """The device the evaluation ran on (``cpu``, ``cuda:0``)."""


def per_sample_outcomes(res: Any, suite: Any) -> dict[str, np.ndarray]:
    """Per-sample outcomes of every row whose outcomes the evaluation keeps (clean, attacks, worst case).

    The worst case is rebuilt from the attacks' outcomes as :mod:`robustclip.evaluation.runner` defines it (monotone in
    ε); a row whose rebuilt count disagrees with the frame gets no outcomes (and an unpaired test).
    """
    out: dict[str, np.ndarray] = {}
    for (label, norm, eps), ok in res.correct.items():
        out[metric_key(label, norm, eps)] = ok.numpy().astype(bool)
    clean = res.correct[("clean", None, None)]
    grid = suite.grid()
    for norm in ("L2", "Linf"):
        running = clean.clone()
        for eps in sorted(e for (nm, e) in grid if nm == norm):
            for a in grid[(norm, eps)]:
                running &= res.correct[(a.label, norm, eps)]
            out[metric_key("worst_case", norm, eps)] = running.numpy().astype(bool)
    acc = {metric_name(r): r["accuracy"] for r in res.frame.to_dict(orient="records")}
    return {k: v for k, v in out.items() if k in acc and abs(float(v.mean()) - acc[k]) < 1e-9}


def measure(path: str, suite: Any, *, n: int | None = None, data_dir: str | None = None, lipschitz: str = "full",
            restarts: int = 1, both_modes: bool = False, progress: bool = False,
            source: ModelSource | None = None) -> Measured:
    """Evaluate checkpoint ``path`` under ``suite`` for the gate.

    ``restarts``: Lipschitz estimates per mode (ascent seeds ``seed, seed+1, ...``); the first is the pipeline's
    own. ``both_modes``: with ``lipschitz="full"``, also record ``fast`` estimates (so a later check may use either).
    ``source``: a user's model code, dataset, evaluation data file and device (see :class:`ModelSource`).
    """
    from ..bounds import budget as lipbudget
    from ..bounds import lower as lower_mod
    from ..checkpoints import foreign as loading
    from ..core import progress as progress_mod
    from ..evaluation.pipeline import LIPSCHITZ_POINTS, evaluate_checkpoint
    from ..models import specs as models

    src = source or ModelSource()
    t0 = time.perf_counter()
    ev = evaluate_checkpoint(path, suite=suite, data_dir=data_dir, n=n, progress=progress, lipschitz=lipschitz,
                             model=src.model, dataset=src.dataset, data_file=src.data_file, device=src.device,
                             refine_lipschitz=False)  # the baselines' estimator (ESTIMATOR_VERSION)
    res = ev.result
    assert res is not None
    nn_ = int(res.meta["n"])
    seed = int(res.meta["seed"])
    dataset = str(res.frame.dataset.iloc[0])
    lips: dict[str, dict[str, list[float]]] = {}
    plans: dict[str, dict[str, int]] = {}
    if lipschitz != "off":
        lips[lipschitz] = _bounds(ev.lipschitz.lower, ev.lipschitz.upper)
        if ev.lipschitz.plan:
            plans[lipschitz] = {k: int(ev.lipschitz.plan[k]) for k in lipbudget.DEFAULTS[lipschitz]}
        modes = ["full", "fast"] if (both_modes and lipschitz == "full") else [lipschitz]
        if restarts > 1 or len(modes) > 1:
            model, meta = loading.load_model(path, model=src.model, dataset=src.dataset)
            model.to(ev_model_device(ev))
            in_shape = models.input_shape(meta.model) if meta.model and src.data_file is None else None
            x = _eval_split(dataset, nn_, data_dir, src.data_file).x[:LIPSCHITZ_POINTS].to(ev_model_device(ev))
            # deterministic: computed once per mode, not once per ascent seed (fast mode has its own cheap bound)
            uppers = {lipschitz: ev.lipschitz.upper}
            todo = [(m, r) for m in modes for r in range(len(lips.get(m, {}).get("lower", [])), restarts)]
            with progress_mod.bar(total=len(todo), desc="Lipschitz ascent seeds", enabled=progress,
                                  leave=False) as tick:
                for m, r in todo:
                    plan = lipbudget.plan_ascent(model, in_shape or tuple(x.shape[1:]), m)
                    plans[m] = plan.settings()
                    methods, _ = lower_mod.lower_estimate(model, x, seed=seed + r, **plan.settings())
                    est = lips.setdefault(m, {"lower": []})
                    if m not in uppers:
                        uppers[m] = _fast_upper(model, in_shape or tuple(x.shape[1:]))
                    for key, values in _bounds(max(methods.values()), uppers[m]).items():
                        est.setdefault(key, []).extend(values)
                    tick.set_postfix_str(f"{m} seed {seed + r}", refresh=False)
                    tick.update(1)
    return Measured(path=str(path), sha256=res.meta.get("checkpoint_sha256"), dataset=dataset, n=nn_, seed=seed,
                    frame=res.frame, outcomes=per_sample_outcomes(res, suite),
                    images=images_digest(dataset, nn_, data_dir, data_file=src.data_file), lipschitz=lips,
                    flags=list(res.flags), plans=plans, device=ev_model_device(ev),
                    seconds=time.perf_counter() - t0)
