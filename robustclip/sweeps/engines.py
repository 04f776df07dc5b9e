"""Engines that compute sweep runs: in this process, in a local process pool, or as Ray tasks.

An engine only computes: :func:`compute_run` trains and evaluates one run and returns what it made (the
checkpoint's bytes, the evaluation document) without touching the sweep folder. The driver in
:mod:`robustclip.sweeps.driver` claims runs, hands them to an engine, and writes what comes back atomically, so Ray
workers need no shared filesystem. Every engine returns :class:`concurrent.futures.Future` objects.

Ray is optional (``pip install "robustclip[ray]"``) and imported only when ``engine="ray"`` is asked for.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import time
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import RobustclipError

if TYPE_CHECKING:
    from .run import Run

ENGINES = ("local", "ray")


def compute_run(run: Run, data_dir: str | None = None, progress: bool = False,
                threads: int | None = None) -> dict[str, Any]:
    """Train and evaluate one run through :mod:`robustclip.evaluation.pipeline`; return its outputs, write nothing.

    Returns ``{"run", "checkpoint": bytes, "eval": dict, "seconds", "flags"}``. Raises
    :class:`KeyboardInterrupt` when training was interrupted: a truncated run is never a finished one.
    """
    import torch

    from ..attacks.suites import parse_suite
    from ..core import files as _io
    from ..core.progress import write as progress_write
    from ..data.datasets import is_regression
    from ..evaluation import pipeline
    from ..training.config import TrainConfig

    if progress:
        progress_write(f"  {run.id}: training {run.train['epochs']} epochs, then evaluating")
    if threads:
        torch.set_num_threads(threads)
    cfg = TrainConfig(**run.train)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="robustclip-run-") as tmp:
        ckpt = Path(tmp) / "model.safetensors"
        res = pipeline.train_to_checkpoint(cfg, None, data_dir=data_dir, progress=progress, name=run.id,
                                           sweep_run={**run.meta, "digest": run.digest()})
        if res.interrupted:
            raise KeyboardInterrupt(f"run {run.id} interrupted after {len(res.history)} of {cfg.epochs} epochs")
        from ..checkpoints import format as checkpoints

        checkpoints.save(res.model, ckpt, res.meta)
        blob = ckpt.read_bytes()
    train_seconds = time.perf_counter() - t0
    common = {"run": run.id, "label": run.meta["label"], "dataset": cfg.dataset, "method": cfg.reg,
              "lam": run.meta["lam"], "tau": run.meta["tau"], "seed": cfg.seed, "train_seconds": train_seconds,
              "final_lam": res.meta.train["final_lam"], "epochs": cfg.epochs}
    suite = None if is_regression(cfg.dataset) else parse_suite(run.suite or {}, where=f"sweep suite of {run.id}")
    eval_set = None if cfg.test_data is None else pipeline.user_test_set(res.model, cfg.test_data, name=run.id)
    ev = pipeline.evaluate_model(res.model, res.meta, suite=suite, data_dir=data_dir, n=run.n_test,
                                 progress=progress, name=run.id, clean_full=True, eval_set=eval_set,
                                 lipschitz=run.lipschitz or "full")
    n_val = run.n_val
    if n_val is None and suite is not None:  # by default as many validation images as test images, at most VAL_N
        n_val = min(pipeline.VAL_N, run.n_test or suite.n or pipeline.VAL_N)
    if suite is not None and n_val:
        ev.rows += pipeline.validation_rows(res.model, cfg, suite, data_dir=data_dir, n=n_val)
    lip = ev.lipschitz
    flags = ev.result.flags if ev.result is not None else []
    rows = [{**common, "lip_lower": lip.lower, "lip_upper": lip.upper, "lip_exact": lip.exact, "mse": None, **r}
            for r in ev.rows]
    doc = {"run": run.id, "rows": rows, "lipschitz": lip.to_dict(), "flags": flags, "history": res.history,
           "train": res.meta.train, "versions": _io.versions()}
    return {"run": run.id, "checkpoint": blob, "eval": doc, "seconds": time.perf_counter() - t0, "flags": flags,
            "host": socket.gethostname()}


class Engine:
    """Computes runs; ``capacity`` runs at a time are worth submitting."""

    name = "engine"
    capacity = 1

    def submit(self, run: Run) -> Future[dict[str, Any]]:
        raise NotImplementedError

    def close(self, cancel: bool = False) -> None:
        """Free the engine's workers (cancel queued work when ``cancel``)."""


class InlineEngine(Engine):
    """Computes each run in this process when it is submitted (``--jobs 1``); Ctrl-C reaches it directly."""

    name = "local"

    def __init__(self, data_dir: str | None, progress: bool) -> None:
        self.data_dir, self.progress = data_dir, progress

    def submit(self, run: Run) -> Future[dict[str, Any]]:
        fut: Future[dict[str, Any]] = Future()
        try:
            fut.set_result(compute_run(run, self.data_dir, self.progress))
        except Exception as exc:  # KeyboardInterrupt propagates: the driver stops
            fut.set_exception(exc)
        return fut


