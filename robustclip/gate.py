"""Robustness regression checks: compare a checkpoint's evaluation with a baseline.

``robustclip check CKPT --suite S --baseline B.json`` evaluates the checkpoint
and compares, row by row, clean accuracy, each attack's accuracy, the worst
case and certified accuracy at each ε, and the Lipschitz bounds.

A metric *regresses* when its drop exceeds ``tolerance`` **and** lies beyond
sampling noise: the baseline value falls above the 95% Wilson interval of the
current value (the interval is that of a proportion over n samples, so a
500-sample check does not fail on a one-sample wobble). A Lipschitz bound
regresses when it rises by more than ``lip_tolerance`` (relative).

Exit codes: 0 nothing regressed, 1 a regression, 2 a usage or input error
(a missing or corrupt baseline, or one made with another suite, n or dataset).
"""

from __future__ import annotations

import hashlib
import json
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import _io
from .errors import RobustclipError
from .results import row_key

BASELINE_FORMAT = "robustclip-baseline"


@dataclass
class Comparison:
    """One compared metric."""

    metric: str
    baseline: float
    current: float
    ci_low: float | None
    ci_high: float | None
    beyond_tolerance: bool
    beyond_noise: bool
    higher_is_better: bool = True

    @property
    def regressed(self) -> bool:
        return self.beyond_tolerance and self.beyond_noise

    @property
    def change(self) -> float:
        return self.current - self.baseline

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "baseline": self.baseline, "current": self.current, "change": self.change,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "beyond_tolerance": self.beyond_tolerance,
                "beyond_noise": self.beyond_noise, "regressed": self.regressed}


def suite_digest(raw: dict[str, Any]) -> str:
    """A stable hash of a suite's settings."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def metric_name(row: dict[str, Any]) -> str:
    """The metric's name in tables and baselines (see :func:`robustclip.results.row_key`)."""
    return row_key(row)


def make_baseline(frame: pd.DataFrame, lip: dict[str, Any], *, suite_raw: dict[str, Any], suite_name: str, n: int,
                  seed: int, dataset: str, checkpoint: str | None = None, checkpoint_sha256: str | None = None) -> dict[str, Any]:
    """The baseline document for an evaluation."""
    rows = frame[["attack", "norm", "eps", "accuracy", "n", "ci_low", "ci_high"]].to_dict(orient="records")
    return {"format": BASELINE_FORMAT, "format_version": 1, "suite": suite_name, "suite_sha256": suite_digest(suite_raw),
            "suite_config": suite_raw, "n": n, "seed": seed, "dataset": dataset, "checkpoint": checkpoint,
            "checkpoint_sha256": checkpoint_sha256, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "versions": _io.versions(), "metrics": rows,
            "lipschitz": {"lower": lip.get("lower"), "upper": lip.get("upper")}}


def read_baseline(path: str | Path) -> dict[str, Any]:
    """Read and validate a baseline file (raises :class:`RobustclipError`)."""
    p = Path(path)
    fix = f"re-create it: robustclip check CKPT --suite S --baseline {p} --update-baseline"
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RobustclipError(f"baseline {p} does not exist", fix) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RobustclipError(f"baseline {p} is corrupt (not JSON: {str(exc).splitlines()[0]})", fix) from None
    if not isinstance(doc, dict) or doc.get("format") != BASELINE_FORMAT or not isinstance(doc.get("metrics"), list):
        raise RobustclipError(f"baseline {p} is not a robustclip baseline", fix)
    for m in doc["metrics"]:
        if not isinstance(m, dict) or not {"attack", "norm", "eps", "accuracy"} <= set(m):
            raise RobustclipError(f"baseline {p} has a malformed metric entry", fix)
    return doc


def compare(baseline: dict[str, Any], frame: pd.DataFrame, lip: dict[str, Any], *, suite_raw: dict[str, Any],
            n: int, dataset: str, tolerance: float = 0.01, lip_tolerance: float = 0.05,
            where: str = "baseline") -> list[Comparison]:
    """Compare an evaluation with a baseline; raises on a mismatched suite, n or dataset."""
    fix = "compare like with like, or re-create the baseline with --update-baseline"
    if baseline.get("suite_sha256") != suite_digest(suite_raw):
        raise RobustclipError(f"{where} was made with suite {baseline.get('suite')!r} with other settings than the one given", fix)
    if baseline.get("n") != n:
        raise RobustclipError(f"{where} was made on n={baseline.get('n')} samples, this check uses n={n}", fix)
    if baseline.get("dataset") != dataset:
        raise RobustclipError(f"{where} was made on {baseline.get('dataset')}, this checkpoint is for {dataset}", fix)
    cur = {metric_name(r): r for r in frame.to_dict(orient="records")}
    out: list[Comparison] = []
    for b in baseline["metrics"]:
        name = metric_name(b)
        if name not in cur:
            raise RobustclipError(f"{where} has metric {name} that this evaluation lacks", fix)
        c = cur[name]
        drop = b["accuracy"] - c["accuracy"]
        out.append(Comparison(name, float(b["accuracy"]), float(c["accuracy"]), c["ci_low"], c["ci_high"],
                              beyond_tolerance=drop > tolerance, beyond_noise=b["accuracy"] > c["ci_high"]))
    for key in ("lower", "upper"):
        b_v = (baseline.get("lipschitz") or {}).get(key)
        c_v = lip.get(key)
        if b_v is None or c_v is None:
            continue
        rise = (c_v - b_v) / b_v if b_v else 0.0
        out.append(Comparison(f"lipschitz_{key}", float(b_v), float(c_v), None, None, beyond_tolerance=rise > lip_tolerance,
                              beyond_noise=rise > lip_tolerance, higher_is_better=False))
    return out


