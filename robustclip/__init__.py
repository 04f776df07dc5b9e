"""robustclip: CLIP (cheap Lipschitz training) and an honest robustness evaluation.

The small public surface::

    model, meta = robustclip.load("model.safetensors", device="auto")   # auto: CUDA when present, else the CPU
    clean, robust = robustclip.benchmark(model, dataset="mnist", suite="paper-mnist")
    result = robustclip.evaluate(model, x, y, suite="curve-l2", n_classes=10)
    answer = robustclip.compare("runs/eval-a", "runs/eval-b").answers()   # paired tests on evaluate folders
    trained = robustclip.train(robustclip.TrainConfig(dataset="mnist", reg="clip", lam=0.1))
    robustclip.save(trained.model, "clip.safetensors", trained.meta)
    penalty = robustclip.ClipPenalty(model)          # CLIP as a loss in your own training loop

Units: every accuracy in Python is a fraction in [0, 1] (``0.973``), in frames, return values, thresholds and
JSON files alike; only the command line and the reports print percent (``97.3``), and say so.

Modules (each importable as ``robustclip.NAME`` and as an attribute): data, models, checkpoints, loading,
regularizers, training, attacks, evaluation, lipschitz, certify, stats, pipeline, sweeps, reports, gate, testing,
cli. ``dir(robustclip)`` lists exactly the public names.

Names are imported on first use (PEP 562), so ``import robustclip`` and the command line start without loading
torch; a broken install then fails with one line when a command needs it, not with a traceback at import.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from .errors import RobustclipError

if _TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from . import cli, stats, sweeps, testing
    from .api import benchmark, evaluate, load
    from .attacks import suites as attacks
    from .bounds import certify, lipschitz
    from .checkpoints import foreign as loading
    from .checkpoints import format as checkpoints
    from .checkpoints.format import save
    from .data import datasets as data
    from .evaluation import pipeline
    from .evaluation import runner as evaluation
    from .evaluation.runner import EvalResult
    from .gate import check as gate
    from .models import specs as models
    from .reports import pages as reports
    from .reports.compare import compare
    from .training import trainer as training
    from .training.config import TrainConfig
    from .training.regularizers import registry as regularizers
    from .training.regularizers.penalty import ClipPenalty
    from .training.trainer import train

# where each public name lives (a relative module path): the one table a relayout of the modules updates
_NAMES = {"save": ".checkpoints.format", "load": ".api", "benchmark": ".api", "evaluate": ".api",
          "EvalResult": ".evaluation.runner", "train": ".training.trainer", "TrainConfig": ".training.config",
          "ClipPenalty": ".training.regularizers.penalty", "compare": ".reports.compare"}
_MODULES = {"attacks": ".attacks", "certify": ".bounds.certify", "checkpoints": ".checkpoints", "cli": ".cli",
            "data": ".data", "evaluation": ".evaluation", "gate": ".gate", "lipschitz": ".bounds.lipschitz",
            "loading": ".checkpoints.foreign", "models": ".models", "pipeline": ".evaluation.pipeline",
            "regularizers": ".training.regularizers.registry", "reports": ".reports", "stats": ".stats",
            "sweeps": ".sweeps", "testing": ".testing", "training": ".training"}

__all__ = ["load", "save", "benchmark", "evaluate", "compare", "EvalResult", "train", "TrainConfig", "ClipPenalty",
           "RobustclipError", "attacks", "certify", "checkpoints", "cli", "data", "evaluation", "gate", "lipschitz",
           "loading", "models", "pipeline", "regularizers", "reports", "stats", "sweeps", "testing", "training"]


def __getattr__(name: str) -> _Any:
    if name in _NAMES:
        value = getattr(_importlib.import_module(_NAMES[name], __name__), name)
    elif name in _MODULES:
        value = _importlib.import_module(_MODULES[name], __name__)
    elif name == "__version__":
        from ._version import version

        value = version()
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, "__version__"})
