"""Evaluation: run a suite on a model, per sample, and summarise honestly.

``evaluate(model, x, y, suite=...)`` returns an :class:`EvalResult` whose
``frame`` is a tidy pandas DataFrame with one row per (attack, norm, ε):

    model, dataset, attack, norm, eps, accuracy, n, ci_low, ci_high

``worst_case`` rows are the per-sample worst case over every norm-bounded
attack at that (norm, ε), made monotone in ε (a sample broken at ε counts as
broken at every larger ε of the same norm: the larger ball contains the
smaller). ``certified`` rows count samples proven robust by the best sound
method asked for (their union; see :mod:`robustclip.bounds.certify`): by default the
global per-class-pair Lipschitz margin ``f_y − f_j > L_yj · r`` (r the L2
radius, ``√d · ε`` for L∞); a suite's ``certify`` key (or the ``certify``
argument) adds local CROWN bounds and per-method ``certified-<method>`` rows.
Models whose structure is not fully understood get no certified rows. Then
per (norm, ε): certified ≤ worst_case ≤ clean is an invariant: a certified
sample broken by an attack raises :class:`InvariantError` (a bug, never a row).

Eval mode and the order of the work live here; running one attack (device, seeding, batching, the output checks)
in :mod:`robustclip.evaluation.attacking`, the frame and the invariant in :mod:`robustclip.evaluation.summary`, the
gradient-masking probes in :mod:`robustclip.evaluation.masking`, the certificates in
:mod:`robustclip.evaluation.certification`, the out-of-memory checks and heap trimming in
:mod:`robustclip.evaluation.memory`; import their names from there.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..attacks import shapes
from ..attacks.suites import Suite, load_suite
from ..core.devices import device_of
from ..core.modes import eval_mode
from ..core.results import select
from ..errors import RobustclipError
from . import samples as samples_mod
from . import sanity as sanity_mod
from .attacking import (
    cascades,
    predict,
    run_attack,
    survivors,
)
from .certification import _methods, certificates
from .masking import sanity_flags
from .summary import first_breaks, summarise, worst_case_masks

Key = tuple[str, str | None, float | None]
"""A row of an evaluation: ``(attack label, norm, ε)``; ``("clean", None, None)`` for the clean inputs."""


@dataclass
class EvalResult:
    """Per-sample outcomes and their summary.

    ``correct[(label, norm, eps)]``: bool ``(n,)``, True where the model is right
    on that attack's output. ``frame``: the tidy summary; its ``accuracy``,
    ``ci_low`` and ``ci_high`` are fractions in [0, 1] (not percent), ``eps`` is
    in input units of [0, 1] images. ``flags``: warnings (near chance, signs of
    gradient masking, attack malfunctions; see :mod:`robustclip.evaluation.sanity`).
    ``lipschitz``: the bounds used for certification. ``seconds``: wall time.
    """

    frame: pd.DataFrame
    correct: dict[tuple[str, str | None, float | None], torch.Tensor]
    flags: list[str] = field(default_factory=list)
    lipschitz: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    samples: pd.DataFrame | None = None
    """Per-sample outcomes, one row per (sample, norm, ε): see :mod:`robustclip.evaluation.samples`."""
    per_class: list[dict[str, Any]] = field(default_factory=list)
    """Clean and worst-case accuracy per true class (see :func:`robustclip.evaluation.samples.per_class`)."""
    adversarial: list[tuple[int, str, str, float, torch.Tensor]] = field(default_factory=list)
    """With ``keep_adversarial``: ``(sample, attack, norm, ε, example)`` for the attack that first broke each
    sample per norm (the ``broken_by`` and ``broken_at_eps`` of :attr:`samples`)."""

    def accuracy(self, attack: str, norm: str | None = None, eps: float | None = None) -> float:
        """Accuracy of one row as a fraction in [0, 1] (0.973, not 97.3), e.g. ``accuracy('worst_case', 'L2', 2.0)``."""
        f = select(self.frame, attack, norm, eps)
        if len(f) != 1:
            raise KeyError(f"no unique row for {attack} {norm} {eps}")
        return float(f.accuracy.iloc[0])


def runtime_meta(model: nn.Module) -> dict[str, Any]:
    """Where and how the evaluation ran: device, deterministic-algorithms flag, cuDNN flags, thread counts."""
    return {"device": str(device_of(model)), "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, suite: str | Suite,
             model_name: str = "model", dataset: str = "unknown", n_classes: int | None = None,
             batch_size: int | None = None, seed: int | None = None, lip_upper: float | None = None,
             lip_lower: float | None = None, sanity: bool = True, progress: bool = True,
             certify: bool | tuple[str, ...] | None = None, keep_adversarial: bool = False,
             cache: Any = None, attack_certified: bool = False) -> EvalResult:
    """Evaluate ``model`` on ``x`` ``(N, ...)`` (any per-sample shape) in [0,1] and labels ``y`` ``(N,)`` under a suite.

    ``cache``: a :class:`robustclip.evaluation.cache.AttackCache`; finished attacks are stored there and reused.

    ``lip_upper``: an upper bound on the model's L2 Lipschitz constant given
    by the caller for the ``lipschitz`` certificate (``√2 · lip_upper`` for
    every class pair; ``inf`` disables it); computed soundly when None.
    ``certify``: methods to certify with (``True``: lipschitz and crown;
    ``False``: none), overriding the suite's ``certify`` key. The attacks a suite names in
    ``[certify] skip_certified`` (``certify-l2``: APGD-T) run after the certificates, only on samples none proves
    robust at their ε; a proven sample counts as robust in their rows (a sound certificate means no attack can
    break it), and ``attack_batches`` records how many each skipped. The earlier attacks still check every
    certificate. ``attack_certified=True`` attacks certified samples too. Returns an
    :class:`EvalResult`. Samples the model gets wrong on clean input are not
    attacked (they count as wrong under every attack). ``keep_adversarial``:
    keep the adversarial example that first broke each sample (per norm) in
    ``result.adversarial``. Attacks that cannot run on the data (Square on
    non-images, DLR losses on too few classes) are refused before any work.

    Args:
        model: a classifier taking inputs in [0,1] (normalisation inside) and returning logits ``(N, k)``.
        x: inputs ``(N, ...)`` in [0,1] (normalisation inside the model).
        y: integer labels ``(N,)`` in 0..k-1.
        suite: a suite name (``ci-quick``, ``paper-mnist``, ...), a TOML path, or a parsed :class:`Suite`; required,
            so a result always says which attacks made it.

    Returns:
        An :class:`EvalResult`: ``frame`` (one row per attack, norm and ε; accuracies and their 95% intervals are
        fractions in [0, 1], not percent), per-sample
        ``correct``, the per-sample ``worst_case``, ``certified`` rows, and gradient-masking ``flags``.

    Example::

        res = robustclip.evaluate(model, x, y, suite="curve-l2", n_classes=10)
        res.accuracy("worst_case", "L2", 1.0)
    """
    from .apichecks import prepare_data

    t0 = time.perf_counter()
    s = load_suite(suite)
    x, y = prepare_data(model, x, y)  # contiguous inputs, int64 labels; meta tensors refused
    with eval_mode(model):  # Dropout off, BatchNorm statistics frozen, the input checks included; modes restored
        k = _check_inputs(model, x, y, s, n_classes)
        bs = batch_size or s.batch_size
        seed = s.seed if seed is None else seed
        logits = predict(model, x)
        methods = s.certify if certify is None else _methods(certify)
        proof = _Proof(lambda broken: certificates(
            model, x, y, logits, s, methods=methods, lip_upper=lip_upper,
            sdp=s.certify_sdp if certify is None else False, pairs_out=proof.pairs, broken=broken))
        skip = frozenset(s.skip_certified) if methods and not attack_certified else frozenset()
        runs = _attack_all(model, s, x, y, logits, n_classes=k, seed=seed, batch_size=bs, cache=cache,
                           keep_adversarial=keep_adversarial, progress=progress, model_name=model_name,
                           skip=skip, prove=lambda correct: proof.union(s, correct))
        cert, cert_info = proof.get(s, runs.correct)
        pairs_out = proof.pairs
        frame, flags = summarise(s, runs.correct, logits, y, cert, model_name, dataset,
                                 per_method=(methods is not None and len(methods) > 0))
        sanity_mod.check_worst_case(frame, "evaluate")
        per_sample = _per_sample(s, runs, logits, x, y, cert, pairs_out)
        classes = samples_mod.per_class(per_sample, s.headline)
        adversarial = first_breaks(per_sample, runs.kept) if keep_adversarial else []
        if sanity:
            flags += sanity_flags(model, s, runs.correct, x, y, frame, seed=seed, batch_size=bs)
            flags += sanity_mod.near_chance(float(runs.correct[("clean", None, None)].float().mean()), k)
        flags += _malfunctions(runs.nonfinite)
    for f in flags:
        warnings.warn(f, stacklevel=2)
    return EvalResult(frame=frame, correct=runs.correct, flags=flags, samples=per_sample, per_class=classes,
                      adversarial=adversarial,
                      lipschitz={"upper": cert_info.get("upper"), "lower": lip_lower, **cert_info},
                      seconds=time.perf_counter() - t0,
                      meta={"suite": s.name, "suite_path": s.path, "seed": seed, "n": int(x.shape[0]),
                            "sample_shape": [int(d) for d in x.shape[1:]],
                            "batch_size": bs, "cascade": s.cascade, "cascade_note": _cascade_note(s, skip),
                            "skip_certified": sorted(skip),
                            "max_perturbation": _by_row(runs.worst_norm),
                            "nonfinite_outputs": _by_row(runs.nonfinite),
                            "attack_batches": runs.batches, "per_class": classes, **runtime_meta(model)})


def _check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: Suite, n_classes: int | None) -> int:
    """Data finite in [0,1], ``(N, k)`` logits, labels in 0..k-1, and every attack of ``s`` able to run on inputs of
    this shape with k classes; returns k."""
    from .apichecks import check_eval_inputs

    k = check_eval_inputs(model, x, y, n_classes)
    shapes.check_attacks(((a.type, a.label, a.params) for a in s.attacks), tuple(x.shape[1:]), k)
    return k


@dataclass
class _Runs:
    """What the attacks of one evaluation found, per row :data:`Key`: per-sample correctness ``(N,)`` (clean
    included), the largest perturbation norm seen, the norms of the outputs that fooled the model ``(N,)`` and the
    kept adversarial examples (bounded attacks), batch logs, and counts of non-finite outputs."""

    correct: dict[Key, torch.Tensor]
    nonfinite: dict[Key, int] = field(default_factory=dict)
    worst_norm: dict[Key, float] = field(default_factory=dict)
    fooled_norms: dict[Key, torch.Tensor] = field(default_factory=dict)
    kept: dict[Key, dict[int, torch.Tensor]] = field(default_factory=dict)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)


Cell = tuple[str, float]
Certs = dict[str, dict[Cell, torch.Tensor]]


@dataclass
class _Proof:
    """The certificates of one evaluation, computed once: before the first attack that skips certified samples, or
    after every attack. ``compute(broken)``: :func:`certificates` given, per cell, the samples attacks broke so far
    (CROWN skips them); ``pairs``: the per-class-pair constants it used."""

    compute: Callable[[dict[Cell, torch.Tensor]], tuple[Certs, dict[str, Any]]]
    pairs: list[torch.Tensor] = field(default_factory=list)
    done: tuple[Certs, dict[str, Any]] | None = None

    def get(self, s: Suite, correct: dict[Key, torch.Tensor]) -> tuple[Certs, dict[str, Any]]:
        """Per-method certificates and their info; ``correct``: the attacks' outcomes so far."""
        if self.done is None:
            robust = worst_case_masks(s, correct, partial=True)  # CROWN need not try what an attack already broke
            self.done = self.compute({cell: ~ok for cell, ok in robust.items()})
        return self.done

    def union(self, s: Suite, correct: dict[Key, torch.Tensor]) -> dict[Cell, torch.Tensor]:
        """Per cell, bool ``(N,)``: proven robust by any method."""
        return _union(self.get(s, correct)[0])


