"""The CI gate behind ``robustclip check``: compare a model's robustness with a baseline, beyond measured noise.

``robustclip check CKPT --suite S --baseline B.json`` evaluates the checkpoint and compares, row by row, clean
accuracy, each attack's accuracy, the per-sample worst case and certified accuracy at each ε, and the Lipschitz
lower and upper bounds with the baseline.

Two modes, recorded in the baseline (``--update-baseline --mode``):

``fixed`` (one checkpoint)
    The CI job checks the very checkpoint the baseline was made from, or a fine-tuned successor, on the same
    test images. The baseline stores each row's per-sample outcomes as a base64 bitset, and a digest of the
    evaluated images. When the digest matches, a drop is tested **paired**: exact one-sided McNemar (binomial)
    test on the discordant samples, the ``b`` images the baseline got right and the check gets wrong against
    the ``c`` it newly gets right. Rows without stored outcomes (certified accuracy), or other images, fall back
    to the **unpaired** Wilson interval of the current accuracy. The Lipschitz lower bound is stored as
    :data:`LIP_RESTARTS` estimates with different ascent seeds (their spread is the restart noise); the upper
    bound is deterministic up to rounding.
``retrained`` (several checkpoints: the same recipe trained with different seeds)
    The CI job retrains the model and checks the new one. Retraining is bit-identical on one CPU but not
    across CPUs (another vector unit, thread count or BLAS changes the rounding, and 3 epochs of SGD amplify
    it), so the new model is one more draw from the distribution that the seeds sample. Each row stores every
    seed's value; a drop is tested against the one-sided **prediction interval** of one new draw,
    ``mean - t(K-1) · sd · sqrt(1 + 1/K)`` over the K seeds.

Tolerances. A row *regresses* when its adverse change exceeds the tolerance **and** lies beyond noise:

* accuracy: the drop exceeds ``--tolerance`` (default 0.01) and the test above rejects "no drop";
* a Lipschitz bound: it rises above ``mean · (1 + lip_tolerance) + t(K-1) · sd · sqrt(1 + 1/K)``, where mean and
  sd are over the baseline's estimates (ascent restarts in fixed mode, seeds in retrained mode) and
  ``--lip-tolerance`` (default 0.02) is a relative floor: a k·spread + floor rule with k from Student's t.

Every test runs at level ``ALPHA / rows`` (Bonferroni), so a whole check raises a false alarm with probability
at most :data:`ALPHA` = 5%. Each row reports the smallest adverse change it can detect at its n.

A change for the *better* beyond noise (the same test in the other direction) is flagged ``SUSPICIOUS``: an attack
that broke after a library upgrade looks like a robustness gain, a weaker ascent like a smoother model. It is a
loud warning, listed in the JSON and JUnit output, and exit 0 unless ``--fail-on-suspicious``.

Lipschitz bounds are compared only between the same :data:`robustclip.bounds.lipschitz.ESTIMATOR_VERSION` and the same
``--lipschitz`` mode (``full``; ``fast``: fewer pairs and steps; ``off``: no Lipschitz rows). A baseline made with
another estimator is incomparable (a better lower bound is not a regression): exit 2 with the command that
re-creates it. Baselines also record the versions (torch, torchattacks, ...), device, thread count and
determinism flag they were made with; a differing attack library is printed as a note.

Exit codes: 0 nothing regressed; 1 a regression (or, with ``--fail-on-suspicious``, a suspicious gain); 2 a usage or
input error (a NaN tolerance, a missing, corrupt, partial or empty baseline, one made with another suite, n or
dataset, an incomparable estimator); 3 an internal error. A crash is never 1.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core import files as _io
from ..errors import RobustclipError
from .baseline import (
    LIP_MODES,
    LIP_RESTARTS,
    MIN_SEEDS,
    MODES,
    _finite,
    make_baseline,
    read_baseline,
    update_command,
    validate_baseline,
)
from .measuring import (
    ModelSource,
    _eval_split,
    environment,
    estimator_version,
    measure,
)
from .verdicts import (
    ALPHA,
    DEFAULT_LIP_TOLERANCE,
    DEFAULT_TOLERANCE,
    Comparison,
    compare,
    detectable_summary,
    precheck,
)


def _check_number(flag: str, v: Any, lo: float, hi: float) -> None:
    if not _finite(v, lo, hi):
        raise RobustclipError(f"{flag} must be a finite number in [{lo:g}, {hi:g}], got {v!r}",
                              f"e.g. {flag} {DEFAULT_TOLERANCE if flag == '--tolerance' else DEFAULT_LIP_TOLERANCE}")


def _suite_for(suite: str, base: dict[str, Any] | None) -> Any:
    """Load ``suite``; a bare name the machine lacks resolves to the suite stored in a baseline of that name."""
    from ..attacks.suites import load_suite, parse_suite
    from ..errors import SuiteError

    try:
        return load_suite(suite)
    except SuiteError:
        if base is not None and base.get("suite") == suite and not str(suite).endswith(".toml"):
            return parse_suite(base["suite_config"], where=f"<suite {suite} stored in the baseline>")
        raise


def run_check(checkpoint: str | Sequence[str], *, suite: str, baseline: str, tolerance: float = DEFAULT_TOLERANCE,
              lip_tolerance: float = DEFAULT_LIP_TOLERANCE, n: int | None = None, update: bool = False,
              mode: str | None = None, lipschitz: str = "full", data_dir: str | None = None,
              progress: bool | None = None, fail_on_suspicious: bool = False, model: str | None = None,
              dataset: str | None = None, data_file: str | None = None, device: str | None = None
              ) -> tuple[int, list[Comparison], dict[str, Any]]:
    """The check as a function: ``(exit code, comparisons, info)``; user errors raise :class:`RobustclipError`.

    With ``update``, evaluates every checkpoint and writes the baseline (``mode``: ``fixed`` for one checkpoint,
    ``retrained`` for several seeds); otherwise checks one checkpoint against the baseline. ``model``,
    ``dataset``, ``data_file``, ``device``: a user's own model code, dataset, evaluation data and device (see
    :class:`ModelSource` and :func:`robustclip.checkpoints.foreign.load_model`). Units: ``tolerance`` and every
    accuracy in
    the comparisons, the info and the baseline are fractions in [0, 1] (0.02 is 2 points); the CLI prints percent.
    """
    from ..core.progress import resolve

    progress = resolve(progress)  # None: on when stderr is a terminal
    source = ModelSource(model=model, dataset=dataset, data_file=data_file, device=device)
    ckpts = [str(checkpoint)] if isinstance(checkpoint, (str, os.PathLike)) else [str(c) for c in checkpoint]
    _check_number("--tolerance", tolerance, 0.0, 0.999)
    _check_number("--lip-tolerance", lip_tolerance, 0.0, 10.0)
    if lipschitz not in LIP_MODES:
        raise RobustclipError(f"--lipschitz must be one of {', '.join(LIP_MODES)}, got {lipschitz!r}",
                              "e.g. --lipschitz fast")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise RobustclipError(f"--n must be a whole number >= 1, got {n!r}", "e.g. --n 500")
    if mode is not None and mode not in MODES:
        raise RobustclipError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}", "e.g. --mode retrained")
    if not ckpts:
        raise RobustclipError("no checkpoint given", "pass CKPT")
    info: dict[str, Any] = {"checkpoint": ckpts[0] if len(ckpts) == 1 else ckpts, "baseline": str(baseline),
                            "tolerance": tolerance, "lip_tolerance": lip_tolerance, "lipschitz": lipschitz,
                            "alpha": ALPHA}
    t0 = time.perf_counter()
    if update:
        mode = mode or "fixed"
        if mode == "fixed" and len(ckpts) != 1:
            raise RobustclipError(f"a fixed baseline is made from one checkpoint, got {len(ckpts)}",
                                  "pass one CKPT, or several seeds with --mode retrained")
        if mode == "retrained" and len(ckpts) < MIN_SEEDS:
            raise RobustclipError(f"a retrained baseline needs at least {MIN_SEEDS} checkpoints (seeds), "
                                  f"got {len(ckpts)}", "train the recipe with more seeds and pass them all")
        if mode == "retrained":
            shas = [_io.sha256_file(c) if Path(c).is_file() else c for c in ckpts]
            if len(set(shas)) != len(shas):
                raise RobustclipError("the same checkpoint is given twice; a spread over seeds needs distinct "
                                      "models", "pass checkpoints trained with different seeds")
        # before any work: never a link, device, folder or input (the checkpoint!), and an existing file is replaced
        # only if it holds a baseline; --update-baseline is the consent to replace that
        from ..core.inputs import command_inputs
        from ..core.outputs import guard_output
        from ..data.datasets import dataset_folders

        guard_output(baseline, inputs=command_inputs(*ckpts, suite, data_file, model=model,
                                                     folders=dataset_folders(data_dir)),
                     what="--baseline", kind="baseline")
        s = _suite_for(suite, None)
        measured = [measure(c, s, n=n, data_dir=data_dir, lipschitz=lipschitz, progress=progress, source=source,
                            restarts=LIP_RESTARTS if mode == "fixed" else 1, both_modes=True) for c in ckpts]
        doc = make_baseline(measured, suite_raw=s.raw, suite_name=s.name, mode=mode, lipschitz_mode=lipschitz)
        validate_baseline(doc, where="the new baseline")  # never write what the check would refuse
        _io.write_json(baseline, doc)
        info.update(suite=s.name, n=measured[0].n, mode=mode, seconds=time.perf_counter() - t0,
                    baseline_written=str(baseline), flags=[f for m in measured for f in m.flags])
        return 0, [], info
    if len(ckpts) != 1:
        raise RobustclipError(f"a check compares one checkpoint with the baseline, got {len(ckpts)}",
                              "pass several checkpoints only with --update-baseline --mode retrained")
    base = read_baseline(baseline, update_cmd=update_command(ckpts, suite=suite, baseline=baseline,
                                                             lipschitz=lipschitz, n=n))
    if mode is not None and mode != base["mode"]:
        raise RobustclipError(f"baseline {baseline} is a {base['mode']} baseline, --mode says {mode}",
                              "drop --mode (a check reads it from the baseline), or re-create the baseline")
    stored = [c.get("path") for c in base["checkpoints"]]
    cmd = update_command(stored if base["mode"] == "retrained" else ckpts, suite=suite, baseline=baseline,
                         mode=base["mode"], lipschitz=lipschitz if lipschitz != "off" else "full", n=n)
    s = _suite_for(suite, base)
    n_eff = n or s.n
    if source is not None and source.data_file is not None:  # a user's data may hold fewer samples than asked for
        n_eff = len(_eval_split("", n_eff, data_dir, source.data_file))
    precheck(base, s.raw, n_eff, lipschitz=lipschitz, where=f"baseline {baseline}", update_cmd=cmd)
    cur = measure(ckpts[0], s, n=n, data_dir=data_dir, lipschitz=lipschitz, progress=progress, source=source)
    rows, notes = compare(base, cur, suite_raw=s.raw, tolerance=tolerance, lip_tolerance=lip_tolerance,
                          lipschitz=lipschitz, where=f"baseline {baseline}", update_cmd=cmd)
    regressed = any(r.regressed for r in rows)
    suspicious = any(r.suspicious for r in rows)
    code = 1 if regressed or (fail_on_suspicious and suspicious) else 0
    info.update(suite=s.name, n=cur.n, mode=base["mode"], seconds=time.perf_counter() - t0, flags=cur.flags,
                notes=notes, detectable=detectable_summary(rows, cur.n), baseline_environment=base["environment"],
                environment=environment(cur.device), estimator_version=estimator_version())
    return code, rows, info
