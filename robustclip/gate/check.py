"""The CI gate behind ``robustclip check``: compare a model's robustness with a baseline, beyond measured noise.

``robustclip check CKPT --suite S --baseline B.json`` evaluates the checkpoint and compares, row by row, clean
accuracy, each attack's accuracy, the per-sample worst case and certified accuracy at each ε, and the Lipschitz
lower and upper bounds with the baseline.

Two modes, recorded in the baseline (``--update-baseline --mode``):

``fixed`` (one checkpoint)
    The CI job checks the very checkpoint the baseline was made from, or a fine-tuned successor, on the same
    test images. The baseline stores each row's per-sample outcomes as a base64 bitset, and a digest of the
    evaluated images. When the digest matches, a drop is tested **paired**: exact one-sided McNemar (binomial)
    test on the discordant samples, the ``b`` images the baseline got right and the check gets wrong against
    the ``c`` it newly gets right. Rows without stored outcomes (certified accuracy), or other images, fall back
    to the **unpaired** Wilson interval of the current accuracy. The Lipschitz lower bound is stored as
    :data:`LIP_RESTARTS` estimates with different ascent seeds (their spread is the restart noise); the upper
    bound is deterministic up to rounding.
``retrained`` (several checkpoints: the same recipe trained with different seeds)
    The CI job retrains the model and checks the new one. Retraining is bit-identical on one CPU but not
    across CPUs (another vector unit, thread count or BLAS changes the rounding, and 3 epochs of SGD amplify
    it), so the new model is one more draw from the distribution that the seeds sample. Each row stores every
    seed's value; a drop is tested against the one-sided **prediction interval** of one new draw,
    ``mean - t(K-1) · sd · sqrt(1 + 1/K)`` over the K seeds.

Tolerances. A row *regresses* when its adverse change exceeds the tolerance **and** lies beyond noise:

* accuracy: the drop exceeds ``--tolerance`` (default 0.01) and the test above rejects "no drop";
* a Lipschitz bound: it rises above ``mean · (1 + lip_tolerance) + t(K-1) · sd · sqrt(1 + 1/K)``, where mean and
  sd are over the baseline's estimates (ascent restarts in fixed mode, seeds in retrained mode) and
  ``--lip-tolerance`` (default 0.02) is a relative floor: a k·spread + floor rule with k from Student's t.

Every test runs at level ``ALPHA / rows`` (Bonferroni), so a whole check raises a false alarm with probability
at most :data:`ALPHA` = 5%. Each row reports the smallest adverse change it can detect at its n.

A change for the *better* beyond noise (the same test in the other direction) is flagged ``SUSPICIOUS``: an attack
that broke after a library upgrade looks like a robustness gain, a weaker ascent like a smoother model. It is a
loud warning, listed in the JSON and JUnit output, and exit 0 unless ``--fail-on-suspicious``.

Lipschitz bounds are compared only between the same :data:`robustclip.bounds.lipschitz.ESTIMATOR_VERSION` and the same
``--lipschitz`` mode (``full``; ``fast``: fewer pairs and steps; ``off``: no Lipschitz rows). A baseline made with
another estimator is incomparable (a better lower bound is not a regression): exit 2 with the command that
re-creates it. Baselines also record the versions (torch, torchattacks, ...), device, thread count and
determinism flag they were made with; a differing attack library is printed as a note.

Exit codes: 0 nothing regressed; 1 a regression (or, with ``--fail-on-suspicious``, a suspicious gain); 2 a usage or
input error (a NaN tolerance, a missing, corrupt, partial or empty baseline, one made with another suite, n or
dataset, an incomparable estimator); 3 an internal error. A crash is never 1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import platform
import shlex
import stat
import statistics
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core import files as _io
from ..core.results import metric_key, row_key
from ..errors import RobustclipError
from ..stats import mcnemar_p, prediction_halfwidth, t_quantile, wilson, z_quantile

BASELINE_FORMAT = "robustclip-baseline"
FORMAT_VERSION = 2
REPORT_FORMAT = "robustclip-check"
REPORT_VERSION = 1
MODES = ("fixed", "retrained")
LIP_MODES = ("full", "fast", "off")
ALPHA = 0.05
"""Family-wise false-alarm rate of one check (split over its rows, Bonferroni)."""
LIP_RESTARTS = 8
"""Ascent seeds per Lipschitz estimate stored in a fixed-mode baseline."""
MIN_SEEDS = 3
"""Fewest checkpoints of a retrained-mode baseline (a spread needs at least 2; 3 keeps t finite and sane)."""
DEFAULT_TOLERANCE = 0.01
DEFAULT_LIP_TOLERANCE = 0.02
MAX_BASELINE_BYTES = 8 << 20
MAX_JSON_DEPTH = 16


# ----------------------------------------------------------------------------- bitsets and digests


def pack_outcomes(ok: np.ndarray) -> str:
    """A bool vector ``(n,)`` as a compact base64 bitset (little bit order)."""
    return base64.b64encode(np.packbits(np.asarray(ok, dtype=bool), bitorder="little").tobytes()).decode("ascii")


def unpack_outcomes(text: str, n: int) -> np.ndarray:
    """The bool vector ``(n,)`` of :func:`pack_outcomes`; raises ``ValueError`` on a malformed bitset."""
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) != (n + 7) // 8:
        raise ValueError(f"bitset holds {len(raw)} bytes, {n} samples need {(n + 7) // 8}")
    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    if bits[n:].any():
        raise ValueError("bitset has bits set past the last sample")
    return bits[:n].astype(bool)


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


def ev_model_device(ev: Any) -> str:
    """The device an evaluation ran on (as recorded in its meta), ``cpu`` when not recorded."""
    return str((ev.result.meta if ev.result is not None else {}).get("device") or "cpu")


def _eval_split(dataset: str, n: int, data_dir: str | None, data_file: str | None) -> Any:
    from ..checkpoints import foreign as loading
    from ..data import datasets as data

    if data_file is not None:
        return loading.load_data_file(data_file).subset(n)
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


# ----------------------------------------------------------------------------- measuring


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
    from ..bounds import lipschitz as lipmod
    from ..checkpoints import foreign as loading
    from ..core import progress as progress_mod
    from ..evaluation.pipeline import LIPSCHITZ_POINTS, evaluate_checkpoint
    from ..models import specs as models

    src = source or ModelSource()
    t0 = time.perf_counter()
    ev = evaluate_checkpoint(path, suite=suite, data_dir=data_dir, n=n, progress=progress, lipschitz=lipschitz,
                             model=src.model, dataset=src.dataset, data_file=src.data_file, device=src.device)
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
            upper = ev.lipschitz.upper  # deterministic: computed once, not once per ascent seed
            todo = [(m, r) for m in modes for r in range(len(lips.get(m, {}).get("lower", [])), restarts)]
            with progress_mod.bar(total=len(todo), desc="Lipschitz ascent seeds", enabled=progress,
                                  leave=False) as tick:
                for m, r in todo:
                    plan = lipbudget.plan_ascent(model, in_shape or tuple(x.shape[1:]), m)
                    plans[m] = plan.settings()
                    methods, _ = lipmod.lower_estimate(model, x, seed=seed + r, **plan.settings())
                    est = lips.setdefault(m, {"lower": []})
                    for key, values in _bounds(max(methods.values()), upper).items():
                        est.setdefault(key, []).extend(values)
                    tick.set_postfix_str(f"{m} seed {seed + r}", refresh=False)
                    tick.update(1)
    return Measured(path=str(path), sha256=res.meta.get("checkpoint_sha256"), dataset=dataset, n=nn_, seed=seed,
                    frame=res.frame, outcomes=per_sample_outcomes(res, suite),
                    images=images_digest(dataset, nn_, data_dir, data_file=src.data_file), lipschitz=lips,
                    flags=list(res.flags), plans=plans, device=ev_model_device(ev),
                    seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------- baselines


def make_baseline(measured: Sequence[Measured], *, suite_raw: dict[str, Any], suite_name: str, mode: str,
                  lipschitz_mode: str = "full") -> dict[str, Any]:
    """The baseline document (format version 2) for one checkpoint (``fixed``) or several seeds (``retrained``)."""
    from ..attacks.suites import suite_digest

    if mode not in MODES:
        raise RobustclipError(f"unknown baseline mode {mode!r}", f"use one of {', '.join(MODES)}")
    if not measured:
        raise RobustclipError("a baseline needs at least one checkpoint", "pass CKPT")
    first = measured[0]
    for m in measured[1:]:
        if (m.dataset, m.n, m.images["sha256"]) != (first.dataset, first.n, first.images["sha256"]):
            raise RobustclipError(f"{m.path} was evaluated on other images than {first.path}",
                                  "build a retrained baseline from checkpoints of one dataset")
    shas = [m.sha256 for m in measured]
    if mode == "retrained" and len(set(shas)) != len(shas):
        raise RobustclipError("the same checkpoint is given twice; a spread over seeds needs distinct models",
                              "pass checkpoints trained with different seeds")
    frames = [{metric_name(r): r for r in m.frame.to_dict(orient="records")} for m in measured]
    metrics: list[dict[str, Any]] = []
    for name, r in frames[0].items():
        if any(name not in f for f in frames[1:]):
            raise RobustclipError(f"checkpoint {measured[0].path} has row {name} that another lacks",
                                  "build a retrained baseline from checkpoints of one recipe")
        row: dict[str, Any] = {"attack": r["attack"], "norm": r["norm"], "eps": float(r["eps"]), "n": int(r["n"])}
        if mode == "fixed":
            row.update(accuracy=float(r["accuracy"]), ci_low=float(r["ci_low"]), ci_high=float(r["ci_high"]))
            if name in first.outcomes:
                row["outcomes"] = pack_outcomes(first.outcomes[name])
        else:
            runs = [float(f[name]["accuracy"]) for f in frames]
            row.update(accuracy=statistics.fmean(runs), spread=statistics.stdev(runs), runs=runs)
        metrics.append(row)
    lip_modes: dict[str, Any] = {}
    for lm in LIP_MODES[:2]:
        if all(lm in m.lipschitz for m in measured):
            kinds = [b for b in ("lower", "upper") if all(m.lipschitz[lm].get(b) for m in measured)]
            lip_modes[lm] = {b: {"samples": [v for m in measured for v in m.lipschitz[lm][b]]} for b in kinds}
            for b in kinds:
                s = lip_modes[lm][b]["samples"]
                lip_modes[lm][b].update(mean=statistics.fmean(s), spread=statistics.stdev(s) if len(s) > 1 else 0.0)
    return {
        "format": BASELINE_FORMAT, "format_version": FORMAT_VERSION, "mode": mode,
        "suite": suite_name, "suite_sha256": suite_digest(suite_raw), "suite_config": suite_raw,
        "n": first.n, "seed": first.seed, "dataset": first.dataset, "images": first.images,
        "checkpoints": [{"path": m.path, "sha256": m.sha256} for m in measured],
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": _io.versions(), "environment": environment(first.device),
        "metrics": metrics,
        "lipschitz": {"estimator_version": estimator_version(), "made_with": lipschitz_mode,
                      "spread_over": "ascent seeds" if mode == "fixed" else "training seeds", "modes": lip_modes,
                      "plans": {lm: first.plans[lm] for lm in lip_modes if lm in first.plans}},
    }


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def read_baseline(path: str | Path, *, update_cmd: str | None = None) -> dict[str, Any]:
    """Read and fully validate a baseline file (raises :class:`RobustclipError`, exit 2, for anything wrong)."""
    p = Path(path)
    fix = f"re-create it: {update_cmd}" if update_cmd else \
        f"re-create it: robustclip check CKPT --suite S --baseline {p} --update-baseline"
    try:
        st = p.stat()
    except FileNotFoundError:
        raise RobustclipError(f"baseline {p} does not exist", fix) from None
    except OSError as exc:
        raise RobustclipError(f"baseline {p} cannot be read ({exc.strerror})", "check the path") from None
    if not stat.S_ISREG(st.st_mode):
        raise RobustclipError(f"baseline {p} is not a regular file", "pass the path of a baseline JSON file")
    if st.st_size > MAX_BASELINE_BYTES:
        raise RobustclipError(f"baseline {p} is {st.st_size} bytes, more than a baseline can be "
                              f"({MAX_BASELINE_BYTES})", fix)
    try:
        with open(p, "rb") as fh:
            raw = fh.read(MAX_BASELINE_BYTES + 1)
        text = raw.decode("utf-8")
        if _io.json_depth(text) > MAX_JSON_DEPTH:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        doc = json.loads(text, parse_constant=_reject_constant)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise RobustclipError(f"baseline {p} is corrupt (not valid JSON: {first})", fix) from None
    validate_baseline(doc, where=f"baseline {p}", fix=fix)
    return doc


def _finite(v: Any, lo: float = -math.inf, hi: float = math.inf) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi


def validate_baseline(doc: Any, *, where: str = "baseline", fix: str = "re-create it with --update-baseline") -> None:
    """Check every field a comparison relies on; raises :class:`RobustclipError` naming the first problem."""

    def bad(problem: str) -> RobustclipError:
        return RobustclipError(f"{where} {problem}", fix)

    if not isinstance(doc, dict) or doc.get("format") != BASELINE_FORMAT:
        raise bad("is not a robustclip baseline (no \"format\": \"robustclip-baseline\")")
    if doc.get("format_version") != FORMAT_VERSION:
        raise bad(f"has format_version {doc.get('format_version')!r}; this robustclip reads version {FORMAT_VERSION}")
    mode = doc.get("mode")
    if mode not in MODES:
        raise bad(f"has mode {mode!r}, not one of {', '.join(MODES)}")
    for key in ("suite", "suite_sha256", "dataset"):
        if not isinstance(doc.get(key), str) or not doc[key]:
            raise bad(f"lacks a {key}")
    n = doc.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise bad(f"has n={n!r}, not a positive whole number")
    if not isinstance(doc.get("suite_config"), dict):
        raise bad("lacks the suite_config it was made with")
    images = doc.get("images")
    if not isinstance(images, dict) or not isinstance(images.get("sha256"), str) or images.get("first") != n:
        raise bad("lacks the digest of its images")
    if not isinstance(doc.get("versions"), dict) or not isinstance(doc.get("environment"), dict):
        raise bad("lacks the versions and environment it was made with")
    cks = doc.get("checkpoints")
    if not isinstance(cks, list) or not cks or not all(isinstance(c, dict) for c in cks):
        raise bad("lacks the checkpoints it was made from")
    if mode == "retrained" and len(cks) < MIN_SEEDS:
        raise bad(f"is a retrained baseline of {len(cks)} checkpoints; it needs at least {MIN_SEEDS}")
    metrics = doc.get("metrics")
    if not isinstance(metrics, list) or not metrics:
        raise bad("has no metrics (an empty baseline would pass every check)")
    names: set[str] = set()
    for m in metrics:
        if not isinstance(m, dict) or not isinstance(m.get("attack"), str) or not isinstance(m.get("norm"), str):
            raise bad("has a malformed metric entry")
        if not _finite(m.get("eps"), 0.0):
            raise bad(f"has metric {m.get('attack')} with eps {m.get('eps')!r}, not a finite number >= 0")
        name = metric_name(m)
        if name in names:
            raise bad(f"lists metric {name} twice")
        names.add(name)
        if not _finite(m.get("accuracy"), 0.0, 1.0):
            raise bad(f"has metric {name} with accuracy {m.get('accuracy')!r}, not a number in [0, 1]")
        if m.get("n") != n:
            raise bad(f"has metric {name} on n={m.get('n')!r} samples, not {n}")
        if mode == "retrained":
            runs = m.get("runs")
            if not isinstance(runs, list) or len(runs) != len(cks) or not all(_finite(v, 0.0, 1.0) for v in runs):
                raise bad(f"has metric {name} without one accuracy in [0, 1] per checkpoint")
            if abs(statistics.fmean(runs) - m["accuracy"]) > 1e-9:
                raise bad(f"has metric {name} whose accuracy is not the mean of its runs")
        elif "outcomes" in m:
            try:
                ok = unpack_outcomes(m["outcomes"], n) if isinstance(m["outcomes"], str) else None
            except ValueError as exc:
                raise bad(f"has metric {name} with a malformed outcome bitset ({exc})") from None
            if ok is None or abs(float(ok.mean()) - m["accuracy"]) > 1e-9:
                raise bad(f"has metric {name} whose outcome bitset disagrees with its accuracy")
    if "clean" not in names:
        raise bad("has no clean accuracy row")
    grid = (doc["suite_config"].get("eps") or {})
    wanted = [metric_key("worst_case", nm, e) for nm, es in grid.items() if isinstance(es, list)
              for e in es if _finite(e)] if isinstance(grid, dict) else []
    if not any(x.startswith("worst_case@") for x in names) or any(w not in names for w in wanted):
        raise bad("lacks the worst-case rows of its suite (a partial baseline)")
    lip = doc.get("lipschitz")
    if not isinstance(lip, dict) or not isinstance(lip.get("estimator_version"), str) \
            or not isinstance(lip.get("modes"), dict):
        raise bad("lacks its Lipschitz section (estimator_version, modes)")
    plans = lip.get("plans", {})
    if not isinstance(plans, dict) or not all(
            lm in LIP_MODES[:2] and isinstance(p, dict) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                                for v in p.values()) for lm, p in plans.items()):
        raise bad("has malformed Lipschitz ascent plans (settings per mode must be positive whole numbers)")
    for lm, bounds in lip["modes"].items():
        if lm not in LIP_MODES[:2] or not isinstance(bounds, dict):
            raise bad(f"has an unknown Lipschitz mode {lm!r}")
        if "lower" not in bounds:
            raise bad(f"has no {lm} Lipschitz lower bound")
        for b in ("lower", "upper"):
            if b == "upper" and b not in bounds:
                continue  # a model without a sound upper bound (its structure is not understood)
            s = (bounds.get(b) or {}).get("samples") if isinstance(bounds.get(b), dict) else None
            if not isinstance(s, list) or not s or not all(_finite(v) and v > 0 for v in s):
                raise bad(f"has {lm} Lipschitz {b} bounds that are not positive finite numbers")


# ----------------------------------------------------------------------------- comparing


@dataclass
class Comparison:
    """One compared row: the values (accuracy rows: fractions in [0, 1], not percent), the test used, its limit
    and the verdict.

    ``threshold``: the limit beyond which the current value is flagged (accuracy: at or below; a bound: above).
    ``detectable``: the smallest adverse change the row's test can flag at its n (accuracy: absolute; a bound:
    relative to the baseline mean). ``losses``/``gains``: discordant samples of a paired test.
    """

    metric: str
    baseline: float
    current: float
    ci_low: float | None
    ci_high: float | None
    beyond_tolerance: bool
    beyond_noise: bool
    higher_is_better: bool = True
    test: str = "wilson"
    threshold: float | None = None
    p_value: float | None = None
    detectable: float | None = None
    suspicious: bool = False
    losses: int | None = None
    gains: int | None = None

    @property
    def regressed(self) -> bool:
        return self.beyond_tolerance and self.beyond_noise

    @property
    def change(self) -> float:
        return self.current - self.baseline

    @property
    def is_bound(self) -> bool:
        return self.metric.startswith("lipschitz")

    @property
    def verdict(self) -> str:
        if self.regressed:
            return "REGRESSED"
        if self.suspicious:
            return "SUSPICIOUS"
        return "ok"

    def moved(self) -> str:
        """"rose" or "fell" (or "unchanged"), the direction the value actually moved."""
        return "rose" if self.change > 0 else "fell" if self.change < 0 else "unchanged"

    def describe(self) -> str:
        """One line: what moved, from what to what, against which threshold."""
        f = (lambda v: f"{v:.4g}") if self.is_bound else (lambda v: f"{100 * v:.1f}%")
        text = f"{self.metric} {self.moved()} from {f(self.baseline)} to {f(self.current)}"
        if self.threshold is not None:
            text += f" ({'upper' if not self.higher_is_better else 'lower'} limit {f(self.threshold)}"
            text += f", {self.test}" + (f" p={self.p_value:.2g}" if self.p_value is not None else "") + ")"
        if self.suspicious:
            text += ": better beyond noise; check that the attack or estimator did not break"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "kind": "lipschitz" if self.is_bound else "accuracy",
                "baseline": self.baseline, "current": self.current, "change": self.change,
                "direction": self.moved(), "higher_is_better": self.higher_is_better, "test": self.test,
                "threshold": self.threshold, "p_value": self.p_value, "detectable": self.detectable,
                "losses": self.losses, "gains": self.gains, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "beyond_tolerance": self.beyond_tolerance, "beyond_noise": self.beyond_noise,
                "regressed": self.regressed, "suspicious": self.suspicious, "verdict": self.verdict}


def _paired(name: str, base_ok: np.ndarray, cur_ok: np.ndarray, b_acc: float, c_acc: float, n: int,
            tolerance: float, alpha: float, ci: tuple[float, float]) -> Comparison:
    losses = int((base_ok & ~cur_ok).sum())
    gains = int((~base_ok & cur_ok).sum())
    p_worse, p_better = mcnemar_p(losses, gains), mcnemar_p(gains, losses)
    drop = b_acc - c_acc
    b = gains + 1  # smallest detectable drop, given the gains seen
    while b <= n and not ((b - gains) / n > tolerance and mcnemar_p(b, gains) < alpha):
        b += 1
    detect = (b - gains) / n if b <= n else None
    return Comparison(name, b_acc, c_acc, ci[0], ci[1], beyond_tolerance=drop > tolerance,
                      beyond_noise=p_worse < alpha, test="paired McNemar", p_value=p_worse, detectable=detect,
                      threshold=None if detect is None else b_acc - detect,
                      suspicious=-drop > tolerance and p_better < alpha,
                      losses=losses, gains=gains)


def _unpaired(name: str, b_acc: float, c_acc: float, n: int, tolerance: float, alpha: float,
              ci: tuple[float, float]) -> Comparison:
    z = z_quantile(alpha)
    k = round(c_acc * n)
    lo, hi = wilson(k, n, z)
    k0 = round(b_acc * n)
    d = 1
    while d <= k0 and not (d / n > tolerance and wilson(k0 - d, n, z)[1] < b_acc):
        d += 1
    drop = b_acc - c_acc
    return Comparison(name, b_acc, c_acc, ci[0], ci[1], beyond_tolerance=drop > tolerance, beyond_noise=b_acc > hi,
                      test="unpaired Wilson", detectable=d / n if d <= k0 else None,
                      threshold=b_acc - d / n if d <= k0 else None, suspicious=-drop > tolerance and b_acc < lo)


def _seeds(name: str, runs: list[float], c_acc: float, n: int, tolerance: float, alpha: float,
           ci: tuple[float, float]) -> Comparison:
    mean = statistics.fmean(runs)
    half = max(prediction_halfwidth(runs, alpha), t_quantile(1 - alpha, len(runs) - 1) / n)
    allowed = max(tolerance, half)
    drop = mean - c_acc
    return Comparison(name, mean, c_acc, ci[0], ci[1], beyond_tolerance=drop > tolerance, beyond_noise=drop > half,
                      test=f"seed spread (K={len(runs)})", threshold=mean - allowed, detectable=allowed,
                      suspicious=-drop > allowed)


def _bound(name: str, samples: list[float], current: float, lip_tolerance: float, alpha: float,
           spread_over: str) -> Comparison:
    mean = statistics.fmean(samples)
    half = prediction_halfwidth(samples, alpha) + lip_tolerance * mean
    rise_ok = mean + half
    is_lower = name.endswith("lower")
    return Comparison(name, mean, current, None, None, beyond_tolerance=current > mean * (1 + lip_tolerance),
                      beyond_noise=current > rise_ok, higher_is_better=False,
                      test=f"{spread_over} spread (K={len(samples)})", threshold=rise_ok,
                      detectable=half / mean, suspicious=is_lower and current < mean - half)


def update_command(checkpoints: Sequence[str], *, suite: str, baseline: str | Path, mode: str | None = None,
                   lipschitz: str = "full", n: int | None = None) -> str:
    """The exact command that re-creates a baseline."""
    parts = ["robustclip", "check", *map(str, checkpoints), "--suite", str(suite), "--baseline", str(baseline)]
    if mode == "retrained":
        parts += ["--mode", "retrained"]
    if n is not None:
        parts += ["--n", str(n)]
    if lipschitz != "full":
        parts += ["--lipschitz", lipschitz]
    return " ".join(shlex.quote(p) for p in parts) + " --update-baseline"


def precheck(baseline: dict[str, Any], suite_raw: dict[str, Any], n: int, *, lipschitz: str = "full",
             where: str = "baseline", update_cmd: str | None = None) -> None:
    """The comparability checks that need no evaluation (suite, n, estimator version, Lipschitz mode); raises
    :class:`RobustclipError`, so that an incomparable baseline fails in seconds, before the attacks run."""
    from ..attacks.suites import suite_digest

    cmd = update_cmd or "robustclip check CKPT --suite S --baseline B.json --update-baseline"
    fix = f"compare like with like, or re-create the baseline: {cmd}"
    if baseline.get("suite_sha256") != suite_digest(suite_raw):
        raise RobustclipError(f"{where} was made with suite {baseline.get('suite')!r} with other settings than the "
                              "one given", fix)
    if baseline.get("n") != n:
        raise RobustclipError(f"{where} was made on n={baseline.get('n')} samples, this check uses n={n}", fix)
    if lipschitz == "off":
        return
    lip = baseline["lipschitz"]
    if lip["estimator_version"] != estimator_version():
        raise RobustclipError(
            f"{where} holds Lipschitz bounds of estimator version {lip['estimator_version']!r}, this robustclip has "
            f"{estimator_version()!r}; bounds of different estimators are not comparable (a better lower bound is "
            f"not a regression)", f"re-create it: {cmd}  (or skip the bounds with --lipschitz off)")
    if lipschitz not in lip["modes"]:
        raise RobustclipError(f"{where} has no {lipschitz!r} Lipschitz estimates (it has: "
                              f"{', '.join(lip['modes']) or 'none'})",
                              f"use --lipschitz {next(iter(lip['modes']), 'off')}, or re-create it with "
                              f"--lipschitz {lipschitz}: {cmd}")


def _same_plan(lip: dict[str, Any], current: Measured, mode: str, *, where: str, fix: str) -> None:
    """Refuse Lipschitz estimates made with other ascent settings than the check's (another budget scaled them
    differently): their numbers are not comparable. A baseline without a recorded plan ran the unscaled defaults."""
    from ..bounds import budget as lipschitz_budget

    made = (lip.get("plans") or {}).get(mode) or lipschitz_budget.default_settings(mode)
    now = current.plans.get(mode)
    if now is not None and dict(made) != dict(now):
        raise RobustclipError(f"{where} holds {mode} Lipschitz estimates made with ascent settings {made}, this check "
                              f"runs {now} (the cost budget scales them with the model); their numbers are not "
                              "comparable", fix)


def compare(baseline: dict[str, Any], current: Measured, *, suite_raw: dict[str, Any], tolerance: float = 0.01,
            lip_tolerance: float = DEFAULT_LIP_TOLERANCE, lipschitz: str = "full", where: str = "baseline",
            update_cmd: str | None = None) -> tuple[list[Comparison], list[str]]:
    """Compare a measured checkpoint with a validated baseline: ``(rows, notes)``.

    Raises :class:`RobustclipError` for a mismatched suite, n or dataset, a missing row, or Lipschitz estimates
    that cannot be compared (another estimator version, or a mode the baseline lacks).
    """
    precheck(baseline, suite_raw, current.n, lipschitz=lipschitz, where=where, update_cmd=update_cmd)
    fix = f"compare like with like, or re-create the baseline: {update_cmd or '... --update-baseline'}"
    if baseline.get("dataset") != current.dataset:
        raise RobustclipError(f"{where} was made on {baseline.get('dataset')}, this checkpoint is for "
                              f"{current.dataset}", fix)
    notes: list[str] = []
    mode = baseline["mode"]
    lip = baseline["lipschitz"]
    bv, cv = baseline.get("versions") or {}, _io.versions()
    for lib in ("torchattacks", "torch"):
        if bv.get(lib) != cv.get(lib):
            notes.append(f"{lib} {bv.get(lib)} made the baseline, {cv.get(lib)} ran this check: a gain beyond noise "
                         "may be an attack that broke")
    made_on = str((baseline.get("environment") or {}).get("device") or "cpu")
    if made_on.split(":")[0] != current.device.split(":")[0]:
        notes.append(f"the baseline was made on {made_on}, this check ran on {current.device}: results are compared "
                     "within the gate's noise (rounding differs across devices; a device change alone should not "
                     "regress)")
    paired_ok = mode == "fixed" and baseline["images"]["sha256"] == current.images["sha256"]
    if mode == "fixed" and not paired_ok:
        notes.append("the evaluated images differ from the baseline's (another data copy?): unpaired tests only")
    cur = {metric_name(r): r for r in current.frame.to_dict(orient="records")}
    lip_rows = [] if lipschitz == "off" else [(b, lip["modes"][lipschitz][b]["samples"]) for b in ("lower", "upper")
                                              if b in lip["modes"][lipschitz]]
    if any(key not in current.lipschitz[lipschitz] for key, _ in lip_rows):
        raise RobustclipError("the baseline has a Lipschitz upper bound but this model has none (its structure is "
                              "no longer one the bounds understand)", "re-create the baseline with --update-baseline")
    n_tests = len(baseline["metrics"]) + len(lip_rows)
    alpha = ALPHA / max(n_tests, 1)
    out: list[Comparison] = []
    for b in baseline["metrics"]:
        name = metric_name(b)
        if name not in cur:
            raise RobustclipError(f"{where} has metric {name} that this evaluation lacks", fix)
        c = cur[name]
        ci = (float(c["ci_low"]), float(c["ci_high"]))
        if mode == "retrained":
            out.append(_seeds(name, [float(v) for v in b["runs"]], float(c["accuracy"]), current.n, tolerance, alpha,
                              ci))
        elif paired_ok and "outcomes" in b and name in current.outcomes:
            out.append(_paired(name, unpack_outcomes(b["outcomes"], current.n), current.outcomes[name],
                               float(b["accuracy"]), float(c["accuracy"]), current.n, tolerance, alpha, ci))
        else:
            out.append(_unpaired(name, float(b["accuracy"]), float(c["accuracy"]), current.n, tolerance, alpha, ci))
    if lip_rows:
        _same_plan(lip, current, lipschitz, where=where, fix=fix)
    for key, samples in lip_rows:
        value = current.lipschitz[lipschitz][key][0]
        out.append(_bound(f"lipschitz_{key}", [float(v) for v in samples], value, lip_tolerance, alpha,
                          str(lip.get("spread_over", "estimate"))))
    return out, notes


def detectable_summary(rows: list[Comparison], n: int) -> str:
    """One line: the smallest accuracy drop this check can detect at its n (over its accuracy rows)."""
    acc = [r for r in rows if not r.is_bound and r.detectable is not None and r.baseline >= r.detectable]
    if not acc:
        return f"smallest detectable drop at n={n}: none (no accuracy row can show a significant drop)"
    best = min(acc, key=lambda r: r.detectable or 0.0)
    worst = max(acc, key=lambda r: r.detectable or 0.0)
    text = f"smallest detectable drop at n={n}: {100 * (best.detectable or 0):.1f} points ({best.metric}, {best.test})"
    if (worst.detectable or 0) > (best.detectable or 0):
        text += f", up to {100 * (worst.detectable or 0):.1f} points ({worst.metric})"
    return text + f"; family-wise false-alarm rate {ALPHA:.0%}"


def format_table(rows: list[Comparison]) -> str:
    """The comparison as a console table."""
    head = f"{'metric':24s} {'baseline':>9s} {'current':>9s} {'change':>8s} {'limit':>9s} {'detects':>8s}  "
    lines = [head + f"{'test':24s} verdict"]
    for r in rows:
        fmt = (lambda v: f"{v:9.4g}") if r.is_bound else (lambda v: f"{100 * v:8.1f}%")
        change = f"{r.change:+8.3g}" if r.is_bound else f"{100 * r.change:+7.1f}"
        limit = f"{'':>9s}" if r.threshold is None or (not r.is_bound and r.threshold < 0) else fmt(r.threshold)
        det = "" if r.detectable is None else (f"{100 * r.detectable:6.1f}%" if r.is_bound
                                               else f"{100 * r.detectable:6.1f}pt")
        test = r.test + (f" p={r.p_value:.2g}" if r.p_value is not None else "")
        if r.regressed:
            verdict = f"REGRESSED ({r.moved()} beyond noise)"
        elif r.suspicious:
            verdict = f"SUSPICIOUS ({r.moved()} beyond noise)"
        elif r.beyond_tolerance:
            verdict = "ok (change within noise)"
        else:
            verdict = "ok"
        lines.append(f"{r.metric:24s} {fmt(r.baseline)} {fmt(r.current)} {change:>8s} {limit} {det:>8s}  "
                     f"{test:24s} {verdict}")
    return "\n".join(lines)


def junit_xml(rows: list[Comparison], *, name: str, seconds: float, fail_on_suspicious: bool = False) -> str:
    """JUnit XML: one testcase per row with its values as properties and in ``<system-out>``.

    A regression is a ``<failure>``; a suspicious gain is a ``<system-err>`` warning (a ``<failure>`` with
    ``fail_on_suspicious``).
    """
    failing = [r for r in rows if r.regressed or (fail_on_suspicious and r.suspicious)]
    suite = ET.Element("testsuite", name=f"robustclip.check.{name}", tests=str(len(rows)),
                       failures=str(len(failing)), errors="0", time=f"{seconds:.3f}")
    for r in rows:
        case = ET.SubElement(suite, "testcase", classname=f"robustclip.{name}", name=r.metric, time="0")
        props = ET.SubElement(case, "properties")
        for key, value in r.to_dict().items():
            if key != "metric" and value is not None:
                ET.SubElement(props, "property", name=key, value=str(value))
        if r in failing:
            kind = "regression" if r.regressed else "suspicious"
            fail = ET.SubElement(case, "failure", message=r.describe(), type=kind)
            fail.text = json.dumps(r.to_dict())
        ET.SubElement(case, "system-out").text = r.describe()
        if r.suspicious and r not in failing:
            ET.SubElement(case, "system-err").text = f"SUSPICIOUS: {r.describe()}"
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def report_json(code: int, rows: list[Comparison], info: dict[str, Any]) -> dict[str, Any]:
    """The machine-readable result of a check (``format``: robustclip-check, ``format_version`` 1)."""
    status = "regressed" if any(r.regressed for r in rows) else "suspicious" if any(r.suspicious for r in rows) \
        else "ok"
    return {"format": REPORT_FORMAT, "format_version": REPORT_VERSION, "status": status, "exit_code": code,
            **info, "regressions": [r.metric for r in rows if r.regressed],
            "suspicious": [r.metric for r in rows if r.suspicious], "comparisons": [r.to_dict() for r in rows]}


# ----------------------------------------------------------------------------- the check


def _check_number(flag: str, v: Any, lo: float, hi: float) -> None:
    if not _finite(v, lo, hi):
        raise RobustclipError(f"{flag} must be a finite number in [{lo:g}, {hi:g}], got {v!r}",
                              f"e.g. {flag} {DEFAULT_TOLERANCE if flag == '--tolerance' else DEFAULT_LIP_TOLERANCE}")


def _suite_for(suite: str, base: dict[str, Any] | None) -> Any:
    """Load ``suite``; a bare name the machine lacks resolves to the suite stored in a baseline of that name."""
    from ..attacks.suites import load_suite, parse_suite
    from ..errors import SuiteError

    try:
        return load_suite(suite)
    except SuiteError:
        if base is not None and base.get("suite") == suite and not str(suite).endswith(".toml"):
            return parse_suite(base["suite_config"], where=f"<suite {suite} stored in the baseline>")
        raise


def run_check(checkpoint: str | Sequence[str], *, suite: str, baseline: str, tolerance: float = DEFAULT_TOLERANCE,
              lip_tolerance: float = DEFAULT_LIP_TOLERANCE, n: int | None = None, update: bool = False,
              mode: str | None = None, lipschitz: str = "full", data_dir: str | None = None,
              progress: bool | None = None, fail_on_suspicious: bool = False, model: str | None = None,
              dataset: str | None = None, data_file: str | None = None, device: str | None = None
              ) -> tuple[int, list[Comparison], dict[str, Any]]:
    """The check as a function: ``(exit code, comparisons, info)``; user errors raise :class:`RobustclipError`.

    With ``update``, evaluates every checkpoint and writes the baseline (``mode``: ``fixed`` for one checkpoint,
    ``retrained`` for several seeds); otherwise checks one checkpoint against the baseline. ``model``,
    ``dataset``, ``data_file``, ``device``: a user's own model code, dataset, evaluation data and device (see
    :class:`ModelSource` and :func:`robustclip.checkpoints.foreign.load_model`). Units: ``tolerance`` and every
    accuracy in
    the comparisons, the info and the baseline are fractions in [0, 1] (0.02 is 2 points); the CLI prints percent.
    """
    from ..core.progress import resolve

    progress = resolve(progress)  # None: on when stderr is a terminal
    source = ModelSource(model=model, dataset=dataset, data_file=data_file, device=device)
    ckpts = [str(checkpoint)] if isinstance(checkpoint, (str, os.PathLike)) else [str(c) for c in checkpoint]
    _check_number("--tolerance", tolerance, 0.0, 0.999)
    _check_number("--lip-tolerance", lip_tolerance, 0.0, 10.0)
    if lipschitz not in LIP_MODES:
        raise RobustclipError(f"--lipschitz must be one of {', '.join(LIP_MODES)}, got {lipschitz!r}",
                              "e.g. --lipschitz fast")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise RobustclipError(f"--n must be a whole number >= 1, got {n!r}", "e.g. --n 500")
    if mode is not None and mode not in MODES:
        raise RobustclipError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}", "e.g. --mode retrained")
    if not ckpts:
        raise RobustclipError("no checkpoint given", "pass CKPT")
    info: dict[str, Any] = {"checkpoint": ckpts[0] if len(ckpts) == 1 else ckpts, "baseline": str(baseline),
                            "tolerance": tolerance, "lip_tolerance": lip_tolerance, "lipschitz": lipschitz,
                            "alpha": ALPHA}
    t0 = time.perf_counter()
    if update:
        mode = mode or "fixed"
        if mode == "fixed" and len(ckpts) != 1:
            raise RobustclipError(f"a fixed baseline is made from one checkpoint, got {len(ckpts)}",
                                  "pass one CKPT, or several seeds with --mode retrained")
        if mode == "retrained" and len(ckpts) < MIN_SEEDS:
            raise RobustclipError(f"a retrained baseline needs at least {MIN_SEEDS} checkpoints (seeds), "
                                  f"got {len(ckpts)}", "train the recipe with more seeds and pass them all")
        if mode == "retrained":
            shas = [_io.sha256_file(c) if Path(c).is_file() else c for c in ckpts]
            if len(set(shas)) != len(shas):
                raise RobustclipError("the same checkpoint is given twice; a spread over seeds needs distinct "
                                      "models", "pass checkpoints trained with different seeds")
        from ..core.outputs import guard_output

        # before any work: never a link, device, folder or input (the checkpoint!), and an existing file is replaced
        # only if it holds a baseline; --update-baseline is the consent to replace that
        guard_output(baseline, inputs=[*ckpts, suite, data_file], what="--baseline", kind="baseline")
        s = _suite_for(suite, None)
        measured = [measure(c, s, n=n, data_dir=data_dir, lipschitz=lipschitz, progress=progress, source=source,
                            restarts=LIP_RESTARTS if mode == "fixed" else 1, both_modes=True) for c in ckpts]
        doc = make_baseline(measured, suite_raw=s.raw, suite_name=s.name, mode=mode, lipschitz_mode=lipschitz)
        validate_baseline(doc, where="the new baseline")  # never write what the check would refuse
        _io.write_json(baseline, doc)
        info.update(suite=s.name, n=measured[0].n, mode=mode, seconds=time.perf_counter() - t0,
                    baseline_written=str(baseline), flags=[f for m in measured for f in m.flags])
        return 0, [], info
    if len(ckpts) != 1:
        raise RobustclipError(f"a check compares one checkpoint with the baseline, got {len(ckpts)}",
                              "pass several checkpoints only with --update-baseline --mode retrained")
    base = read_baseline(baseline, update_cmd=update_command(ckpts, suite=suite, baseline=baseline,
                                                             lipschitz=lipschitz, n=n))
    if mode is not None and mode != base["mode"]:
        raise RobustclipError(f"baseline {baseline} is a {base['mode']} baseline, --mode says {mode}",
                              "drop --mode (a check reads it from the baseline), or re-create the baseline")
    stored = [c.get("path") for c in base["checkpoints"]]
    cmd = update_command(stored if base["mode"] == "retrained" else ckpts, suite=suite, baseline=baseline,
                         mode=base["mode"], lipschitz=lipschitz if lipschitz != "off" else "full", n=n)
    s = _suite_for(suite, base)
    n_eff = n or s.n
    if source is not None and source.data_file is not None:  # a user's data may hold fewer samples than asked for
        n_eff = len(_eval_split("", n_eff, data_dir, source.data_file))
    precheck(base, s.raw, n_eff, lipschitz=lipschitz, where=f"baseline {baseline}", update_cmd=cmd)
    cur = measure(ckpts[0], s, n=n, data_dir=data_dir, lipschitz=lipschitz, progress=progress, source=source)
    rows, notes = compare(base, cur, suite_raw=s.raw, tolerance=tolerance, lip_tolerance=lip_tolerance,
                          lipschitz=lipschitz, where=f"baseline {baseline}", update_cmd=cmd)
    regressed = any(r.regressed for r in rows)
    suspicious = any(r.suspicious for r in rows)
    code = 1 if regressed or (fail_on_suspicious and suspicious) else 0
    info.update(suite=s.name, n=cur.n, mode=base["mode"], seconds=time.perf_counter() - t0, flags=cur.flags,
                notes=notes, detectable=detectable_summary(rows, cur.n), baseline_environment=base["environment"],
                environment=environment(cur.device), estimator_version=estimator_version())
    return code, rows, info
