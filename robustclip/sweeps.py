"""Sweeps across λ: plan, run (resumably), and gather one tidy table.

A sweep file (TOML) lists experiments; top-level keys are defaults that each
``[[experiment]]`` may override. Without ``[[experiment]]`` the top level is
the one experiment::

    name = "mnist-lambda"
    dataset = "mnist"          # mnist | fashion-mnist | regression
    model = "fc"               # fc | cnn | mlp1d, or a spec table
    epochs = 10
    seeds = [0, 1, 2]
    n_train = 10000            # optional: a data subset
    suite = "ci-quick"         # attack suite for evaluation (image data only)
    n_test = 1000              # optional: test samples (default: the suite's n)
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
    SWEEP/results.csv              every finished run, one row per run × attack × ε

Every file is written atomically and the manifest last, so a sweep killed at
any point (kill -9 included) and started again redoes only the runs without a
valid manifest and never touches a finished one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import _io
from .errors import RobustclipError, SuiteError
from .regularizers import REGISTRY

_EXP_KEYS = {"name", "dataset", "model", "epochs", "seeds", "n_train", "suite", "n_test", "train", "method",
             "experiment", "description", "output_sigmoid", "label"}
_METHOD_KEYS = {"reg", "lam", "tau", "lam0", "lam_step", "lam_every", "warmup", "clip", "label", "train",
                "output_sigmoid", "require_target"}

RESULT_COLUMNS = ["run", "label", "dataset", "method", "lam", "tau", "seed", "attack", "norm", "eps", "accuracy",
                  "n", "ci_low", "ci_high", "lip_lower", "lip_upper", "lip_exact", "mse", "train_seconds",
                  "final_lam", "epochs"]


@dataclass
class Run:
    """One planned training + evaluation run."""

    id: str
    train: dict[str, Any]
    suite: dict[str, Any] | None
    n_test: int | None
    meta: dict[str, Any]

    def digest(self) -> str:
        blob = json.dumps({"train": self.train, "suite": self.suite, "n_test": self.n_test}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fmt_num(v: float) -> str:
    return f"{v:g}"


def load_sweep(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a sweep TOML file into a dict (raises :class:`SuiteError`)."""
    p = Path(path)
    if not p.is_file():
        raise SuiteError(f"sweep file {p} does not exist", "pass the path of a sweep TOML file")
    try:
        raw = _io.loads_toml(p.read_text(encoding="utf-8"))
    except _io.TOMLDecodeError as exc:
        raise SuiteError(f"{p}: not valid TOML ({exc})", "fix the syntax") from None
    raw.setdefault("name", p.stem)
    return raw


def plan(raw: dict[str, Any], *, where: str = "<sweep>") -> list[Run]:
    """Expand a sweep dict into runs: experiments × methods × (λ or τ) × seeds."""
    from . import models
    from .attacks import load_suite
    from .training import TrainConfig

    unknown = set(raw) - _EXP_KEYS
    if unknown:
        raise SuiteError(f"{where}: unknown key {sorted(unknown)[0]!r}", f"allowed keys: {', '.join(sorted(_EXP_KEYS))}")
    exps = raw.get("experiment") or [{}]
    defaults = {k: v for k, v in raw.items() if k != "experiment"}
    runs: list[Run] = []
    for ei, exp in enumerate(exps):
        at = f"{where}: experiment[{ei}]"
        bad = set(exp) - _EXP_KEYS
        if bad:
            raise SuiteError(f"{at}: unknown key {sorted(bad)[0]!r}", f"allowed keys: {', '.join(sorted(_EXP_KEYS))}")
        e = {**defaults, **exp}
        dataset = e.get("dataset")
        if dataset not in ("mnist", "fashion-mnist", "regression"):
            raise SuiteError(f"{at}: dataset {dataset!r} is missing or unknown", "use mnist, fashion-mnist or regression")
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
        methods = e.get("method")
        if not isinstance(methods, list) or not methods:
            raise SuiteError(f"{at}: no [[method]] entries", 'add e.g. [[method]] reg = "clip" lam = [0.1]')
        for mi, m in enumerate(methods):
            mat = f"{at}.method[{mi}]"
            badm = set(m) - _METHOD_KEYS
            if badm:
                raise SuiteError(f"{mat}: unknown key {sorted(badm)[0]!r}", f"allowed keys: {', '.join(sorted(_METHOD_KEYS))}")
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
                    cfg = TrainConfig.for_dataset(
                        dataset, model=mmodel, reg=reg, seed=seed, epochs=e.get("epochs"), n_train=e.get("n_train"),
                        warmup=m.get("warmup"), clip=m.get("clip"), require_target=m.get("require_target"),
                        **lamcfg, **(e.get("train") or {}), **(m.get("train") or {}))
                    try:
                        cfg.validate()
                    except RobustclipError as exc:
                        raise SuiteError(f"{mat} ({run_id}): {exc.problem}", exc.fix or "fix the sweep file") from None
                    from dataclasses import asdict

                    runs.append(Run(id=run_id, train=asdict(cfg), suite=suite, n_test=e.get("n_test"),
                                    meta={"label": label, "method": reg, "lam": lamcfg.get("lam") if "target_acc" not in lamcfg else None,
                                          "tau": lamcfg.get("target_acc"), "seed": seed, "experiment": e.get("label") or dataset}))
    ids = [r.id for r in runs]
    dup = {i for i in ids if ids.count(i) > 1}
    if dup:
        raise SuiteError(f"{where}: run {sorted(dup)[0]!r} appears twice", "give methods distinct labels")
    return runs


