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

Device, eval mode, seeding and batching live here, once, for every attack.
The certificates come from :mod:`robustclip.evaluation.certification`, the out-of-memory
checks and heap trimming from :mod:`robustclip.evaluation.memory`.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..attacks import shapes
from ..attacks.suites import ATTACKS, AttackSpec, Suite, load_suite
from ..core import devices
from ..core.devices import device_of as _device_of
from ..core.results import select
from ..errors import RobustclipError
from ..stats import wilson  # robustclip.evaluation.wilson stays importable
from . import samples as samples_mod
from . import sanity as sanity_mod
from .certification import _methods, certificates
from .memory import TRIM_EVERY, _heap_trimmed, is_out_of_memory

COLUMNS = ["model", "dataset", "attack", "norm", "eps", "accuracy", "n", "ci_low", "ci_high"]
_TOL = {"L2": 1e-4, "Linf": 1e-5}


class InvariantError(AssertionError):
    """A sample certified robust was broken by an attack: a certificate (or an attack's check) is wrong."""


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


def check_outputs(model: nn.Module, x: torch.Tensor, n_classes: int | None) -> int:
    """Check the model's output shape against the data; return the number of classes
    (see :func:`robustclip.evaluation.apichecks.check_outputs`)."""
    from .apichecks import check_outputs as check

    return check(model, x, n_classes)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits ``(N, k)`` on the CPU, in chunks of ``batch_size`` moved to the model's device one at a time.

    ``x``: ``(N, ...)`` on any device. Only one chunk's activations live at once, and each chunk's logits go back
    to the CPU before the next, so memory stays flat in N (10k MNIST images cost as much as 1024).
    """
    dev = _device_of(model)
    outs = [model(x[i : i + batch_size].to(dev)).cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs)


ATTACK_BATCH_CAP: dict[str, int] = {"apgd": 250, "apgdt": 250, "fabt": 250, "autoattack": 250}
"""Largest CPU batch for attack types whose heap grows with batch × steps.