class PoolEngine(Engine):
    """A local pool of ``jobs`` spawned processes, each with its share of the cores."""

    name = "local"

    def __init__(self, jobs: int, data_dir: str | None) -> None:
        import multiprocessing as mp

        self.capacity = jobs
        self.data_dir = data_dir
        self.threads = max(1, (os.cpu_count() or 2) // jobs)
        self.pool = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                        initializer=_ignore_sigint)

    def submit(self, run: Run) -> Future[dict[str, Any]]:
        return self.pool.submit(compute_run, run, self.data_dir, False, self.threads)

    def close(self, cancel: bool = False) -> None:
        if cancel:  # Ctrl-C reached the driver: workers write nothing, so stopping them loses only unfinished runs
            for proc in list(getattr(self.pool, "_processes", {}).values()):
                proc.terminate()
        self.pool.shutdown(wait=not cancel, cancel_futures=cancel)


def _ignore_sigint() -> None:
    """Pool workers leave Ctrl-C to the driver, which stops them (no traceback from every worker)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _ray_compute(run: Run, data_dir: str | None, threads: int) -> dict[str, Any]:
    """The Ray task: :func:`compute_run` on a worker (which may be on another machine)."""
    return compute_run(run, data_dir, False, threads)


class RayEngine(Engine):
    """Each run a Ray task with declared resources; results travel back to the driver through Ray.

    Connects to ``address`` (``auto``, ``HOST:6379``, ``ray://HOST:10001``), or joins the Ray instance this
    process already started, or starts a local one. Only a Ray instance it started is shut down on close.
    """

    name = "ray"

    def __init__(self, *, address: str | None, cpus_per_run: float, gpus_per_run: float, jobs: int | None,
                 data_dir: str | None, progress: bool) -> None:
        try:
            import ray
        except ImportError:
            raise RobustclipError("--engine ray needs Ray, which is not installed",
                                  'pip install "robustclip[ray]" (or use the default --engine local)') from None
        if not (math.isfinite(cpus_per_run) and 0 < cpus_per_run <= 1024):
            raise RobustclipError(f"--cpus-per-run must be in (0, 1024], got {cpus_per_run}", "e.g. --cpus-per-run 1")
        if not (math.isfinite(gpus_per_run) and 0 <= gpus_per_run <= 64):
            raise RobustclipError(f"--gpus-per-run must be in [0, 64], got {gpus_per_run}", "e.g. --gpus-per-run 0")
        self.ray = ray
        self.started = False
        self.refs: dict[Future[dict[str, Any]], Any] = {}
        if not ray.is_initialized():
            import logging

            try:
                ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING,
                         log_to_driver=progress)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise RobustclipError(f"cannot start or reach Ray at {address or 'a new local instance'}: {first}",
                                      "start a cluster with `ray start --head` and pass --address HOST:6379") from None
            self.started = True
        res = ray.cluster_resources()
        cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
        if cpus_per_run > cpus or gpus_per_run > gpus:
            self.close()
            raise RobustclipError(f"each run asks for {cpus_per_run:g} CPUs and {gpus_per_run:g} GPUs but the Ray "
                                  f"cluster has {cpus:g} CPUs and {gpus:g} GPUs in all",
                                  "lower --cpus-per-run/--gpus-per-run or add nodes")
        fits = int(cpus // cpus_per_run)
        if gpus_per_run > 0:
            fits = min(fits, int(gpus // gpus_per_run))
        # keep the cluster busy, plus one queued run per slot; claims are held only for submitted runs
        self.capacity = jobs if jobs and jobs > 1 else max(1, 2 * fits)
        self.data_dir = data_dir
        self.threads = max(1, int(cpus_per_run))
        self.task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=1)(_ray_compute)

    def submit(self, run: Run) -> Future[dict[str, Any]]:
        ref = self.task.remote(run, self.data_dir, self.threads)
        fut: Future[dict[str, Any]] = ref.future()
        self.refs[fut] = ref
        return fut

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for ref in self.refs.values():
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:  # already finished, or the cluster is gone
                    pass
        self.refs.clear()
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()
            self.started = False


def unwrap_error(exc: BaseException) -> BaseException:
    """The original exception of a run: Ray wraps a task's exception in a RayTaskError (its ``cause``)."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def make_engine(engine: str, *, jobs: int, data_dir: str | None, progress: bool, address: str | None = None,
                cpus_per_run: float = 1.0, gpus_per_run: float = 0.0) -> Engine:
    """The engine named ``engine`` (``local`` or ``ray``); raises :class:`RobustclipError` for a bad choice."""
    if engine == "ray":
        return RayEngine(address=address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run,
                         jobs=jobs if jobs > 1 else None, data_dir=data_dir, progress=progress)
    if engine != "local":
        raise RobustclipError(f"unknown engine {engine!r}", f"use one of {', '.join(ENGINES)}")
    if address is not None:
        raise RobustclipError("--address needs --engine ray", "add --engine ray, or drop --address")
    if jobs == 1:
        return InlineEngine(data_dir, progress)
    return PoolEngine(jobs, data_dir)
