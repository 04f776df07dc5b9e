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

import argparse
import hashlib
import json
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import _io
from .errors import RobustclipError

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
    return row["attack"] if row["norm"] == "none" else f"{row['attack']}@{row['norm']}:{row['eps']:g}"


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


def add_command(sub: Any, fmt: Any) -> None:
    """Register ``check``."""
    p = sub.add_parser("check", help="fail when robustness regressed against a baseline (for CI)", formatter_class=fmt,
                       description="Evaluate a checkpoint under a suite and compare clean, per-attack, worst-case and "
                       "certified accuracy and the Lipschitz bounds with a baseline. Exit 0: nothing regressed; 1: a "
                       "regression beyond the tolerance and beyond sampling noise; 2: a usage or input error.",
                       epilog="examples:\n"
                       "  robustclip check runs/clip.safetensors --suite attacks/ci-quick.toml \\\n"
                       "      --baseline reports/baselines/clip.json --update-baseline       # record\n"
                       "  robustclip check runs/clip.safetensors --suite attacks/ci-quick.toml \\\n"
                       "      --baseline reports/baselines/clip.json --junit-xml check.xml    # gate\n")
    p.add_argument("checkpoint", metavar="CKPT")
    p.add_argument("--suite", required=True, help="attack suite (TOML path, name under ./attacks/, or built-in)")
    p.add_argument("--baseline", required=True, metavar="B.json")
    p.add_argument("--tolerance", type=float, default=0.01, help="largest accepted accuracy drop (default 0.01)")
    p.add_argument("--lip-tolerance", type=float, default=0.05, help="largest accepted relative rise of a Lipschitz bound (default 0.05)")
    p.add_argument("--n", type=int, default=None, help="test samples (default: the suite's n)")
    p.add_argument("--update-baseline", action="store_true", help="write the baseline from this evaluation and exit 0")
    p.add_argument("--json", action="store_true", help="print the comparison as JSON")
    p.add_argument("--junit-xml", metavar="PATH", default=None, help="also write JUnit XML to PATH")
    p.add_argument("--data-dir", metavar="D", default=None)


def run_check(checkpoint: str, *, suite: str, baseline: str, tolerance: float = 0.01, lip_tolerance: float = 0.05,
              n: int | None = None, update: bool = False, data_dir: str | None = None,
              progress: bool = False) -> tuple[int, list[Comparison], dict[str, Any]]:
    """The check as a function: ``(exit code, comparisons, info)``."""
    from .attacks import load_suite
    from .evaluation import evaluate_checkpoint

    if tolerance < 0 or lip_tolerance < 0:
        raise RobustclipError("tolerances must be >= 0", "e.g. --tolerance 0.01")
    s = load_suite(suite)
    base = None if update else read_baseline(baseline)  # fail fast, before the evaluation
    t0 = time.perf_counter()
    res, lip = evaluate_checkpoint(checkpoint, suite=s, data_dir=data_dir, n=n, progress=progress)
    nn_ = int(res.meta["n"])
    dataset = res.frame.dataset.iloc[0]
    info = {"checkpoint": checkpoint, "suite": s.name, "n": nn_, "seconds": time.perf_counter() - t0,
            "flags": res.flags, "tolerance": tolerance}
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


def cmd_check(args: argparse.Namespace) -> int:
    code, rows, info = run_check(args.checkpoint, suite=args.suite, baseline=args.baseline, tolerance=args.tolerance,
                                 lip_tolerance=args.lip_tolerance, n=args.n, update=args.update_baseline,
                                 data_dir=args.data_dir, progress=not args.json)
    if args.update_baseline:
        print(f"wrote baseline {info['baseline_written']} ({info['suite']}, n={info['n']})")
        return 0
    if args.junit_xml:
        _io.write_text(args.junit_xml, junit_xml(rows, name=Path(args.checkpoint).stem, seconds=info["seconds"]))
    if args.json:
        print(json.dumps({**info, "status": "regressed" if code else "ok", "comparisons": [r.to_dict() for r in rows]},
                         indent=2))
    else:
        print(f"robustclip check {args.checkpoint} against {args.baseline} ({info['suite']}, n={info['n']}, "
              f"tolerance {args.tolerance:g})")
        print(format_table(rows))
        bad = [r.metric for r in rows if r.regressed]
        print(f"\nREGRESSED: {', '.join(bad)}" if bad else "\nOK: nothing regressed")
        for f in info["flags"]:
            print(f"WARNING {f}", file=sys.stderr)
    return code
