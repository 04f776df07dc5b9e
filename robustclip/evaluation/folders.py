"""Evaluation folders read back: what ``robustclip evaluate CKPT... --out DIR`` wrote, one record per checkpoint.

An evaluation folder holds ``results.json`` (the suite, one ``runs`` entry per checkpoint with its metadata, the
results rows) and ``samples.csv`` (one row per test sample, norm and ε, see :mod:`robustclip.evaluation.samples`).
``results.json`` carries ``format = "robustclip-evaluation"`` and ``format_version``; a file without them was
written before they existed and is version 1. A folder whose subfolders are evaluation folders (several
``evaluate`` calls under one parent) stands for all of them.

Accuracies here are fractions in [0, 1]; per-sample outcomes are boolean arrays indexed by sample.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import RobustclipError

FORMAT = "robustclip-evaluation"
FORMAT_VERSION = 1
"""The format of ``results.json`` that this robustclip writes and reads (absent: version 1)."""
_MAX_RESULTS_BYTES = 256 * 1024 * 1024
_SAMPLE_COLUMNS = ["model", "sample", "label", "clean_correct", "norm", "eps", "robust"]
Cell = tuple[str, float]
"""A (norm, ε) cell of a suite's grid; ``("clean", 0.0)`` is clean accuracy."""
CLEAN: Cell = ("clean", 0.0)


@dataclass
class Evaluated:
    """One checkpoint's evaluation, read from an evaluation folder.

    ``key``: a name unique among everything read together (the model's name, prefixed by its folder's name where
    two folders hold the same name). ``outcomes``: per cell, bool ``(n,)`` per sample in sample order: correct
    under every attack of the cell's norm at every ε up to the cell's (the worst case); :data:`CLEAN` holds clean
    correctness. ``images``: SHA-256 of the evaluated images and labels (None for folders written before
    robustclip recorded it). ``method``, ``lam``, ``seed``: the checkpoint's training metadata (None if unknown).
    ``rows``: the model's rows of results.json (accuracies as fractions); ``meta``: its ``runs`` entry.
    """

    key: str
    name: str
    folder: Path
    checkpoint: str | None
    sha256: str | None
    suite: str
    suite_digest: str
    dataset: str
    n: int
    images: str | None
    attack_seed: int | None
    method: str | None
    lam: float | None
    seed: int | None
    outcomes: dict[Cell, np.ndarray]
    headline: Cell | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    lipschitz: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> tuple[str, str, str]:
        """What must agree for two evaluations to be compared: suite name, suite settings digest, dataset."""
        return (self.suite, self.suite_digest, self.dataset)

    def accuracy(self, cell: Cell) -> float:
        """The fraction of samples correct in ``cell``."""
        return float(self.outcomes[cell].mean()) if self.n else math.nan