def format_table(rows: list[Comparison]) -> str:
    lines = [f"{'metric':28s} {'baseline':>9s} {'current':>9s} {'change':>8s} {'95% CI of current':>19s}  verdict"]
    for r in rows:
        pct = not r.metric.startswith("lipschitz")
        fmt = (lambda v: f"{100 * v:8.1f}%") if pct else (lambda v: f"{v:9.4g}")
        ci = f"[{100 * r.ci_low:5.1f}, {100 * r.ci_high:5.1f}]%" if r.ci_low is not None else ""
        change = f"{100 * r.change:+7.1f}" if pct else f"{r.change:+8.3g}"
        if r.regressed:
            verdict = "REGRESSED"
        elif r.beyond_tolerance:
            verdict = "drop within sampling noise"
        elif (r.change < 0) == r.higher_is_better and r.change != 0:
            verdict = "ok (within tolerance)"
        else:
            verdict = "ok"
        lines.append(f"{r.metric:28s} {fmt(r.baseline)} {fmt(r.current)} {change:>8s} {ci:>19s}  {verdict}")
    return "\n".join(lines)


def junit_xml(rows: list[Comparison], *, name: str, seconds: float) -> str:
    """JUnit XML: one testcase per metric, a <failure> for each regression."""
    suite = ET.Element("testsuite", name=f"robustclip.check.{name}", tests=str(len(rows)),
                       failures=str(sum(r.regressed for r in rows)), errors="0", time=f"{seconds:.3f}")
    for r in rows:
        case = ET.SubElement(suite, "testcase", classname=f"robustclip.{name}", name=r.metric, time="0")
        if r.regressed:
            fail = ET.SubElement(case, "failure", message=f"{r.metric} fell from {r.baseline:.4g} to {r.current:.4g}")
            fail.text = json.dumps(r.to_dict())
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def run_check(checkpoint: str, *, suite: str, baseline: str, tolerance: float = 0.01, lip_tolerance: float = 0.05,
              n: int | None = None, update: bool = False, data_dir: str | None = None,
              progress: bool = False, model: str | None = None,
              dataset: str | None = None, data_file: str | None = None,
              device: str | None = None) -> tuple[int, list[Comparison], dict[str, Any]]:
    """The check as a function: ``(exit code, comparisons, info)``.

    ``model`` and ``dataset``: for a user's state_dict, the code that builds the network (``MODULE:CALLABLE``,
    imported: it runs) and the dataset it classifies; see :func:`robustclip.loading.load_model`. ``data_file``:
    the user's own evaluation data instead of a test split (see :func:`robustclip.loading.load_data_file`).
    ``device``: where the model and attacks run (default: the CPU).
    """
    from .attacks import load_suite
    from .pipeline import evaluate_checkpoint

    if tolerance < 0 or lip_tolerance < 0:
        raise RobustclipError("tolerances must be >= 0", "e.g. --tolerance 0.01")
    s = load_suite(suite)
    base = None if update else read_baseline(baseline)  # fail fast, before the evaluation
    t0 = time.perf_counter()
    ev = evaluate_checkpoint(checkpoint, suite=s, data_dir=data_dir, n=n, progress=progress, model=model,
                             dataset=dataset, data_file=data_file, device=device)
    res, lip = ev.result, ev.lipschitz_dict()
    assert res is not None
    nn_ = int(res.meta["n"])
    dataset = res.frame.dataset.iloc[0]
    info = {"checkpoint": checkpoint, "suite": s.name, "n": nn_, "seconds": time.perf_counter() - t0,
            "flags": res.flags, "tolerance": tolerance, "device": res.meta.get("device")}
    if update:
        doc = make_baseline(res.frame, lip, suite_raw=s.raw, suite_name=s.name, n=nn_, seed=res.meta["seed"],
                            dataset=dataset, checkpoint=Path(checkpoint).name,
                            checkpoint_sha256=res.meta.get("checkpoint_sha256"))
        _io.write_json(baseline, doc)
        info["baseline_written"] = str(baseline)
        return 0, [], info
    assert base is not None
    rows = compare(base, res.frame, lip, suite_raw=s.raw, n=nn_, dataset=dataset, tolerance=tolerance,
                   lip_tolerance=lip_tolerance, where=f"baseline {baseline}")
    return (1 if any(r.regressed for r in rows) else 0), rows, info
