"""Gate baselines: their format, per-sample outcome bitsets, making, reading and validating them."""

from __future__ import annotations

import base64
import json
import math
import shlex
import stat
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core import files as _io
from ..core.results import metric_key
from ..errors import RobustclipError
from .measuring import Measured, environment, estimator_version, metric_name

BASELINE_FORMAT = "robustclip-baseline"
FORMAT_VERSION = 2
MODES = ("fixed", "retrained")
LIP_MODES = ("full", "fast", "off")
LIP_RESTARTS = 8
"""Ascent seeds per Lipschitz estimate stored in a fixed-mode baseline."""
MIN_SEEDS = 3
"""Fewest checkpoints of a retrained-mode baseline (a spread needs at least 2; 3 keeps t finite and sane)."""
MAX_BASELINE_BYTES = 8 << 20
MAX_JSON_DEPTH = 16


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

    mode, n, cks = _check_header(doc, bad)
    names = _check_metrics(doc.get("metrics"), mode, n, len(cks), bad)
    if "clean" not in names:
        raise bad("has no clean accuracy row")
    grid = (doc["suite_config"].get("eps") or {})
    wanted = [metric_key("worst_case", nm, e) for nm, es in grid.items() if isinstance(es, list)
              for e in es if _finite(e)] if isinstance(grid, dict) else []
    if not any(x.startswith("worst_case@") for x in names) or any(w not in names for w in wanted):
        raise bad("lacks the worst-case rows of its suite (a partial baseline)")
    _check_lipschitz(doc.get("lipschitz"), bad)


_Bad = Callable[[str], RobustclipError]


def _check_header(doc: Any, bad: _Bad) -> tuple[str, int, list[Any]]:
    """The fields before the metrics: format, mode, suite, n, images, environment, checkpoints."""
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
    return str(mode), n, cks


def _check_metrics(metrics: Any, mode: str, n: int, n_checkpoints: int, bad: _Bad) -> set[str]:
    """Every metric entry, in order; returns their names."""
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
            if not isinstance(runs, list) or len(runs) != n_checkpoints or not all(_finite(v, 0.0, 1.0) for v in runs):
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
    return names


def _check_lipschitz(lip: Any, bad: _Bad) -> None:
    """The Lipschitz section: estimator version, ascent plans, and each mode's positive finite bounds."""
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