torchattacks' APGD allocates a dozen batch-sized temporaries per step; glibc keeps the freed ones, so on 1000
MNIST images APGD-CE peaked at 1.2 GB and targeted APGD (9 × 100 steps) at 2.4 GB (benchmarks/eval_memory.py).
In batches of 250 with the heap trimmed every :data:`TRIM_EVERY` forward passes they stay under 0.75 GB, for
about 1.3-1.7x their wall time on one CPU thread (smaller batches vectorise less). Remove an entry (or clear the
dict) to trade memory back for speed. GPUs keep the suite's batch size (the out-of-memory back-off guards them).
"""


def runtime_meta(model: nn.Module) -> dict[str, Any]:
    """Where and how the evaluation ran: device, deterministic-algorithms flag, cuDNN flags, thread counts."""
    return {"device": str(_device_of(model)), "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "torch_threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads()}


def run_attack(model: nn.Module, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, *, n_classes: int,
               seed: int, batch_size: int, todo: torch.Tensor | None = None,
               log: dict[str, Any] | None = None, stats: dict[str, int] | None = None,
               record: dict[str, Any] | None = None) -> tuple[torch.Tensor, float]:
    """Per-sample correctness ``(N,)`` of ``model`` on ``spec``'s outputs.

    ``x``: ``(N, ...)`` in [0,1] on any device (batches move to the model's device one at a time); ``y``: ``(N,)``.
    Only samples flagged in ``todo`` (default: all) are attacked; others count as wrong. Each batch is seeded
    with ``seed + batch index``, so results do not depend on which other attacks ran. Every output is checked
    to lie in [0,1] and within ε; a violation raises (it would be a bug, not a result). An output with a NaN or
    infinite value (or one the model answers with NaN logits) means the attack malfunctioned: that sample never
    counts as correct, and ``stats["nonfinite"]`` (when a dict is passed) counts such samples.

    Batches: ``batch_size``, at most :data:`ATTACK_BATCH_CAP` for memory-heavy attacks on the CPU. When a batch
    runs out of memory (CPU or GPU), the batch size halves and the batch is retried, down to 1. ``log``, when
    given, receives ``batch_size`` (the size that finished) and ``backoffs`` (one entry per halving).
    ``record``, when given, receives ``norms``: ``(N,)`` float64, the perturbation norm (in ``spec.norm``) of
    each sample's output that the model got wrong (NaN elsewhere; the smallest over restarts), and, when it
    holds ``keep_adversarial=True``, ``adversarial``: ``{sample index: output (…)}`` on the CPU for those samples.
    Inputs of any per-sample shape work: torchattacks sees them as images (see :mod:`robustclip.attacks.shapes`).
    Returns ``(correct, worst observed perturbation norm)``.
    """
    dev = _device_of(model)
    n = x.shape[0]
    correct = torch.zeros(n, dtype=torch.bool)
    broken = torch.zeros(n, dtype=torch.bool)
    idx_all = torch.arange(n) if todo is None else todo.nonzero().flatten().cpu()
    worst = 0.0
    bs = max(1, int(batch_size))
    heavy = dev.type == "cpu" and spec.type in ATTACK_BATCH_CAP
    if heavy:
        bs = min(bs, ATTACK_BATCH_CAP[spec.type])
    bs = devices.fitting_batch(model, dev, spec.type, bs)  # the largest batch that fitted before, found once
    backoffs: list[dict[str, Any]] = []
    atk_cache = None
    norms = torch.full((n,), float("nan"), dtype=torch.float64)
    keep = record is not None and bool(record.get("keep_adversarial"))
    kept: dict[int, torch.Tensor] = {}
    guard = _heap_trimmed(model, TRIM_EVERY) if heavy else contextlib.nullcontext()
    with guard:
        for r in range(spec.restarts):
            start, b = 0, 0
            while start < idx_all.numel():
                idx = idx_all[start : start + bs]
                sel = idx if r == 0 else idx[correct[idx]]  # a restart only attacks samples that survived so far
                if sel.numel():
                    torch.manual_seed(seed + 1000 * r + b)
                    try:
                        if spec.type != "clean" and atk_cache is None:
                            built = spec.build(shapes.attack_model(model, tuple(x.shape[1:])),
                                               n_classes=n_classes, seed=seed + r)
                            assert built is not None
                            built.set_device(dev)
                            atk_cache = built
                        ok, sizes, bad, adv = _attack_batch(model, spec, atk_cache, x[sel].to(dev),
                                                            y[sel].to(dev), seed + 1000 * r + b)
                    except (RuntimeError, MemoryError) as exc:
                        if is_out_of_memory(exc) and bs == 1 and dev.type == "cuda":
                            raise devices.oom_error(model, dev, bs, spec.label) from None
                        if not is_out_of_memory(exc) or bs == 1:
                            raise
                        backoffs.append({"restart": r, "start": int(start), "from": bs, "to": max(1, bs // 2),
                                         "error": type(exc).__name__})
                        bs = max(1, bs // 2)
                        del exc
                        if dev.type == "cuda":
                            torch.cuda.empty_cache()
                        continue  # retry the same samples in smaller batches
                    if sizes.numel() and not bool(sizes.isnan().all()):
                        worst = max(worst, float(sizes.nan_to_num(0.0).max()))
                    # the smallest norm of a fooling output over restarts (NaN compares false: first one wins)
                    better = ~ok & ~bad & ~sizes.isnan() & ~(norms[sel] <= sizes)
                    norms[sel[better]] = sizes[better]
                    if keep:
                        for j in better.nonzero().flatten().tolist():
                            kept[int(sel[j])] = adv[j].detach().cpu().clone()
                    broken[sel] |= bad
                    if r == 0:
                        correct[sel] = ok
                    else:
                        correct[sel] &= ok
                start += idx.numel()
                b += 1
    devices.remember_batch(model, dev, spec.type, bs, bool(backoffs))
    if log is not None:
        log.update({"batch_size": bs, "backoffs": backoffs})
    if record is not None:
        record["norms"] = norms
        if keep:
            record["adversarial"] = kept
    if stats is not None:
        stats["nonfinite"] = stats.get("nonfinite", 0) + int(broken.sum())
    return correct, worst


def cascades(spec: AttackSpec) -> bool:
    """Whether ``spec`` is skipped on samples already broken when its suite has ``cascade = true``.

    Weak attacks (noise, FGSM) run on every clean-correct sample and do not shrink the cascade, so the first
    iterative attack at each (norm, ε) also runs on every sample: the gradient-masking check compares the two.
    Every other norm-bounded attack joins the cascade.
    """
    return spec.bounded and ATTACKS[spec.type].role != "weak"


def survivors(alive: dict[tuple[str, float], torch.Tensor], spec: AttackSpec, clean_ok: torch.Tensor) -> torch.Tensor:
    """The samples ``(N,)`` that ``spec`` attacks in a cascade: clean-correct and not broken by any earlier attack at
    the same norm and an ε no larger (the larger ball holds the smaller one's adversarial examples).

    AutoAttack's order: the worst case per sample is unchanged, since a skipped sample is already broken; the
    attack's own row then counts samples robust to it *and* to every attack before it (a cumulative accuracy).
    """
    if not cascades(spec):
        return clean_ok
    todo = clean_ok.clone()
    for (norm, eps), ok in alive.items():
        if norm == spec.norm and eps <= float(spec.eps or 0.0):
            todo &= ok
    return todo


def _attack_batch(model: nn.Module, spec: AttackSpec, atk: Any, xb: torch.Tensor, yb: torch.Tensor,
                  batch_seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One batch: correctness ``(B,)``, perturbation norms ``(B,)`` (float64, NaN for non-finite outputs and
    unbounded attacks), which outputs were not finite ``(B,)``, and the outputs ``(B, ...)``.

    Correctness, norms and the non-finite mask are on the CPU. A non-finite output (or non-finite logits on it)
    is a malfunction of the attack: never correct, counted by the caller. ``atk`` was built on
    :func:`robustclip.attacks.shapes.attack_model`, so it sees the image view of ``xb``; its output is viewed back.
    """
    if spec.type == "clean":
        adv = xb
    else:
        if hasattr(atk, "seed"):
            atk.seed = batch_seed
        adv = atk(shapes.to_view(xb), yb).detach()
        if adv.shape != xb.shape and adv.numel() == xb.numel():
            adv = adv.reshape(xb.shape)
    finite = torch.isfinite(adv.flatten(1)).all(1)
    sizes = torch.full((xb.shape[0],), float("nan"), dtype=torch.float64)
    if spec.type != "clean":
        got = _verify(spec, xb[finite], adv[finite])
        if got.numel():
            sizes[finite.cpu()] = got
    with torch.no_grad():
        logits = model(torch.where(finite.view(-1, *([1] * (adv.dim() - 1))), adv, xb))
    finite &= torch.isfinite(logits).all(1)
    ok = ((logits.argmax(1) == yb) & finite).cpu()
    return ok, sizes, ~finite.cpu(), adv


def _verify(spec: AttackSpec, x: torch.Tensor, adv: torch.Tensor) -> torch.Tensor:
    """Check that finite outputs ``adv`` lie in [0,1] and within ε of ``x``; their perturbation norms ``(B,)``.

    Norms are float64 on the CPU, in ``spec.norm`` (NaN for attacks that are not norm-bounded). Non-finite
    outputs are screened out by the caller: NaN compares false with every bound and would pass.
    """
    if adv.shape != x.shape:
        raise AssertionError(f"{spec.label} returned shape {tuple(adv.shape)} for input {tuple(x.shape)}")
    if adv.numel() == 0:
        return torch.zeros(adv.shape[0], dtype=torch.float64)
    if not bool(torch.isfinite(adv).all()):
        raise AssertionError(f"{spec.label} returned non-finite values")
    if float(adv.min()) < 0 or float(adv.max()) > 1:
        raise AssertionError(f"{spec.label} left the input domain [0,1]")
    if not spec.bounded:
        return torch.full((adv.shape[0],), float("nan"), dtype=torch.float64)
    d = (adv - x).flatten(1)
    per = (d.norm(dim=1) if spec.norm == "L2" else d.abs().amax(dim=1)).detach().double().cpu()
    size = float(per.max())
    assert spec.norm is not None and spec.eps is not None  # bounded
    if not size <= spec.eps * (1 + _TOL[spec.norm]) + 1e-6:
        raise AssertionError(f"{spec.label} at eps={spec.eps} produced a {spec.norm} perturbation of {size}")
    return per


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, suite: str | Suite,
             model_name: str = "model", dataset: str = "unknown", n_classes: int | None = None,
             batch_size: int | None = None, seed: int | None = None, lip_upper: float | None = None,
             lip_lower: float | None = None, sanity: bool = True, progress: bool = True,
             certify: bool | tuple[str, ...] | None = None, keep_adversarial: bool = False,
             cache: Any = None) -> EvalResult:
    """Evaluate ``model`` on ``x`` ``(N, ...)`` (any per-sample shape) in [0,1] and labels ``y`` ``(N,)`` under a suite.

    ``cache``: a :class:`robustclip.evaluation.cache.AttackCache`; finished attacks are stored there and reused.

    ``lip_upper``: an upper bound on the model's L2 Lipschitz constant given
    by the caller for the ``lipschitz`` certificate (``√2 · lip_upper`` for
    every class pair; ``inf`` disables it); computed soundly when None.
    ``certify``: methods to certify with (``True``: lipschitz and crown;
    ``False``: none), overriding the suite's ``certify`` key. Returns an
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
    from ..core.progress import bar as progress_bar

    t0 = time.perf_counter()
    from ..core.modes import restore_modes, train_modes
    from .apichecks import check_eval_inputs

    s = load_suite(suite)
    modes = train_modes(model)
    model.eval()  # Dropout off, BatchNorm statistics frozen, the shape check included; each module's mode restored
    try:
        k = check_eval_inputs(model, x, y, n_classes)  # data finite in [0,1], (N, k) logits, labels in 0..k-1
        shapes.check_attacks(((a.type, a.label, a.params) for a in s.attacks), tuple(x.shape[1:]), k)
    except BaseException:
        restore_modes(modes)
        raise
    bs = batch_size or s.batch_size
    seed = s.seed if seed is None else seed
    try:
        logits = predict(model, x)
        clean_ok = (logits.argmax(1) == y.cpu()) & torch.isfinite(logits).all(1)  # NaN logits are never right
        nonfinite: dict[tuple[str, str | None, float | None], int] = {}
        bad_logits = int((~torch.isfinite(logits).all(1)).sum())
        if bad_logits:
            nonfinite[("clean", None, None)] = bad_logits
        correct: dict[tuple[str, str | None, float | None], torch.Tensor] = {("clean", None, None): clean_ok}
        worst_norm: dict[tuple[str, str | None, float | None], float] = {}
        fooled_norms: dict[tuple[str, str | None, float | None], torch.Tensor] = {}
        kept: dict[tuple[str, str | None, float | None], dict[int, torch.Tensor]] = {}
        batches: dict[str, dict[str, Any]] = {}
        alive: dict[tuple[str, float], torch.Tensor] = {}  # per (norm, ε): not yet broken by any attack so far
        todo = [a for a in s.attacks if a.type != "clean"]
        bar = progress_bar(todo, enabled=progress, desc=f"attacks on {model_name}", leave=False)
        for i, spec in enumerate(bar):
            bar.set_postfix_str(f"{spec.label} {spec.norm or ''} {spec.eps if spec.eps is not None else ''}")
            key = (spec.label, spec.norm, spec.eps)
            if key in correct:
                raise RobustclipError(f"suite {s.name} lists {spec.label} at {spec.norm} ε={spec.eps} twice",
                                      "give repeated attacks distinct labels")
            stats: dict[str, int] = {}
            log: dict[str, Any] = {}
            batches[f"{spec.label}|{spec.norm}|{spec.eps}"] = log
            todo_mask = survivors(alive, spec, clean_ok) if s.cascade else clean_ok
            record: dict[str, Any] = {"keep_adversarial": keep_adversarial and spec.bounded}
            # a cached attack has no adversarial examples to keep: with keep_adversarial every attack runs
            hit = None if cache is None or keep_adversarial else cache.get(i, spec, todo_mask)
            if hit is not None:
                ok, size, record["norms"] = hit
                log["cached"] = True
            else:
                ok, size = run_attack(model, spec, x, y, n_classes=k, seed=seed + 7 * i, batch_size=bs,
                                      todo=todo_mask, log=log, stats=stats, record=record)
                if cache is not None and not stats.get("nonfinite"):
                    cache.put(i, spec, todo_mask, ok, size, record.get("norms"))
            correct[key] = ok & todo_mask
            if spec.bounded:
                fooled_norms[key] = record["norms"]
                kept[key] = record.get("adversarial", {})
            if cascades(spec):
                cell = (str(spec.norm), float(spec.eps or 0.0))
                alive[cell] = alive.get(cell, clean_ok) & correct[key]
            worst_norm[key] = size
            if stats.get("nonfinite"):
                nonfinite[key] = stats["nonfinite"]
        bar.close()
        methods = s.certify if certify is None else _methods(certify)
        pairs_out: list[torch.Tensor] = []
        cert, cert_info = certificates(model, x, y, logits, s, methods=methods, lip_upper=lip_upper,
                                       sdp=s.certify_sdp if certify is None else False, pairs_out=pairs_out)
        frame, flags = _summarise(s, correct, logits, y, cert, model_name, dataset,
                                  per_method=(methods is not None and len(methods) > 0))
        sanity_mod.check_worst_case(frame, "evaluate")
        best_cert: dict[tuple[str, float], torch.Tensor] = {}
        for got in cert.values():
            for cell, v in got.items():
                best_cert[cell] = best_cert.get(cell, torch.zeros_like(v.cpu())) | v.cpu()
        radius = (samples_mod.lipschitz_radius(logits, y, pairs_out[0]) if pairs_out and "lipschitz" in cert
                  else None)
        per_sample = samples_mod.frame(s, correct, logits, y, best_cert, fooled_norms, radius, x[0].numel())
        classes = samples_mod.per_class(per_sample, s.headline)
        adversarial = _first_breaks(per_sample, kept) if keep_adversarial else []
        if sanity:
            flags += sanity_flags(model, s, correct, x, y, frame, seed=seed, batch_size=bs)
            flags += sanity_mod.near_chance(float(clean_ok.float().mean()), k)
        if s.cascade:
            cascaded = [a.label for a in s.attacks if cascades(a)]
            cascade_note = f"cascade: {', '.join(dict.fromkeys(cascaded))} ran only on samples still robust"
        else:
            cascade_note = ""
        for (a, nm, e), count in nonfinite.items():
            where = a if nm is None else f"{a} at {nm} ε={e}"
            flags.append(f"ATTACK MALFUNCTION: {where} gave NaN or infinite outputs on {count} samples; they count "
                         "as wrong, and the attack's settings (or the model) need fixing")
    finally:
        restore_modes(modes)
    for f in flags:
        warnings.warn(f, stacklevel=2)
    return EvalResult(frame=frame, correct=correct, flags=flags, samples=per_sample, per_class=classes,
                      adversarial=adversarial,
                      lipschitz={"upper": cert_info.get("upper"), "lower": lip_lower, **cert_info},
                      seconds=time.perf_counter() - t0,
                      meta={"suite": s.name, "suite_path": s.path, "seed": seed, "n": int(x.shape[0]),
                            "sample_shape": [int(d) for d in x.shape[1:]],
                            "batch_size": bs, "cascade": s.cascade, "cascade_note": cascade_note,
                            "max_perturbation": {f"{a}|{nm}|{e}": v for (a, nm, e), v in worst_norm.items()},
                            "nonfinite_outputs": {f"{a}|{nm}|{e}": v for (a, nm, e), v in nonfinite.items()},
                            "attack_batches": batches, "per_class": classes, **runtime_meta(model)})


def _first_breaks(per_sample: pd.DataFrame, kept: dict[tuple[str, str | None, float | None], dict[int, torch.Tensor]]
                  ) -> list[tuple[int, str, str, float, torch.Tensor]]:
    """The kept adversarial example of each sample's ``broken_by`` attack at ``broken_at_eps``, once per norm."""
    out: list[tuple[int, str, str, float, torch.Tensor]] = []
    rows = per_sample[(per_sample.broken_by != "") & (per_sample.broken_by != "clean")]
    for i, a, nm, e in rows.drop_duplicates(["sample", "norm"])[["sample", "broken_by", "norm",
                                                                  "broken_at_eps"]].itertuples(index=False):
        t = kept.get((str(a), str(nm), float(e)), {}).get(int(i))
        if t is not None:
            out.append((int(i), str(a), str(nm), float(e), t))
    return out


def _summarise(s: Suite, correct: dict[tuple[str, str | None, float | None], torch.Tensor], logits: torch.Tensor,
               y: torch.Tensor, cert: dict[str, dict[tuple[str, float], torch.Tensor]], model_name: str,
               dataset: str, *, per_method: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """The tidy frame and flags. ``cert``: per-method certificates (see :func:`certificates`).

    Raises :class:`InvariantError` when a certified sample was broken by an
    attack at the same or a smaller ε: certified ≤ worst case must hold per sample.
    """
    n = int(y.shape[0])
    rows: list[dict[str, Any]] = []
    flags: list[str] = []

    def add(attack: str, norm: str | None, eps: float | None, ok: torch.Tensor) -> None:
        k = int(ok.sum())
        lo, hi = wilson(k, n)
        rows.append({"model": model_name, "dataset": dataset, "attack": attack, "norm": norm or "none",
                     "eps": float(eps) if eps is not None else 0.0, "accuracy": k / n if n else float("nan"),
                     "n": n, "ci_low": lo, "ci_high": hi})

    clean_ok = correct[("clean", None, None)]
    add("clean", None, None, clean_ok)
    for (label, norm, eps), ok in correct.items():
        if label != "clean":
            add(label, norm, eps, ok)
    for norm in ("L2", "Linf"):
        cells = sorted(e for (nm, e) in s.grid() if nm == norm)
        running = clean_ok.clone()
        for eps in cells:
            for a in s.grid()[(norm, eps)]:
                running &= correct[(a.label, norm, eps)]
            add("worst_case", norm, eps, running)
            if not cert:
                continue
            best = torch.zeros(n, dtype=torch.bool)
            for method, got in cert.items():
                ok = clean_ok & got[(norm, eps)].cpu()
                broken = ok & ~running
                if bool(broken.any()):
                    i = int(broken.nonzero()[0])
                    raise InvariantError(f"{int(broken.sum())} samples (first: index {i}) certified by {method} at "
                                         f"{norm} ε={eps} but broken by an attack at ε ≤ {eps}; a certificate "
                                         "or an attack's ε check is wrong")
                best |= ok
            add("certified", norm, eps, best)
            if per_method:
                for method, got in cert.items():
                    add(f"certified-{method}", norm, eps, clean_ok & got[(norm, eps)].cpu())
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return frame, flags


def sanity_flags(model: nn.Module, s: Suite, correct: dict[tuple[str, str | None, float | None], torch.Tensor],
                 x: torch.Tensor, y: torch.Tensor, frame: pd.DataFrame,
                 *, seed: int, batch_size: int, probe: int = 200) -> list[str]:
    """Signs of gradient masking, in the spirit of AutoAttack's checks.

    * accuracy that does not fall toward 0 at a very large ε (PGD, 20 steps,
      L2 ε = 10 / L∞ ε = 0.5 on ``probe`` samples);
    * zero input gradients of the loss on many inputs;
    * random noise or one-step FGSM breaking samples (more than 1%) that every iterative attack at the same
      (norm, ε) left robust;
    * a black-box attack (Square) breaking samples that every gradient attack left robust, or its accuracy more
      than 0.2 points below every white-box attack's (:func:`robustclip.evaluation.sanity.square_beats_whitebox`);
    * probability outputs instead of logits, and randomised outputs
    (:func:`robustclip.evaluation.sanity.output_checks`).

    Near-chance models are flagged by :func:`evaluate` itself (:func:`robustclip.evaluation.sanity.near_chance`).
    """
    flags: list[str] = []
    dev = _device_of(model)
    xs, ys = x[:probe], y[:probe]
    flags += sanity_mod.output_checks(model, xs[:64].to(dev))
    flags += sanity_mod.square_beats_whitebox(frame)
    norms_used = sorted({a.norm for a in s.attacks if a.norm is not None and a.bounded}) or ["L2"]
    big = {"L2": 10.0, "Linf": 0.5}
    for norm in norms_used:
        spec = AttackSpec("pgd", "pgd-huge", norm, big[norm], {"steps": 20})
        ok, _ = run_attack(model, spec, xs, ys, n_classes=int(predict(model, xs[:1]).shape[1]), seed=seed,
                           batch_size=batch_size)
        acc = float(ok.float().mean())
        if acc > 0.15:
            flags.append(f"GRADIENT MASKING? accuracy stays at {acc:.1%} under PGD-{norm} at a huge ε={big[norm]} "
                         "(it should fall toward 0); gradient attacks may be failing")
    xi = xs.to(dev).clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(xi), ys.to(dev), reduction="sum")
    (g,) = torch.autograd.grad(loss, xi)
    zero = float((g.flatten(1).abs().max(dim=1).values == 0).float().mean())
    if zero > 0.1:
        flags.append(f"GRADIENT MASKING? the loss gradient is exactly zero on {zero:.0%} of inputs "
                     "(saturated outputs); gradient-based accuracies overstate robustness")
    for (norm, eps), specs in s.grid().items():
        # per sample: robust to every iterative gradient attack (in a cascade, the survivors of all of them)
        grad_robust = correct[("clean", None, None)].clone()
        iterative = [a for a in specs if ATTACKS[a.type].role == "iterative"]
        for a in iterative:
            grad_robust &= correct[(a.label, norm, eps)]
        n = max(1, grad_robust.numel())
        for a in (b for b in specs if ATTACKS[b.type].role == "weak") if iterative else ():
            missed = int((grad_robust & ~correct[(a.label, norm, eps)]).sum())
            if missed > max(1, 0.01 * n):
                flags.append(f"GRADIENT MASKING? {a.type} beats iterative attacks at {norm} ε={eps}: it broke "
                             f"{missed} samples ({missed / n:.1%}) that every iterative attack left robust")
        for a in (b for b in specs if ATTACKS[b.type].role == "blackbox") if iterative else ():
            missed = int((grad_robust & ~correct[(a.label, norm, eps)]).sum())
            if missed > max(1, 0.005 * n):
                flags.append(f"GRADIENT MASKING? {a.label} (no gradients) broke {missed} samples that every "
                             f"gradient attack missed at {norm} ε={eps}; the gradient attacks' numbers overstate "
                             "robustness")
    return flags


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
    from ..data import datasets as data

    s = load_suite(suite)
    split = data.load(dataset, "test", data_dir=data_dir).subset(n or s.n)
    res = evaluate(model, split.x, split.y, suite=s, dataset=dataset, n_classes=data.NUM_CLASSES.get(dataset),
                   progress=progress)
    if s.headline is None:
        raise RobustclipError(f"suite {s.name} has no norm-bounded attack, so no robust accuracy",
                              "add a headline or a pgd attack")
    norm, eps = s.headline
    return res.accuracy("clean"), res.accuracy("worst_case", norm, eps)