def _union(cert: Certs) -> dict[Cell, torch.Tensor]:
    best: dict[Cell, torch.Tensor] = {}
    for got in cert.values():
        for cell, v in got.items():
            best[cell] = best.get(cell, torch.zeros_like(v.cpu())) | v.cpu()
    return best


def _attack_all(model: nn.Module, s: Suite, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, *,
                n_classes: int, seed: int, batch_size: int, cache: Any, keep_adversarial: bool, progress: bool,
                model_name: str, skip: frozenset[str] = frozenset(),
                prove: Callable[[dict[Key, torch.Tensor]], dict[Cell, torch.Tensor]] | None = None) -> _Runs:
    """Every attack of ``s`` in order, each on the clean-correct samples (in a cascade, those still robust).

    Attacks labelled in ``skip`` leave out the samples ``prove`` (called once, with the outcomes so far, before the
    first of them) proves robust at their (norm, ε); those count as robust in their rows."""
    from ..core.progress import bar as progress_bar

    clean_ok = (logits.argmax(1) == y.cpu()) & torch.isfinite(logits).all(1)  # NaN logits are never right
    runs = _Runs(correct={("clean", None, None): clean_ok})
    bad_logits = int((~torch.isfinite(logits).all(1)).sum())
    if bad_logits:
        runs.nonfinite[("clean", None, None)] = bad_logits
    alive: dict[tuple[str, float], torch.Tensor] = {}  # per (norm, ε): not yet broken by any attack so far
    todo = [a for a in s.attacks if a.type != "clean"]
    proven_all: dict[Cell, torch.Tensor] | None = None
    bar = progress_bar(todo, enabled=progress, desc=f"attacks on {model_name}", leave=False)
    for i, spec in enumerate(bar):
        bar.set_postfix_str(f"{spec.label} {spec.norm or ''} {spec.eps if spec.eps is not None else ''}")
        key = (spec.label, spec.norm, spec.eps)
        if key in runs.correct:
            raise RobustclipError(f"suite {s.name} lists {spec.label} at {spec.norm} ε={spec.eps} twice",
                                  "give repeated attacks distinct labels")
        stats: dict[str, int] = {}
        log: dict[str, Any] = {}
        runs.batches[f"{spec.label}|{spec.norm}|{spec.eps}"] = log
        todo_mask = survivors(alive, spec, clean_ok) if s.cascade else clean_ok
        proven = None
        if spec.label in skip and spec.bounded and prove is not None:
            if proven_all is None:
                bar.set_postfix_str("certificates")
                proven_all = prove(runs.correct)
            cell = (str(spec.norm), float(spec.eps or 0.0))
            proven = proven_all.get(cell, torch.zeros_like(todo_mask)) & todo_mask
            todo_mask = todo_mask & ~proven
            log["certified_skipped"] = int(proven.sum())
        record: dict[str, Any] = {"keep_adversarial": keep_adversarial and spec.bounded}
        # a cached attack has no adversarial examples to keep: with keep_adversarial every attack runs
        hit = None if cache is None or keep_adversarial else cache.get(i, spec, todo_mask)
        if hit is not None:
            ok, size, record["norms"] = hit
            log["cached"] = True
        else:
            t_attack = time.perf_counter()
            ok, size = run_attack(model, spec, x, y, n_classes=n_classes, seed=seed + 7 * i, batch_size=batch_size,
                                  todo=todo_mask, log=log, stats=stats, record=record)
            log.update({"samples": int(todo_mask.sum()), "seconds": round(time.perf_counter() - t_attack, 3)})
            if cache is not None and not stats.get("nonfinite"):
                cache.put(i, spec, todo_mask, ok, size, record.get("norms"))
        runs.correct[key] = ok & todo_mask if proven is None else (ok & todo_mask) | proven
        if spec.bounded:
            runs.fooled_norms[key] = record["norms"]
            runs.kept[key] = record.get("adversarial", {})
        if cascades(spec):
            cell = (str(spec.norm), float(spec.eps or 0.0))
            alive[cell] = alive.get(cell, clean_ok) & runs.correct[key]
        runs.worst_norm[key] = size
        if stats.get("nonfinite"):
            runs.nonfinite[key] = stats["nonfinite"]
    bar.close()
    return runs


