"""Sweep driver: claim runs, hand them to an engine, record what comes back; status and finalize of a sweep folder.

Every file is written atomically and the manifest last, so a sweep killed at
any point (kill -9 included) and started again redoes only the runs without a
valid manifest and never touches a finished one. Runs are computed by an engine
(:mod:`robustclip.sweeps.engines`: this process, a process pool, or Ray tasks) and
written by the driver that claimed them, so two sweeps on one folder split the
runs between them and never run one twice. A failing run is recorded and the
others go on; Ctrl-C records nothing that did not finish.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..core import files as _io
from ..errors import RobustclipError
from .locks import Claim, ClaimDir, Heartbeat
from .planning import plan
from .records import RESULT_COLUMNS, failure, gather, is_done, read_info, read_record, record_failure, record_run
from .run import Run

MAX_JOBS = 512
POLL_SECONDS = 0.5
"""How often a driver looks again at runs that another sweep holds."""


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


def _check_not_an_input(out: Path, runs: list[Run], data_dir: str | None) -> None:
    """``--out`` is never one of the sweep's inputs nor inside one: a run folder inside an image folder would be
    read as a class of its own, and one inside a dataset folder would mix into the data."""
    from ..core.inputs import command_inputs
    from ..core.outputs import is_input
    from ..data.datasets import dataset_folders

    paths = {r.train.get(k) for r in runs for k in ("data", "test_data")} - {None}
    factories = {r.train.get("factory") for r in runs} - {None}
    inputs = command_inputs(*paths, folders=dataset_folders(data_dir))
    for ref in factories:
        inputs += command_inputs(model=ref)
    inp = is_input(out, inputs)
    if inp is not None:
        raise RobustclipError(f"--out {out} is or lies inside an input of this sweep ({inp})",
                              "pick a folder outside the data and the model's code")


def _create_out(out: Path, fresh: bool, claims: ClaimDir) -> None:
    """Apply ``--fresh`` (checked by :func:`_check_out`) and create ``out``."""
    if fresh and (out / "sweep.json").is_file():
        claims.remove_stale()
        shutil.rmtree(out / "runs", ignore_errors=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RobustclipError(f"cannot create --out {out}: {exc.strerror or exc}", "pass a writable folder") from None


def _write_plan(out: Path, raw: dict[str, Any], runs: list[Run], where: str, data_dir: str | None) -> None:
    _io.write_json(out / "sweep.json", {"sweep": raw, "source": where, "runs": [r.id for r in runs],
                                        "digests": {r.id: r.digest() for r in runs},
                                        "experiments": {r.id: r.meta["experiment"] for r in runs}, "data_dir": data_dir,
                                        "versions": _io.versions(), "commit": _io.git_commit()})


def _check_plan(out: Path, raw: dict[str, Any], runs: list[Run], others_live: bool) -> None:
    """Refuse to mix two sweeps in one folder: another sweep's plan (another name) in ``out``, or any other plan
    while another driver is live there (its table would lose its runs). The same sweep edited (λ added, epochs
    changed) resumes as before once no other driver runs."""
    info = read_record(out / "sweep.json")
    if not isinstance(info, dict) or not isinstance(info.get("sweep"), dict):
        return  # a new folder, or a corrupt plan the sweep rewrites
    if others_live and info.get("digests") != {r.id: r.digest() for r in runs}:
        raise RobustclipError(f"--out {out}: another sweep with a different plan is running there",
                              "pick another folder, or wait for it and run again")
    old, new = info["sweep"].get("name"), raw.get("name")
    if old != new:
        raise RobustclipError(f"--out {out} holds sweep {old!r}; this is sweep {new!r}",
                              "pick another folder (or pass --fresh to discard the other sweep's runs)")


def _start_driver(out: Path, claims: ClaimDir, hb: Heartbeat, raw: dict[str, Any], runs: list[Run], where: str,
                  data_dir: str | None, fresh: bool) -> None:
    """Register this process as a live driver of ``out``, check and write the plan (under the folder's lock, so two
    sweeps starting at once see each other); when it is the only one, clear what dead ones left."""
    with claims.locked():
        claims.remove_stale()
        lease = claims.try_claim(f"driver-{socket.gethostname()}-{os.getpid()}-{os.urandom(4).hex()}")
        if lease is not None:
            hb.add(lease)
        others = bool(claims.live("driver-", exclude={lease.token} if lease else None))
        if not fresh or others:
            _check_plan(out, raw, runs, others)
        _write_plan(out, raw, runs, where, data_dir)
        if others:
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
    _check_not_an_input(out, runs, data_dir)
    eng = make_engine(engine, jobs=jobs, data_dir=data_dir, progress=progress, address=address,
                      cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run)
    try:
        _create_out(out, fresh, claims)
        with Heartbeat(claims) as hb:
            _start_driver(out, claims, hb, raw, runs, where, data_dir, fresh)
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