def is_evaluation_folder(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` holds results.json and samples.csv (what ``robustclip evaluate`` writes)."""
    p = Path(path)
    return (p / "results.json").is_file() and (p / "samples.csv").is_file()


def expand(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The evaluation folders ``paths`` stand for: each path itself, or its subfolders that are evaluation folders.

    Raises :class:`RobustclipError` for a path that is neither, naming what it is (a file, a sweep folder, ...).
    """
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if is_evaluation_folder(p):
            out.append(p)
            continue
        if not p.exists():
            raise RobustclipError(f"{p} does not exist", "pass the --out folder of robustclip evaluate")
        if not p.is_dir():
            raise RobustclipError(f"{p} is a file, not an evaluation folder",
                                  "pass the --out folder of robustclip evaluate (it holds results.json and "
                                  "samples.csv)")
        subs = sorted(q for q in p.iterdir() if q.is_dir() and is_evaluation_folder(q))
        if subs:
            out.extend(subs)
            continue
        if (p / "sweep.json").is_file():
            raise RobustclipError(f"{p} is a sweep folder, not an evaluation folder",
                                  f"robustclip report {p} reports a sweep; compare takes the --out folders of "
                                  "robustclip evaluate")
        missing = [f for f in ("results.json", "samples.csv") if not (p / f).is_file()]
        raise RobustclipError(f"{p} is not an evaluation folder (no {' or '.join(missing)})",
                              "pass the --out folder of robustclip evaluate CKPT... (it holds results.json and "
                              "samples.csv)")
    seen: set[Path] = set()
    for p in out:
        if p.resolve() in seen:
            raise RobustclipError(f"evaluation folder {p} is given twice", "list each folder once")
        seen.add(p.resolve())
    return out


def read_results(folder: Path) -> dict[str, Any]:
    """``folder/results.json``, checked: a robustclip evaluation of a format version this robustclip reads."""
    from ..core import validate
    from ..core.files import loads_json_bounded

    path = folder / "results.json"
    raw = validate.read_bytes(path, "results file", max_bytes=_MAX_RESULTS_BYTES)
    try:
        doc = loads_json_bounded(raw, max_bytes=_MAX_RESULTS_BYTES, what=str(path))
    except ValueError as exc:
        raise RobustclipError(f"{path} is not valid JSON ({exc})", "re-run robustclip evaluate to rewrite it") from None
    fix = "pass the --out folder of robustclip evaluate"
    if not isinstance(doc, dict) or doc.get("format", FORMAT) != FORMAT:
        raise RobustclipError(f"{path} is not the results of robustclip evaluate", fix)
    version = doc.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RobustclipError(f"{path} has an invalid format_version {version!r}",
                              "re-run robustclip evaluate to rewrite it")
    if version > FORMAT_VERSION:
        raise RobustclipError(f"{folder} was written in evaluation format {version}; this robustclip reads format "
                              f"{FORMAT_VERSION}", "upgrade robustclip, or re-run robustclip evaluate with this one")
    if not isinstance(doc.get("runs"), list) or not doc["runs"] or not isinstance(doc.get("results"), list):
        raise RobustclipError(f"{path} holds no evaluated checkpoints (no runs or results)", fix)
    return doc


def _samples(folder: Path) -> pd.DataFrame:
    path = folder / "samples.csv"
    try:
        frame = pd.read_csv(path, usecols=lambda c: c in _SAMPLE_COLUMNS)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise RobustclipError(f"cannot read {path} ({str(exc).splitlines()[0] if str(exc) else exc})",
                              "re-run robustclip evaluate to rewrite it") from None
    missing = [c for c in _SAMPLE_COLUMNS if c not in frame.columns]
    if missing:
        raise RobustclipError(f"{path} lacks the column(s) {', '.join(missing)}",
                              "re-run robustclip evaluate to rewrite it")
    return frame


def _bools(values: pd.Series, path: Path) -> np.ndarray:
    if values.dtype == bool:
        return values.to_numpy(dtype=bool)
    text = values.astype(str).str.strip().str.lower()
    if not text.isin(["true", "false", "1", "0"]).all():
        raise RobustclipError(f"{path} has outcomes that are not true/false", "re-run robustclip evaluate")
    return text.isin(["true", "1"]).to_numpy()


def _outcomes(samples: pd.DataFrame, name: str, path: Path) -> tuple[int, dict[Cell, np.ndarray]]:
    """``(n, outcomes per cell)`` of model ``name`` in a folder's samples table."""
    mine = samples[samples["model"].astype(str) == name]
    if mine.empty:
        raise RobustclipError(f"{path} holds no samples of model {name} that results.json lists",
                              "re-run robustclip evaluate to rewrite the folder")
    first = mine.drop_duplicates("sample").sort_values("sample", kind="stable")
    n = len(first)
    if list(first["sample"]) != list(range(n)):
        raise RobustclipError(f"{path}: model {name}'s sample indices are not 0..{n - 1}",
                              "re-run robustclip evaluate to rewrite the folder")
    out: dict[Cell, np.ndarray] = {CLEAN: _bools(first["clean_correct"], path)}
    for (norm, eps), cell in mine[mine["norm"] != "none"].groupby(["norm", "eps"], sort=True):
        cell = cell.sort_values("sample", kind="stable")
        if list(cell["sample"]) != list(range(n)):
            raise RobustclipError(f"{path}: model {name} has {len(cell)} rows at {norm} ε={eps:g}, not one per sample",
                                  "re-run robustclip evaluate to rewrite the folder")
        out[(str(norm), float(eps))] = _bools(cell["robust"], path)
    return n, out


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _headline(raw: Any) -> Cell | None:
    h = raw.get("headline") if isinstance(raw, dict) else None
    if isinstance(h, dict) and isinstance(h.get("norm"), str) and _number(h.get("eps")) is not None:
        return (h["norm"], float(h["eps"]))
    return None


def read_folder(folder: str | os.PathLike[str]) -> list[Evaluated]:
    """Every checkpoint evaluated in ``folder``, in the order results.json lists them (keys: the models' names)."""
    from ..attacks.suites import suite_digest

    p = Path(folder)
    doc = read_results(p)
    samples = _samples(p)
    raw: dict[str, Any] = doc["suite_config"] if isinstance(doc.get("suite_config"), dict) else {}
    digest = suite_digest(raw)
    lips = _lipschitz(p)
    out: list[Evaluated] = []
    for meta in doc["runs"]:
        if not isinstance(meta, dict) or not isinstance(meta.get("model"), str):
            raise RobustclipError(f"{p / 'results.json'} has a run without a model name",
                                  "re-run robustclip evaluate to rewrite it")
        name = meta["model"]
        rows = [r for r in doc["results"] if isinstance(r, dict) and r.get("model") == name]
        n, outcomes = _outcomes(samples, name, p / "samples.csv")
        train: dict[str, Any] = meta["train"] if isinstance(meta.get("train"), dict) else {}
        seed = train.get("seed")
        aseed = meta.get("seed")
        heads = [c for c in outcomes if c != CLEAN]
        headline = _headline(raw)
        out.append(Evaluated(
            key=name, name=name, folder=p, checkpoint=_text(meta.get("checkpoint")),
            sha256=_text(meta.get("checkpoint_sha256")), suite=str(doc.get("suite") or meta.get("suite") or "?"),
            suite_digest=digest, dataset=str(rows[0].get("dataset")) if rows else "?", n=n,
            images=_text(meta.get("images_sha256")),
            attack_seed=aseed if isinstance(aseed, int) and not isinstance(aseed, bool) else None,
            method=_text(train.get("method")), lam=_number(train.get("lam")),
            seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None, outcomes=outcomes,
            headline=headline if headline in outcomes else (heads[-1] if heads else None),
            rows=rows, meta=meta, lipschitz=lips.get(name, {})))
    return out


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _lipschitz(folder: Path) -> dict[str, dict[str, Any]]:
    """``lipschitz.json`` per model name (empty when missing or unreadable: only reports show it)."""
    import json

    try:
        doc = json.loads((folder / "lipschitz.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(d["model"]): d for d in doc if isinstance(d, dict) and "model" in d} if isinstance(doc, list) else {}


def read_all(paths: Sequence[str | os.PathLike[str]]) -> list[Evaluated]:
    """Every checkpoint in the evaluation folders ``paths`` stand for (see :func:`expand`), with unique keys: a
    name that two folders share is prefixed by its folder's name (``a/clip``), then by its position."""
    entries = [e for p in expand(paths) for e in read_folder(p)]
    for attempt in range(2):
        counts: dict[str, int] = {}
        for e in entries:
            counts[e.key] = counts.get(e.key, 0) + 1
        if all(v == 1 for v in counts.values()):
            break
        for i, e in enumerate(entries):
            if counts[e.key] > 1:
                e.key = f"{e.folder.name}/{e.name}" if attempt == 0 else f"{e.key}#{i + 1}"
    return entries