def _per_sample(s: Suite, runs: _Runs, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                cert: dict[str, dict[tuple[str, float], torch.Tensor]], pairs_out: list[torch.Tensor]) -> pd.DataFrame:
    """The per-sample frame (:func:`robustclip.evaluation.samples.frame`), certified by the union of the methods."""
    best_cert = _union(cert)
    radius = (samples_mod.lipschitz_radius(logits, y, pairs_out[0]) if pairs_out and "lipschitz" in cert
              else None)
    return samples_mod.frame(s, runs.correct, logits, y, best_cert, runs.fooled_norms, radius, x[0].numel())


def _malfunctions(nonfinite: dict[Key, int]) -> list[str]:
    """One ``ATTACK MALFUNCTION`` flag per row whose outputs (or logits) were NaN or infinite."""
    flags = []
    for (a, nm, e), count in nonfinite.items():
        where = a if nm is None else f"{a} at {nm} ε={e}"
        flags.append(f"ATTACK MALFUNCTION: {where} gave NaN or infinite outputs on {count} samples; they count "
                     "as wrong, and the attack's settings (or the model) need fixing")
    return flags


def _cascade_note(s: Suite, skip: frozenset[str] = frozenset()) -> str:
    """The line a report prints under a cascaded suite, or one whose attacks skipped certified samples (else empty)."""
    notes = []
    if s.cascade:
        cascaded = [a.label for a in s.attacks if cascades(a)]
        notes.append(f"cascade: {', '.join(dict.fromkeys(cascaded))} ran only on samples still robust")
    if skip:
        notes.append(f"{', '.join(sorted(skip))} skipped samples a certificate proves robust (counted robust; "
                     "--attack-certified attacks them too)")
    return "; ".join(notes)


