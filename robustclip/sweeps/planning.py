"""Sweeps across λ: plan, run (resumably), and gather one tidy table.

A sweep file (TOML) lists experiments; top-level keys are defaults that each
``[[experiment]]`` may override. Without ``[[experiment]]`` the top level is
the one experiment::

    name = "mnist-lambda"
    dataset = "mnist"          # mnist | fashion-mnist | cifar10 | cifar100 | regression
    model = "fc"               # fc | cnn | mlp1d, or a spec table
    epochs = 10
    seeds = [0, 1, 2]
    n_train = 10000            # optional: a data subset
    suite = "ci-quick"         # attack suite for evaluation (image data only)
    n_test = 1000              # optional: test samples (default: the suite's n)
    n_val = 1000               # optional: validation images scored for model selection (default: as many as
                               # test images, at most 1000; 0: none)
    train = { optimizer = "sgd", lr = 0.1 }   # any other TrainConfig field

    [[method]]
    reg = "none"

    [[method]]
    reg = "weight"
    lam = [1e-4, 1e-3]

    [[method]]
    reg = "clip"
    lam = [0.05, 0.1]          # fixed λ values ...
    tau = [0.95, 0.97]         # ... and/or discrepancy-principle targets (λ starts at lam0)
    lam0 = 0.05
    lam_step = 0.01
    clip = { pairs = 16 }

Layout of a sweep folder::

    SWEEP/sweep.json               the resolved plan
    SWEEP/runs/RUN/model.safetensors
    SWEEP/runs/RUN/eval.json       results rows, Lipschitz bounds, flags
    SWEEP/runs/RUN/manifest.json   written last: the run's config hash and file hashes
    SWEEP/runs/RUN/failure.json    a failed run: its error (retried only with --retry-failed)
    SWEEP/claims/run-RUN.json      who is computing the run now (see robustclip.sweeps.locks)
    SWEEP/results.csv              every finished run, one row per run × attack × ε

Every file is written atomically and the manifest last, so a sweep killed at
any point (kill -9 included) and started again redoes only the runs without a
valid manifest and never touches a finished one. Runs are computed by an engine
(:mod:`robustclip.sweeps.engines`: this process, a process pool, or Ray tasks) and
written by the driver that claimed them, so two sweeps on one folder split the
runs between them and never run one twice. A failing run is recorded and the
others go on; Ctrl-C records nothing that did not finish.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..core import files as _io
from ..errors import RobustclipError, SuiteError
from ..training.regularizers.registry import REGISTRY, SETTINGS
from .locks import Claim, ClaimDir, Heartbeat
from .run import Run

_EXP_KEYS = {"name", "dataset", "model", "epochs", "seeds", "n_train", "suite", "n_test", "n_val", "train", "method",
             "experiment", "description", "output_sigmoid", "label"}
_METHOD_KEYS = {"reg", "lam", "tau", "lam0", "lam_step", "lam_every", "warmup", "label", "train", "output_sigmoid",
                "require_target"} | set(SETTINGS)  # and one key per settings table (clip, adversarial, ...)

RESULT_COLUMNS = ["run", "label", "dataset", "method", "lam", "tau", "seed", "attack", "norm", "eps", "accuracy",
                  "n", "ci_low", "ci_high", "lip_lower", "lip_upper", "lip_exact", "mse", "train_seconds",
                  "final_lam", "epochs"]


def _fmt_num(v: float) -> str:
    return f"{v:g}"


MAX_SWEEP_BYTES = 1024 * 1024
"""Largest sweep file read: a plan is a few kilobytes of TOML."""


def load_sweep(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a sweep TOML file into a dict (raises :class:`SuiteError`)."""
    from ..core import validate

    p = Path(path)
    if not p.exists():
        raise SuiteError(f"sweep file {p} does not exist", "pass the path of a sweep TOML file")
    blob = validate.read_bytes(p, "sweep file", max_bytes=MAX_SWEEP_BYTES, error=SuiteError)
    try:
        raw = _io.loads_toml(blob.decode("utf-8"))
    except UnicodeDecodeError:
        raise SuiteError(f"{p}: not UTF-8 text", "save the sweep file as UTF-8 TOML") from None
    except _io.TOMLDecodeError as exc:
        raise SuiteError(f"{p}: not valid TOML ({exc})", "fix the syntax") from None
    raw.setdefault("name", p.stem)
    return raw


