"""Helpers for robustness regression tests in users' test suites.

    from robustclip.testing import assert_robust, assert_lipschitz_below

    def test_model_stays_robust(robustclip_eval_set):      # fixture from the pytest plugin
        x, y = robustclip_eval_set                          # a fresh copy for this test
        assert_robust(model, (x, y), suite="ci-quick", min_accuracy={"clean": 0.95, "worst_case@L2:1": 0.5})
        assert_lipschitz_below(model, x, 10.0)

Both raise ``AssertionError`` with a readable table. May import evaluation and below.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attacks.suites import Suite, load_suite
from ..core.results import canonical_key, row_key
from ..evaluation.runner import EvalResult, evaluate

__all__ = ["assert_robust", "assert_lipschitz_below"]


_key = row_key


def assert_robust(model: nn.Module, data: tuple[torch.Tensor, torch.Tensor], *, suite: str | Suite = "ci-quick",
                  min_accuracy: dict[str, float], n_classes: int | None = None, seed: int | None = None) -> EvalResult:
    """Evaluate ``model`` on ``data`` = ``(x (N,C,H,W) in [0,1], y (N,))`` and assert minimum accuracies.

    Keys of ``min_accuracy`` name rows: ``"clean"``, ``"noise"``, or
    ``"ATTACK@NORM:EPS"`` such as ``"worst_case@L2:1"`` or ``"pgd@Linf:0.1"`` (ε as any number spelling:
    ``"worst_case@L2:1.0"`` is the same row); values are fractions in [0, 1] (``0.9``, not ``90``: a value above 1
    is refused). The failure message prints percent.
    Returns the :class:`EvalResult` when every minimum holds. Failures point at the caller's line (the helper
    hides its own frame from pytest's traceback).
    """
    __tracebackhide__ = True
    from ..evaluation.apichecks import check_thresholds

    min_accuracy = check_thresholds(min_accuracy)  # before the evaluation: NaN, negative, 90 or {} are refused
    x, y = data
    s = load_suite(suite)
    res = evaluate(model, x, y, suite=s, n_classes=n_classes, seed=seed, progress=False, sanity=False)
    rows = {_key(r): r for r in res.frame.to_dict(orient="records")}
    min_accuracy = {canonical_key(k): v for k, v in min_accuracy.items()}
    unknown = [k for k in min_accuracy if k not in rows]
    if unknown:
        raise AssertionError(f"assert_robust: no result named {unknown[0]!r}; available: {', '.join(rows)}")
    lines, failed = [], []
    for k, want in min_accuracy.items():
        got = rows[k]["accuracy"]
        ok = got >= want
        failed += [] if ok else [k]
        lines.append(f"  {k:24s} {100 * got:6.1f}%  (min {100 * want:5.1f}%, 95% CI "
                     f"[{100 * rows[k]['ci_low']:.1f}, {100 * rows[k]['ci_high']:.1f}])  {'ok' if ok else 'TOO LOW'}")
    if failed:
        raise AssertionError(f"robustness below the minimum for {', '.join(failed)} (suite {s.name}, n={len(y)}):\n"
                             + "\n".join(lines))
    return res


def assert_lipschitz_below(model: nn.Module, x: torch.Tensor, bound: float, *, certify: bool = False,
                           seed: int = 0) -> dict[str, float | None]:
    """Assert the model's L2 Lipschitz constant is below ``bound``.

    Fails when the empirical lower bound (pair and Jacobian ascent from ``x``
    ``(N, ...)`` in [0,1]) exceeds ``bound``: then the constant provably does.
    With ``certify=True`` it also fails when the layer-norm upper bound exceeds
    ``bound`` (so a pass proves the claim). Returns the bounds.
    """
    __tracebackhide__ = True
    from ..bounds import lipschitz
    from ..core import validate

    # NaN or inf would make every comparison pass: refused, as a bound of 0 or below that nothing can meet
    validate.number(bound, "assert_lipschitz_below: bound", lo=0, lo_open=True, fix="give a finite bound > 0")
    rep = lipschitz.estimate(model, x, seed=seed)
    upper_bad = rep.upper is None or rep.upper > bound  # no sound upper bound proves nothing
    if rep.lower > bound or (certify and upper_bad):
        upper = "    none" if rep.upper is None else f"{rep.upper:10.4g}"
        raise AssertionError(
            f"Lipschitz constant not below {bound:g}:\n"
            f"  lower bound (ascent)      {rep.lower:10.4g}  {'EXCEEDS' if rep.lower > bound else 'ok'}\n"
            f"  upper bound (sound)       {upper}  "
            f"{'EXCEEDS or unknown' if upper_bad else 'ok'}{'' if certify else ' (not required)'}")
    return {"lower": rep.lower, "upper": rep.upper}