def _by_row(values: dict[Key, Any]) -> dict[str, Any]:
    """``{"label|norm|eps": value}``: a per-row dict with JSON keys."""
    return {f"{a}|{nm}|{e}": v for (a, nm, e), v in values.items()}


def benchmark(model: nn.Module, *, suite: str | Suite, dataset: str = "mnist", n: int | None = 1000,
              data_dir: str | None = None, progress: bool = False) -> tuple[float, float]:
    """RobustBench-style one call: ``(clean accuracy, worst-case accuracy at the suite's headline ε)``.

    Args:
        model: a classifier for ``dataset`` (inputs in [0,1], logits out).
        dataset: ``mnist``, ``fashion-mnist``, ``cifar10`` or ``cifar100`` (the first ``n`` test images are used).
        suite: a suite name or TOML path (required); its headline (norm, ε) names the robust accuracy.

    Returns:
        ``(clean, robust)``, both fractions in [0, 1] (0.973, not 97.3); robust is the per-sample worst case over
        the suite's attacks.

    Example::

        clean, robust = robustclip.benchmark(model, dataset="mnist", suite="paper-mnist", n=1000)
    """
    from ..core import validate
    from ..data import datasets as data

    if n is not None:  # 0, -1, 2.5 and True are refused, never read as "the suite's n" or as 1
        validate.number(n, "benchmark: n", integer=True, lo=1, fix="give a whole number of test images >= 1, or None")
    s = load_suite(suite)
    split = data.load(dataset, "test", data_dir=data_dir).subset(n if n is not None else s.n)
    res = evaluate(model, split.x, split.y, suite=s, dataset=dataset, n_classes=data.classes(dataset),
                   progress=progress)
    if s.headline is None:
        raise RobustclipError(f"suite {s.name} has no norm-bounded attack, so no robust accuracy",
                              "add a headline or a pgd attack")
    norm, eps = s.headline
    return res.accuracy("clean"), res.accuracy("worst_case", norm, eps)