def plan(raw: dict[str, Any], *, where: str = "<sweep>") -> list[Run]:
    """Expand a sweep dict into runs: experiments × methods × (λ or τ) × seeds."""
    unknown = set(raw) - _EXP_KEYS
    if unknown:
        raise SuiteError(f"{where}: unknown key {sorted(unknown)[0]!r}",
                         f"allowed keys: {', '.join(sorted(_EXP_KEYS))}")
    exps = raw.get("experiment") or [{}]
    defaults = {k: v for k, v in raw.items() if k != "experiment"}
    runs: list[Run] = []
    for ei, exp in enumerate(exps):
        at = f"{where}: experiment[{ei}]"
        bad = set(exp) - _EXP_KEYS
        if bad:
            raise SuiteError(f"{at}: unknown key {sorted(bad)[0]!r}", f"allowed keys: {', '.join(sorted(_EXP_KEYS))}")
        e = {**defaults, **exp}
        x = _experiment(e, at)
        for mi, m in enumerate(x.methods):
            runs += _method_runs(e, x, m, f"{at}.method[{mi}]")
    ids = [r.id for r in runs]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise SuiteError(f"{where}: run {sorted(dup)[0]!r} appears twice", "give methods distinct labels")
    return runs


@dataclass
class _Experiment:
    """One checked ``[[experiment]]`` of a sweep: what its methods share."""

    dataset: str
    model: dict[str, Any]
    seeds: list[int]
    suite: dict[str, Any] | None
    n_val: int | None
    methods: list[dict[str, Any]]


def _experiment(e: dict[str, Any], at: str) -> _Experiment:
    """Check one experiment (its keys merged over the sweep's defaults) and resolve its model and suite."""
    from ..attacks.suites import load_suite
    from ..core import validate
    from ..data import datasets as data
    from ..models import specs as models

    dataset = e.get("dataset")
    if dataset not in data.DATASETS:
        raise SuiteError(f"{at}: dataset {dataset!r} is missing or unknown", f"use {', '.join(data.DATASETS)}")
    _check_label(e.get("label"), f"{at}: label")
    model = e.get("model")
    if isinstance(model, str) or model is None:
        model = models.default_spec(model or ("mlp1d" if dataset == "regression" else "fc"), dataset)
    if e.get("output_sigmoid"):
        model = {**model, "output_activation": "sigmoid"}
    seeds = e.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise SuiteError(f"{at}: seeds must be a non-empty list of integers", "e.g. seeds = [0, 1, 2]")
    suite = None
    if dataset != "regression":
        try:
            suite = load_suite(e.get("suite", "demo")).raw
        except SuiteError as exc:
            raise SuiteError(f"{at}: {exc.problem}", exc.fix) from None
    n_val = e.get("n_val")
    if n_val is not None:
        validate.number(n_val, f"{at}: n_val", integer=True, lo=0, hi=60_000, error=SuiteError,
                        fix="use e.g. n_val = 1000 (0: no validation scoring)")
    methods = e.get("method")
    if not isinstance(methods, list) or not methods:
        raise SuiteError(f"{at}: no [[method]] entries", 'add e.g. [[method]] reg = "clip" lam = [0.1]')
    return _Experiment(dataset, model, seeds, suite, n_val, methods)


