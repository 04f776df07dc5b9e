"""Gate verdicts: each row compared with its baseline beyond measured noise (paired, unpaired, seeds, bounds)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import files as _io
from ..errors import RobustclipError
from ..stats import mcnemar_p, prediction_halfwidth, t_quantile, wilson, z_quantile
from .baseline import unpack_outcomes
from .measuring import Measured, estimator_version, metric_name

ALPHA = 0.05
"""Family-wise false-alarm rate of one check (split over its rows, Bonferroni)."""
DEFAULT_TOLERANCE = 0.01
DEFAULT_LIP_TOLERANCE = 0.02


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
