"""Running one attack of a suite on a model, per sample: batches on the model's device, seeding, restarts, the
out-of-memory back-off, and the check that every output lies in [0,1] and within ε. Also the cascade's bookkeeping
(which samples a later attack still attacks) and batched prediction."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..attacks import shapes
from ..attacks.kinds import ATTACKS, AttackSpec
from ..core import devices
from ..core.devices import device_of as _device_of
from .memory import TRIM_EVERY, UNTRACKED_ASSIGNMENT, _heap_trimmed, is_out_of_memory, untracked_item_assignment

_TOL = {"L2": 1e-4, "Linf": 1e-5}


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Logits ``(N, k)`` on the CPU, in chunks of ``batch_size`` moved to the model's device one at a time.

    ``x``: ``(N, ...)`` on any device. Only one chunk's activations live at once, and each chunk's logits go back
    to the CPU before the next, so memory stays flat in N (10k MNIST images cost as much as 1024).
    """
    dev = _device_of(model)
    outs = [model(x[i : i + batch_size].to(dev)).cpu() for i in range(0, x.shape[0], batch_size)]
    return torch.cat(outs)


ATTACK_BATCH_CAP: dict[str, int] = {"fabt": 250, "autoattack": 250}
"""Largest CPU batch for attack types whose memory grows with batch × steps.

FAB-T and AutoAttack's bundle run in batches of 250 with the heap trimmed every :data:`TRIM_EVERY` forward passes.
APGD and APGD-T no longer need it: their growth was autograd keeping every step's iterate alive, which
:class:`robustclip.evaluation.memory.untracked_item_assignment` stops (on 1000 MNIST images one APGD-T run went
from a 5.8 GB peak at batch 1000 to 0.45 GB, and ran faster than in batches of 250). Remove an entry (or clear the
dict) to trade memory back for speed. GPUs keep the suite's batch size (the out-of-memory back-off guards them).
"""


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
    idx_all = torch.arange(n) if todo is None else todo.nonzero().flatten().cpu()
    bs = max(1, int(batch_size))
    heavy = dev.type == "cpu" and spec.type in ATTACK_BATCH_CAP
    if heavy:
        bs = min(bs, ATTACK_BATCH_CAP[spec.type])
    bs = devices.fitting_batch(model, dev, spec.type, bs)  # the largest batch that fitted before, found once
    backoffs: list[dict[str, Any]] = []
    atk_cache = None
    tally = _Tally.empty(n, keep=record is not None and bool(record.get("keep_adversarial")))
    guard = _heap_trimmed(model, TRIM_EVERY) if heavy else contextlib.nullcontext()
    with guard:
        for r in range(spec.restarts):
            start, b = 0, 0
            while start < idx_all.numel():
                idx = idx_all[start : start + bs]
                sel = idx if r == 0 else idx[tally.correct[idx]]  # a restart only attacks samples that survived so far
                if sel.numel():
                    torch.manual_seed(seed + 1000 * r + b)
                    try:
                        if spec.type != "clean" and atk_cache is None:
                            atk_cache = _build(model, spec, tuple(x.shape[1:]), n_classes, seed + r, dev)
                        ok, sizes, bad, adv = _attack_batch(model, spec, atk_cache, x[sel].to(dev),
                                                            y[sel].to(dev), seed + 1000 * r + b)
                    except (RuntimeError, MemoryError) as exc:
                        smaller = _halved(exc, model, dev, spec, bs)
                        backoffs.append({"restart": r, "start": int(start), "from": bs, "to": smaller,
                                         "error": type(exc).__name__})
                        bs = smaller
                        del exc
                        if dev.type == "cuda":
                            torch.cuda.empty_cache()
                        continue  # retry the same samples in smaller batches
                    tally.add(sel, r == 0, ok, sizes, bad, adv)
                start += idx.numel()
                b += 1
    devices.remember_batch(model, dev, spec.type, bs, bool(backoffs))
    if log is not None:
        log.update({"batch_size": bs, "backoffs": backoffs})
    if record is not None:
        record["norms"] = tally.norms
        if tally.keep:
            record["adversarial"] = tally.kept
    if stats is not None:
        stats["nonfinite"] = stats.get("nonfinite", 0) + int(tally.broken.sum())
    return tally.correct, tally.worst


def _build(model: nn.Module, spec: AttackSpec, sample_shape: tuple[int, ...], n_classes: int, seed: int,
           dev: torch.device) -> Any:
    """``spec``'s torchattacks object on the model's image view (:func:`robustclip.attacks.shapes.attack_model`)."""
    built = spec.build(shapes.attack_model(model, sample_shape), n_classes=n_classes, seed=seed)
    assert built is not None
    built.set_device(dev)
    return built


def _halved(exc: BaseException, model: nn.Module, dev: torch.device, spec: AttackSpec, bs: int) -> int:
    """The batch size to retry with after ``exc``, half of ``bs``; anything but running out of memory above a batch
    of 1 is raised again (out of GPU memory at 1: a one-line error naming the device)."""
    if is_out_of_memory(exc) and bs == 1 and dev.type == "cuda":
        raise devices.oom_error(model, dev, bs, spec.label) from None
    if not is_out_of_memory(exc) or bs == 1:
        raise exc
    return max(1, bs // 2)


@dataclass
class _Tally:
    """One attack's per-sample outcomes over its batches and restarts, on the CPU.

    ``correct`` ``(N,)``: right on every output so far; ``broken`` ``(N,)``: some output was not finite; ``norms``
    ``(N,)`` float64: the smallest norm of an output that fooled the model (NaN: none); ``kept``: those outputs by
    sample index (with ``keep``); ``worst``: the largest perturbation norm seen.
    """

    correct: torch.Tensor
    broken: torch.Tensor
    norms: torch.Tensor
    keep: bool
    kept: dict[int, torch.Tensor] = field(default_factory=dict)
    worst: float = 0.0

    @classmethod
    def empty(cls, n: int, *, keep: bool) -> _Tally:
        """Nothing attacked yet: no sample correct, none broken, no fooling norm."""
        return cls(torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool),
                   torch.full((n,), float("nan"), dtype=torch.float64), keep)

    def add(self, sel: torch.Tensor, first: bool, ok: torch.Tensor, sizes: torch.Tensor, bad: torch.Tensor,
            adv: torch.Tensor) -> None:
        """One batch of samples ``sel`` (see :func:`_attack_batch` for the rest); ``first``: the first restart."""
        if sizes.numel() and not bool(sizes.isnan().all()):
            self.worst = max(self.worst, float(sizes.nan_to_num(0.0).max()))
        # the smallest norm of a fooling output over restarts (NaN compares false: first one wins)
        better = ~ok & ~bad & ~sizes.isnan() & ~(self.norms[sel] <= sizes)
        self.norms[sel[better]] = sizes[better]
        if self.keep:
            for j in better.nonzero().flatten().tolist():
                self.kept[int(sel[j])] = adv[j].detach().cpu().clone()
        self.broken[sel] |= bad
        if first:
            self.correct[sel] = ok
        else:
            self.correct[sel] &= ok


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
        with untracked_item_assignment() if spec.type in UNTRACKED_ASSIGNMENT else contextlib.nullcontext():
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