def _method_runs(e: dict[str, Any], x: _Experiment, m: dict[str, Any], mat: str) -> list[Run]:
    """The runs of one ``[[method]]`` of experiment ``e``: one per λ or τ setting and seed, each config checked."""
    from ..training.trainer import TrainConfig

    dataset, model, seeds, suite, n_val = x.dataset, x.model, x.seeds, x.suite, x.n_val
    runs: list[Run] = []
    badm = set(m) - _METHOD_KEYS
    if badm:
        raise SuiteError(f"{mat}: unknown key {sorted(badm)[0]!r}",
                         f"allowed keys: {', '.join(sorted(_METHOD_KEYS))}")
    _check_label(m.get("label"), f"{mat}: label")
    reg = m.get("reg")
    if reg not in REGISTRY:
        raise SuiteError(f"{mat}: reg {reg!r} is missing or unknown", f"use one of {', '.join(REGISTRY)}")
    settings: list[tuple[str, dict[str, Any]]] = []
    takes_lam = REGISTRY[reg].takes_lam
    if not takes_lam and ("lam" in m or "tau" in m):
        raise SuiteError(f"{mat}: reg {reg} takes no lam or tau", "drop them, or use reg weight or clip")
    if not takes_lam:
        settings.append(("", {"lam": 0.0}))
    for lam in _as_list(m.get("lam"), mat, "lam") if takes_lam else []:
        settings.append((f"lam{_fmt_num(lam)}", {"lam": lam}))
    for tau in _as_list(m.get("tau"), mat, "tau") if takes_lam else []:
        settings.append((f"tau{_fmt_num(tau)}", {"lam": m.get("lam0", 0.05), "target_acc": tau,
                                                   "lam_step": m.get("lam_step", 0.01),
                                                   "lam_every": m.get("lam_every", 1)}))
    if not settings:
        raise SuiteError(f"{mat}: {reg} needs lam = [...] and/or tau = [...]", "give at least one value")
    mmodel = {**model, "output_activation": "sigmoid"} if m.get("output_sigmoid") else model
    for tag, lamcfg in settings:
        for seed in seeds:
            label = m.get("label") or reg
            run_id = "-".join(x for x in (e.get("label") or dataset, label, tag, f"s{seed}") if x)
            _check_id(run_id, f"{mat}: run id")
            kw: dict[str, Any] = dict(model=mmodel, reg=reg, seed=seed, epochs=e.get("epochs"),
                                      n_train=e.get("n_train"), warmup=m.get("warmup"),
                                      require_target=m.get("require_target"), **lamcfg,
                                      **TrainConfig.table_kwargs({t: m.get(t) for t in SETTINGS}))
            for extra in (e.get("train") or {}, m.get("train") or {}):  # a method's own epochs, lr, ...
                if not isinstance(extra, dict):
                    raise SuiteError(f"{mat}: train must be a table, got {extra!r:.80}",
                                     'e.g. train = { epochs = 20, lr_schedule = "cosine" }')
                kw.update(extra)
            try:
                cfg = TrainConfig.for_dataset(dataset, **kw)
            except TypeError as exc:
                raise SuiteError(f"{mat}: unknown training setting ({exc})",
                                 "use fields of robustclip.TrainConfig in train = {...}") from None
            try:
                cfg.validate()
            except RobustclipError as exc:
                raise SuiteError(f"{mat} ({run_id}): {exc.problem}", exc.fix or "fix the sweep file") from None
            runs.append(Run(id=run_id, train=asdict(cfg), suite=suite, n_test=e.get("n_test"), n_val=n_val,
                            meta={"label": label, "method": reg,
                                  "lam": lamcfg.get("lam") if "target_acc" not in lamcfg else None,
                                  "tau": lamcfg.get("target_acc"), "seed": seed,
                                  "experiment": e.get("label") or dataset}))
    return runs


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")
"""Labels and run ids: letters, digits and ``. _ + = -``, starting with a letter or digit (so never a path)."""
MAX_LABEL, MAX_ID = 64, 160


def _check_label(label: Any, at: str) -> None:
    if label is None:
        return
    if not isinstance(label, str):
        raise SuiteError(f"{at} must be a string, got {label!r}", 'e.g. label = "clip128"')
    _check_name(label, at, MAX_LABEL)


def _check_id(run_id: str, at: str) -> None:
    _check_name(run_id, at, MAX_ID)


def _check_name(name: str, at: str, limit: int) -> None:
    """Refuse anything that could leave ``SWEEP/runs/``: separators, ``..``, absolute paths, odd characters."""
    if not SAFE_NAME.fullmatch(name) or ".." in name or len(name) > limit:
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise SuiteError(f"{at} {shown!r} is not a safe name (it becomes a folder name under runs/)",
                         f"use at most {limit} letters, digits and . _ + = -, starting with a letter or digit, "
                         "without '..'")


def _as_list(v: Any, at: str, key: str) -> list[float]:
    if v is None:
        return []
    vals = v if isinstance(v, list) else [v]
    for x in vals:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or x < 0 or not math.isfinite(x):
            raise SuiteError(f"{at}: {key} values must be numbers >= 0, got {x!r}", f"e.g. {key} = [0.01, 0.1]")
    return [float(x) for x in vals]


