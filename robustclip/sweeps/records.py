"""Sweep records on disk: run folders, manifests, failures, the stored plan, and the gathered results table.

Layout of a sweep folder::

    SWEEP/sweep.json               the resolved plan
    SWEEP/runs/RUN/model.safetensors
    SWEEP/runs/RUN/eval.json       results rows, Lipschitz bounds, flags
    SWEEP/runs/RUN/manifest.json   written last: the run's config hash and file hashes
    SWEEP/runs/RUN/failure.json    a failed run: its error (retried only with --retry-failed)
    SWEEP/claims/run-RUN.json      who is computing the run now (see robustclip.sweeps.locks)
    SWEEP/results.csv              every finished run, one row per run × attack × ε

Every file is written atomically and the manifest last, so a run counts as finished only when its manifest
and every file digest in it match (:func:`is_done`, :func:`verify_run`).
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import pandas as pd

from ..core import files as _io
from ..errors import RobustclipError
from .planning import _check_id
from .run import Run

RESULT_COLUMNS = ["run", "label", "dataset", "method", "lam", "tau", "seed", "attack", "norm", "eps", "accuracy",
                  "n", "ci_low", "ci_high", "lip_lower", "lip_upper", "lip_exact", "mse", "train_seconds",
                  "final_lam", "epochs"]


RUN_FILES = ("model.safetensors", "eval.json")


def run_dir(sweep_dir: str | os.PathLike[str], run: Run | str) -> Path:
    """``SWEEP/runs/RUN``; refuses an id that is not a safe folder name (so nothing outside can be touched)."""
    rid = run if isinstance(run, str) else run.id
    _check_id(rid, "run id")
    return Path(sweep_dir) / "runs" / rid


_MAX_RECORD_BYTES = 64 * 1024 * 1024


def read_record(path: Path) -> Any:
    """A sweep record (plan, manifest, claim, failure) as parsed JSON, or None when missing or unreadable.

    Reads only regular files, at most 64 MiB and 32 levels deep: a FIFO, a huge or a deeply nested file in a
    sweep folder counts as unreadable instead of hanging or exhausting the stack.
    """
    from ..core import validate

    try:
        raw = validate.read_bytes(path, "sweep record", max_bytes=_MAX_RECORD_BYTES)
        return _io.loads_json_bounded(raw, max_depth=32, max_bytes=_MAX_RECORD_BYTES, what=str(path))
    except (RobustclipError, OSError, ValueError):
        return None


def is_done(sweep_dir: str | os.PathLike[str], run: Run) -> bool:
    """True when the run has a manifest whose config hash and file hashes all match."""
    d = run_dir(sweep_dir, run)
    man = read_record(d / "manifest.json")
    if not isinstance(man, dict) or man.get("digest") != run.digest() or man.get("status", "done") != "done":
        return False
    files = man.get("files")
    if not isinstance(files, dict) or set(files) != set(RUN_FILES):
        return False
    for name, digest in files.items():
        f = d / name
        if not f.is_file() or _io.sha256_file(f) != digest:
            return False
    return True


def verify_run(run_folder: str | os.PathLike[str]) -> None:
    """Check a finished run's files against the SHA-256 digests in its ``manifest.json``; a mismatch (an edited,
    truncated or missing file) is a :class:`RobustclipError` naming the file.

    This catches accidents (a hand edit, a truncated copy, a file swapped between runs), not a forger who also
    rewrites ``manifest.json``: the digests are stored beside the files they describe, unsigned.
    """
    d = Path(run_folder)
    man = read_record(d / "manifest.json")
    files = man.get("files") if isinstance(man, dict) else None
    redo = f"rerun robustclip sweep on the same folder: it redoes run {d.name} (or delete {d})"
    if not isinstance(files, dict) or not files:
        raise RobustclipError(f"{d / 'manifest.json'} lists no file digests", redo)
    unlisted = [n for n in RUN_FILES if n not in files]
    if unlisted:
        raise RobustclipError(f"{d / 'manifest.json'} lists no digest for {', '.join(unlisted)}", redo)
    for name, digest in files.items():
        f = d / str(name)
        if not isinstance(name, str) or Path(name).name != name or name.startswith("."):
            raise RobustclipError(f"{d / 'manifest.json'} names an unsafe file {name!r}", redo)
        if not f.is_file() or f.is_symlink():
            raise RobustclipError(f"{f} is missing (its manifest lists it)", redo)
        if _io.sha256_file(f) != digest:
            raise RobustclipError(f"{f} does not match the SHA-256 in its manifest.json (edited or corrupt after the "
                                  "run finished)", redo)


def failure(sweep_dir: str | os.PathLike[str], run: Run) -> dict[str, Any] | None:
    """The failure record of ``run`` under its current config, else None."""
    doc = read_record(run_dir(sweep_dir, run) / "failure.json")
    if not isinstance(doc, dict) or doc.get("digest") != run.digest():
        return None
    return doc


def record_run(sweep_dir: str | os.PathLike[str], run: Run, output: dict[str, Any]) -> None:
    """Write a computed run (checkpoint bytes, evaluation document) atomically, its manifest last."""
    d = run_dir(sweep_dir, run)
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").unlink(missing_ok=True)  # an older attempt's manifest: never valid for these files
    _io.write_bytes(d / "model.safetensors", output["checkpoint"])
    _io.write_json(d / "eval.json", output["eval"])
    files = {name: _io.sha256_file(d / name) for name in RUN_FILES}
    _io.write_json(d / "manifest.json", {"run": run.id, "digest": run.digest(), "files": files, "status": "done",
                                         "seconds": output.get("seconds"), "host": output.get("host")})
    (d / "failure.json").unlink(missing_ok=True)


def record_failure(sweep_dir: str | os.PathLike[str], run: Run, exc: BaseException) -> str:
    """Write ``failure.json`` for a run that raised ``exc``; return the one-line error."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    error = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    d = run_dir(sweep_dir, run)
    d.mkdir(parents=True, exist_ok=True)
    _io.write_json(d / "failure.json", {"run": run.id, "digest": run.digest(), "status": "failed", "error": error,
                                        "traceback": tb[-20000:], "host": socket.gethostname(), "time": time.time()})
    return error