def _as_list(v: Any, at: str, key: str) -> list[float]:
    if v is None:
        return []
    vals = v if isinstance(v, list) else [v]
    for x in vals:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or x < 0 or not math.isfinite(x):
            raise SuiteError(f"{at}: {key} values must be numbers >= 0, got {x!r}", f"e.g. {key} = [0.01, 0.1]")
    return [float(x) for x in vals]


# --------------------------------------------------------------------------- running


def run_dir(sweep_dir: Path, run: Run) -> Path:
    return sweep_dir / "runs" / run.id


def is_done(sweep_dir: Path, run: Run) -> bool:
    """True when the run has a manifest whose config hash and file hashes all match."""
    d = run_dir(sweep_dir, run)
    try:
        man = json.loads((d / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    if man.get("digest") != run.digest():
        return False
    for name, digest in man.get("files", {}).items():
        f = d / name
        if not f.is_file() or _io.sha256_file(f) != digest:
            return False
    return bool(man.get("files"))


def execute(run: Run, sweep_dir: str, data_dir: str | None = None, progress: bool = False,
            threads: int | None = None) -> dict[str, Any]:
    """Train, save and evaluate one run through :mod:`robustclip.pipeline`; write its manifest last."""
    import torch

    from . import pipeline
    from .progress import write as progress_write
    from .attacks import parse_suite
    from .training import TrainConfig

    if progress:
        progress_write(f"  {run.id}: training {run.train['epochs']} epochs, then evaluating")
    if threads:
        torch.set_num_threads(threads)
    d = run_dir(Path(sweep_dir), run)
    if d.exists():
        shutil.rmtree(d)  # an unfinished attempt: start clean
    d.mkdir(parents=True)
    cfg = TrainConfig(**run.train)
    t0 = time.perf_counter()
    res = pipeline.train_to_checkpoint(cfg, d / "model.safetensors", data_dir=data_dir, progress=progress,
                                       name=run.id, sweep_run={**run.meta, "digest": run.digest()})
    train_seconds = time.perf_counter() - t0
    common = {"run": run.id, "label": run.meta["label"], "dataset": cfg.dataset, "method": cfg.reg,
              "lam": run.meta["lam"], "tau": run.meta["tau"], "seed": cfg.seed, "train_seconds": train_seconds,
              "final_lam": res.meta.train["final_lam"], "epochs": cfg.epochs}
    suite = None if cfg.dataset == "regression" else parse_suite(run.suite or {}, where=f"sweep suite of {run.id}")
    ev = pipeline.evaluate_model(res.model, res.meta, suite=suite, data_dir=data_dir, n=run.n_test,
                                 progress=progress, name=run.id, clean_full=True)
    lip = ev.lipschitz
    flags = ev.result.flags if ev.result is not None else []
    rows = [{**common, "lip_lower": lip.lower, "lip_upper": lip.upper, "lip_exact": lip.exact, "mse": None, **r}
            for r in ev.rows]
    _io.write_json(d / "eval.json", {"run": run.id, "rows": rows, "lipschitz": lip.to_dict(), "flags": flags,
                                     "history": res.history, "train": res.meta.train, "versions": _io.versions()})
    files = {name: _io.sha256_file(d / name) for name in ("model.safetensors", "eval.json")}
    _io.write_json(d / "manifest.json", {"run": run.id, "digest": run.digest(), "files": files, "status": "done"})
    return {"run": run.id, "seconds": time.perf_counter() - t0, "flags": flags}


def finished_runs(sweep_dir: str | os.PathLike[str]) -> list[Path]:
    """Folders of the runs that the sweep's current plan holds and that finished under that plan."""
    p = Path(sweep_dir)
    try:
        info = json.loads((p / "sweep.json").read_text())
    except (OSError, ValueError):
        info = {}
    digests = info.get("digests")
    out = []
    for man in sorted(p.glob("runs/*/manifest.json")):
        try:
            doc = json.loads(man.read_text())
        except (OSError, ValueError):
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
        try:
            ev = json.loads((d / "eval.json").read_text())
        except (OSError, ValueError):
            continue
        rows += ev["rows"]
    df = pd.DataFrame(rows, columns=RESULT_COLUMNS)
    try:
        experiments = json.loads((Path(sweep_dir) / "sweep.json").read_text()).get("experiments") or {}
    except (OSError, ValueError):
        experiments = {}
    df["experiment"] = [experiments.get(r, d) for r, d in zip(df.run, df.dataset)]
    return df


def run_sweep(raw: dict[str, Any], out: str | os.PathLike[str], *, data_dir: str | None = None, jobs: int = 1,
              progress: bool = True, where: str = "<sweep>", fresh: bool = False,
              skip_datasets: tuple[str, ...] = ()) -> pd.DataFrame:
    """Run every unfinished run of a sweep into folder ``out``; return the gathered table."""
    from .progress import bar as progress_bar

    if jobs < 1:
        raise RobustclipError(f"--jobs must be >= 1, got {jobs}", "use --jobs 1 on a 2-core machine")
    runs = [r for r in plan(raw, where=where) if r.train["dataset"] not in skip_datasets]
    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out / "runs", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".*.tmp"):  # left by a writer killed mid-write; never a finished file
        stale.unlink(missing_ok=True)
    _io.write_json(out / "sweep.json", {"sweep": raw, "source": where, "runs": [r.id for r in runs],
                                        "digests": {r.id: r.digest() for r in runs},
                                        "experiments": {r.id: r.meta["experiment"] for r in runs}, "data_dir": data_dir,
                                        "versions": _io.versions(), "commit": _io.git_commit()})
    todo = [r for r in runs if not is_done(out, r)]
    # runs that belong to no plan any more stay on disk but out of the table
    if progress:
        print(f"sweep {raw.get('name', '')}: {len(runs)} runs, {len(runs) - len(todo)} already done, {len(todo)} to run",
              flush=True)
    bar = progress_bar(total=len(todo), enabled=progress, desc="runs", unit="run")
    if jobs == 1 or len(todo) <= 1:
        for r in todo:
            bar.set_postfix_str(r.id)
            info = execute(r, str(out), data_dir, progress=progress)
            bar.update(1)
            _after(out, info, bar, runs)
    else:
        threads = max(1, (os.cpu_count() or 2) // jobs)
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futs = {pool.submit(execute, r, str(out), data_dir, False, threads): r for r in todo}
            for fut in as_completed(futs):
                info = fut.result()
                bar.update(1)
                _after(out, info, bar, runs)
    bar.close()
    table = _table(out, runs)
    _io.write_text(out / "results.csv", table.to_csv(index=False))
    return table


def _table(out: Path, runs: list[Run]) -> pd.DataFrame:
    t = gather(out)
    return t[t.run.isin({r.id for r in runs})].drop(columns=["experiment"]).reset_index(drop=True)


def _after(out: Path, info: dict[str, Any], bar: Any, runs: list[Run]) -> None:
    bar.write(f"  done {info['run']} in {info['seconds']:.1f}s" + "".join(f"\n    WARNING {f}" for f in info["flags"]))
    _io.write_text(out / "results.csv", _table(out, runs).to_csv(index=False))