# --------------------------------------------------------------------------- running

RUN_FILES = ("model.safetensors", "eval.json")
MAX_JOBS = 512
POLL_SECONDS = 0.5
"""How often a driver looks again at runs that another sweep holds."""


def run_dir(sweep_dir: str | os.PathLike[str], run: Run | str) -> Path:
    """``SWEEP/runs/RUN``; refuses an id that is not a safe folder name (so nothing outside can be touched)."""
    rid = run if isinstance(run, str) else run.id
    _check_id(rid, "run id")
    return Path(sweep_dir) / "runs" / rid


_MAX_RECORD_BYTES = 64 * 1024 * 1024


def _read_json(path: Path) -> Any:
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
    man = _read_json(d / "manifest.json")
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
    man = _read_json(d / "manifest.json")
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
    doc = _read_json(run_dir(sweep_dir, run) / "failure.json")
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
    info = _read_json(p)
    if not isinstance(info, dict) or not isinstance(info.get("sweep"), dict):
        raise RobustclipError(f"{p} is corrupt (not a sweep plan)",
                              "run the sweep again with its TOML file: robustclip sweep FILE --out DIR rewrites it")
    return info


def finished_runs(sweep_dir: str | os.PathLike[str]) -> list[Path]:
    """Folders of the runs that the sweep's current plan holds and that finished under that plan."""
    p = Path(sweep_dir)
    info = _read_json(p / "sweep.json")
    digests = info.get("digests") if isinstance(info, dict) else None
    if not isinstance(digests, dict):
        digests = None
    out = []
    for man in sorted(p.glob("runs/*/manifest.json")):
        doc = _read_json(man)
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
        ev = _read_json(d / "eval.json")
        if isinstance(ev, dict) and isinstance(ev.get("rows"), list):
            rows += [r for r in ev["rows"] if isinstance(r, dict)]
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    info = _read_json(Path(sweep_dir) / "sweep.json")
    experiments = info.get("experiments") if isinstance(info, dict) else None
    if not isinstance(experiments, dict):
        experiments = {}
    df["experiment"] = [experiments.get(r, d) for r, d in zip(df.run, df.dataset)]
    return df


@dataclass
class SweepOutcome:
    """What a sweep (or one array-job run of it) did.

    ``table``: the gathered results of the plan's finished runs. ``ran``: runs this call finished.
    ``failed``: run id → one-line error (failed now, or earlier and not retried). ``elsewhere``: runs another live
    sweep is computing (only when not waiting for them). ``missing``: planned runs neither finished nor failed.
    """

    table: pd.DataFrame
    runs: list[Run]
    ran: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    elsewhere: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def _check_out(out: Path, fresh: bool, claims: ClaimDir) -> None:
    """Refuse an unusable ``--out`` (and a ``--fresh`` that would delete what is not a sweep's) before any work."""
    if out.exists() and not out.is_dir():
        raise RobustclipError(f"--out {out} exists and is not a folder", "pass a new or existing sweep folder")
    if out.is_dir() and not os.access(out, os.W_OK):
        raise RobustclipError(f"--out {out} is not writable", "pass a writable folder")
    if not (fresh and out.is_dir()):
        return
    if not (out / "sweep.json").is_file():
        if any(out.iterdir()):
            raise RobustclipError(f"--fresh would delete {out / 'runs'}, but {out} is not a sweep folder "
                                  "(no sweep.json)", "check --out, or empty the folder yourself")
        return
    if (out / "runs").is_symlink():
        raise RobustclipError(f"{out / 'runs'} is a symbolic link; --fresh deletes only a real runs/ folder",
                              "remove the link yourself")
    busy = claims.live("driver-")
    if busy:
        raise RobustclipError(f"--fresh: another sweep is running in {out} ({len(busy)} live)",
                              "wait for it to finish, or run without --fresh")