def read_info(sweep_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """``SWEEP/sweep.json`` as a dict; a missing or corrupt file is a :class:`RobustclipError`."""
    p = Path(sweep_dir) / "sweep.json"
    if not p.is_file():
        raise RobustclipError(f"{Path(sweep_dir)} is not a sweep folder (no sweep.json)",
                              "pass the --out folder of robustclip sweep")
    info = read_record(p)
    if not isinstance(info, dict) or not isinstance(info.get("sweep"), dict):
        raise RobustclipError(f"{p} is corrupt (not a sweep plan)",
                              "run the sweep again with its TOML file: robustclip sweep FILE --out DIR rewrites it")
    return info


def finished_runs(sweep_dir: str | os.PathLike[str]) -> list[Path]:
    """Folders of the runs that the sweep's current plan holds and that finished under that plan."""
    p = Path(sweep_dir)
    info = read_record(p / "sweep.json")
    digests = info.get("digests") if isinstance(info, dict) else None
    if not isinstance(digests, dict):
        digests = None
    out = []
    for man in sorted(p.glob("runs/*/manifest.json")):
        doc = read_record(man)
        if not isinstance(doc, dict) or doc.get("status", "done") != "done":
            continue
        if digests is not None and digests.get(man.parent.name) != doc.get("digest"):
            continue  # not in the current plan, or finished under another config
        out.append(man.parent)
    return out


def gather(sweep_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One tidy table of every finished run of the sweep's current plan.

    Columns: :data:`RESULT_COLUMNS`, then ``experiment`` (the experiment's
    label, which tells apart e.g. MNIST runs with and without an output sigmoid).
    """
    rows: list[dict[str, Any]] = []
    for d in finished_runs(sweep_dir):
        ev = read_record(d / "eval.json")
        if isinstance(ev, dict) and isinstance(ev.get("rows"), list):
            rows += [r for r in ev["rows"] if isinstance(r, dict)]
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    info = read_record(Path(sweep_dir) / "sweep.json")
    experiments = info.get("experiments") if isinstance(info, dict) else None
    if not isinstance(experiments, dict):
        experiments = {}
    df["experiment"] = [experiments.get(r, d) for r, d in zip(df.run, df.dataset)]
    return df