def _create_out(out: Path, fresh: bool, claims: ClaimDir) -> None:
    """Apply ``--fresh`` (checked by :func:`_check_out`) and create ``out``."""
    if fresh and (out / "sweep.json").is_file():
        claims.remove_stale()
        shutil.rmtree(out / "runs", ignore_errors=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RobustclipError(f"cannot create --out {out}: {exc.strerror or exc}", "pass a writable folder") from None


def flags_command(raw: dict[str, Any], out: str | os.PathLike[str]) -> str:
    """The ``robustclip sweep`` command line (flags mode) that rebuilds the plan ``raw`` into folder ``out``: the
    inverse of the CLI's flags-to-plan step, so a report can name the exact command of a sweep that has no file."""
    import shlex

    parts = ["robustclip", "sweep", "--dataset", str(raw.get("dataset", ""))]
    for m in raw.get("method", []):
        spec = str(m.get("reg", ""))
        if m.get("tau"):
            spec += ":tau=" + ",".join(f"{v:g}" for v in m["tau"])
        elif m.get("lam"):
            spec += ":" + ",".join(f"{v:g}" for v in m["lam"])
        parts += ["--method", spec]
    parts += ["--seeds", ",".join(str(v) for v in raw.get("seeds", [0]))]
    for key in ("model", "epochs", "n_train", "suite", "n_test"):
        if raw.get(key) is not None:
            parts += [f"--{key.replace('_', '-')}", str(raw[key])]
    parts += ["--out", str(out)]
    return shlex.join(parts)


def _write_plan(out: Path, raw: dict[str, Any], runs: list[Run], where: str, data_dir: str | None) -> None:
    _io.write_json(out / "sweep.json", {"sweep": raw, "source": where, "runs": [r.id for r in runs],
                                        "digests": {r.id: r.digest() for r in runs},
                                        "experiments": {r.id: r.meta["experiment"] for r in runs}, "data_dir": data_dir,
                                        "versions": _io.versions(), "commit": _io.git_commit()})


def _start_driver(out: Path, claims: ClaimDir, hb: Heartbeat) -> None:
    """Register this process as a live driver of ``out``; when it is the only one, clear what dead ones left."""
    with claims.locked():
        claims.remove_stale()
        lease = claims.try_claim(f"driver-{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}")
        if lease is not None:
            hb.add(lease)
        if claims.live("driver-", exclude={lease.token} if lease else None):
            return  # another live sweep may be mid-write: its temporary files are not ours to delete
        run_dirs = [d for d in (out / "runs").glob("*") if d.is_dir() and not d.is_symlink()]
        for folder in (out, claims.dir, *run_dirs):
            for stale in folder.glob(".*.tmp"):  # left by a writer killed mid-write; never a finished file
                stale.unlink(missing_ok=True)


def _is_interrupt(exc: BaseException) -> bool:
    from .engines import unwrap_error

    err = unwrap_error(exc)
    return isinstance(err, KeyboardInterrupt) or type(exc).__name__ in ("TaskCancelledError",)


def _drive(out: Path, runs: list[Run], todo: list[Run], engine: Any, claims: ClaimDir, hb: Heartbeat, *,
           retry_failed: bool, wait_others: bool, progress: bool, write_table: bool) -> SweepOutcome:
    """Claim, compute and record ``todo``; return what happened. Ctrl-C: nothing unfinished is recorded."""
    from ..core.progress import bar as progress_bar

    t_start = time.time()
    outcome = SweepOutcome(pd.DataFrame(columns=RESULT_COLUMNS), runs)
    queue = list(todo)
    flying: dict[Future[dict[str, Any]], tuple[Run, Claim]] = {}
    waited = False
    bar = progress_bar(total=len(todo), enabled=progress, desc="runs", unit="run")
    try:
        while queue or flying:
            for r in list(queue):
                if len(flying) >= engine.capacity:
                    break
                claim = claims.try_claim(f"run-{r.id}")
                if claim is None:
                    continue  # another live sweep computes it
                if is_done(out, r):
                    claims.release(claim)
                    queue.remove(r)
                    bar.update(1)
                    continue
                fail = failure(out, r)
                failed_at = fail.get("time") if fail is not None else None
                earlier = isinstance(failed_at, (int, float)) and failed_at < t_start
                if fail is not None and not (retry_failed and earlier):
                    claims.release(claim)
                    queue.remove(r)
                    outcome.failed[r.id] = str(fail.get("error") or "failed")
                    bar.update(1)
                    continue
                queue.remove(r)
                hb.add(claim)
                bar.set_postfix_str(r.id)
                flying[engine.submit(r)] = (r, claim)  # the inline engine computes right here
            if not flying:
                if not queue:
                    break
                if not wait_others:
                    outcome.elsewhere = [r.id for r in queue]
                    break
                if progress and not waited:
                    bar.write(f"  waiting for {len(queue)} runs that another sweep is computing")
                waited = True
                time.sleep(POLL_SECONDS)  # every remaining run is held by another sweep: wait, then look again
                continue
            done, _ = wait(list(flying), timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
            for fut in done:
                r, claim = flying.pop(fut)
                _settle(out, r, claim, fut, claims, hb, outcome, bar, progress)
                bar.update(1)
                if write_table and r.id in outcome.ran:
                    _io.write_text(out / "results.csv", _table(out, runs).to_csv(index=False))
    except BaseException:
        engine.close(cancel=True)
        bar.close()
        raise
    bar.close()
    return outcome


def _settle(out: Path, r: Run, claim: Claim, fut: Future[dict[str, Any]], claims: ClaimDir, hb: Heartbeat,
            outcome: SweepOutcome, bar: Any, progress: bool) -> None:
    """Record one computed run (or its failure) if this process still holds its claim; then release it."""
    from .engines import unwrap_error

    try:
        try:
            result = fut.result()
        except BaseException as exc:
            if _is_interrupt(exc):
                raise KeyboardInterrupt(str(exc)) from None
            if not claims.owns(claim):
                bar.write(f"  {r.id}: failed, but another sweep took it over meanwhile; not recorded")
                return
            err = record_failure(out, r, unwrap_error(exc))
            outcome.failed[r.id] = err
            if progress:
                bar.write(f"  FAILED {r.id}: {err}")
            return
        if not claims.owns(claim):  # looked dead to another sweep (e.g. suspended) and was taken over
            bar.write(f"  {r.id}: another sweep took it over meanwhile; this result is not recorded")
            return
        record_run(out, r, result)
        outcome.ran.append(r.id)
        if progress:
            bar.write(f"  done {r.id} in {result['seconds']:.1f}s"
                      + "".join(f"\n    WARNING {f}" for f in result["flags"]))
    finally:
        hb.release(claim)


def _table(out: Path, runs: list[Run]) -> pd.DataFrame:
    t = gather(out)
    return t[t.run.isin({r.id for r in runs})].drop(columns=["experiment"]).reset_index(drop=True)


def _finish(out: Path, runs: list[Run], outcome: SweepOutcome, write_table: bool = True) -> SweepOutcome:
    outcome.table = _table(out, runs)
    if write_table:
        _io.write_text(out / "results.csv", outcome.table.to_csv(index=False))
    finished = set(outcome.table.run)
    for r in runs:
        if r.id in outcome.failed or r.id in outcome.elsewhere or r.id in finished:
            continue
        f = failure(out, r)
        if f is not None:
            outcome.failed[r.id] = str(f.get("error") or "failed")
        else:
            outcome.missing.append(r.id)
    return outcome


def sweep(raw: dict[str, Any], out: str | os.PathLike[str], *, data_dir: str | None = None, jobs: int = 1,
          progress: bool = True, where: str = "<sweep>", fresh: bool = False, skip_datasets: tuple[str, ...] = (),
          engine: str = "local", address: str | None = None, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0,
          retry_failed: bool = False, only: int | None = None) -> SweepOutcome:
    """Run every unfinished run of a sweep (or, with ``only``, the run of that plan index) into folder ``out``.

    Runs another live sweep holds are left to it and waited for (not with ``only``). Failed runs are recorded in
    ``failure.json`` and the others go on; earlier failures are retried only with ``retry_failed``. Ctrl-C raises
    :class:`KeyboardInterrupt` after releasing this sweep's claims, with nothing unfinished recorded.
    """
    from .engines import make_engine

    if not 1 <= jobs <= MAX_JOBS:
        raise RobustclipError(f"--jobs must be between 1 and {MAX_JOBS}, got {jobs}",
                              "use --jobs 1 on a 2-core machine")
    out = Path(out)
    claims = ClaimDir(out / "claims")
    runs = [r for r in plan(raw, where=where) if r.train["dataset"] not in skip_datasets]
    if only is not None and not 0 <= only < len(runs):
        raise RobustclipError(f"--run-index {only} is out of range: "
                              f"the sweep has {len(runs)} runs (0..{len(runs) - 1})",
                              "list them with --list")
    if only is not None and fresh:
        raise RobustclipError("--fresh cannot be combined with --run-index", "run --fresh once, before the array jobs")
    _check_out(out, fresh, claims)
    eng = make_engine(engine, jobs=jobs, data_dir=data_dir, progress=progress, address=address,
                      cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
    try:
        _create_out(out, fresh, claims)
        with Heartbeat(claims) as hb:
            _start_driver(out, claims, hb)
            _write_plan(out, raw, runs, where, data_dir)
            chosen = runs if only is None else [runs[only]]
            todo = [r for r in chosen if not is_done(out, r)]
            if progress:
                print(f"sweep {raw.get('name', '')}: {len(runs)} runs, {len(chosen) - len(todo)} "
                      f"{'already done' if only is None else 'of the chosen one done'}, {len(todo)} to run"
                      + (f" ({eng.name} engine)" if eng.name != "local" else ""), flush=True)
            outcome = _drive(out, runs, todo, eng, claims, hb, retry_failed=retry_failed, wait_others=only is None,
                             progress=progress, write_table=only is None)
    finally:
        eng.close()
    outcome = _finish(out, runs, outcome, write_table=only is None)
    if only is not None:  # an array job speaks only for its own run
        rid = runs[only].id
        outcome.failed = {k: v for k, v in outcome.failed.items() if k == rid}
        outcome.missing = [k for k in outcome.missing if k == rid and k not in outcome.elsewhere]
    return outcome


def run_sweep(raw: dict[str, Any], out: str | os.PathLike[str], *, data_dir: str | None = None, jobs: int = 1,
              progress: bool = True, where: str = "<sweep>", fresh: bool = False,
              skip_datasets: tuple[str, ...] = (), **kw: Any) -> pd.DataFrame:
    """Run every unfinished run of a sweep into folder ``out``; return the gathered table.

    The table holds the finished runs; failed runs (see :func:`sweep`, which returns them too) are listed in
    ``table.attrs["failed"]`` and printed.
    """
    outcome = sweep(raw, out, data_dir=data_dir, jobs=jobs, progress=progress, where=where, fresh=fresh,
                    skip_datasets=skip_datasets, **kw)
    if outcome.failed and progress:
        print(f"{len(outcome.failed)} runs failed: " + ", ".join(sorted(outcome.failed)), flush=True)
    outcome.table.attrs["failed"] = dict(outcome.failed)
    return outcome.table


def status(raw: dict[str, Any] | None, out: str | os.PathLike[str], *,
           where: str = "<sweep>") -> list[tuple[int, Run, str]]:
    """(index, run, state) of every planned run; state is done, failed, running (HOST:PID) or todo. Writes nothing."""
    out = Path(out)
    if raw is None:
        raw = read_info(out)["sweep"]
    runs = plan(raw, where=where)
    claims = ClaimDir(out / "claims")
    rows = []
    for i, r in enumerate(runs):
        if out.is_dir() and is_done(out, r):
            state = "done"
        elif out.is_dir() and (h := claims.holder(f"run-{r.id}")) is not None:
            state = f"running ({h.get('host')}:{h.get('pid')})"
        elif out.is_dir() and failure(out, r) is not None:
            state = "failed"
        else:
            state = "todo"
        rows.append((i, r, state))
    return rows


def finalize(raw: dict[str, Any] | None, out: str | os.PathLike[str], *, where: str = "<sweep>") -> SweepOutcome:
    """Gather ``OUT/results.csv`` from the finished runs (after array jobs); train nothing.

    ``raw``: the sweep (None: the plan stored in ``OUT/sweep.json``).
    """
    out = Path(out)
    info = read_info(out)
    runs = plan(raw if raw is not None else info["sweep"], where=where)
    if raw is not None:
        _write_plan(out, raw, runs, where, info.get("data_dir") if isinstance(info.get("data_dir"), str) else None)
    claims = ClaimDir(out / "claims")
    outcome = SweepOutcome(pd.DataFrame(columns=RESULT_COLUMNS), runs)
    outcome.elsewhere = [r.id for r in runs if claims.holder(f"run-{r.id}") is not None and not is_done(out, r)]
    return _finish(out, runs, outcome)
