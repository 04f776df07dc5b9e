"""robustclip: CLIP (cheap Lipschitz training) and an honest robustness evaluation.

The small public surface::

    model, meta = robustclip.load("model.safetensors", device="auto")   # auto: CUDA when present, else the CPU
    clean, robust = robustclip.benchmark(model, dataset="mnist", suite="paper-mnist")
    result = robustclip.evaluate(model, x, y, suite="curve-l2", n_classes=10)
    trained = robustclip.train(robustclip.TrainConfig(dataset="mnist", reg="clip", lam=0.1))
    robustclip.save(trained.model, "clip.safetensors", trained.meta)
    penalty = robustclip.ClipPenalty(model)          # CLIP as a loss in your own training loop
    answer = robustclip.compare("runs/eval-a", "runs/eval-b")   # paired tests: is A more robust than B?

Units: every accuracy in Python is a fraction in [0, 1] (``0.973``), in frames, return values, thresholds and
JSON files alike; only the command line and the reports print percent (``97.3``), and say so.

Modules: the subpackages data, models, training, checkpoints, attacks, evaluation, bounds, gate, sweeps, reports,
testing and cli, and the module stats; each is importable as ``robustclip.NAME`` and is an attribute. A subpackage
re-exports nothing: every other name is imported from the module that defines it, its one path
(``from robustclip.bounds.lipschitz import estimate``). ``dir(robustclip)`` lists exactly the public names.

Names are imported on first use (PEP 562), so ``import robustclip`` and the command line start without loading
torch; a broken install then fails with one line when a command needs it, not with a traceback at import.
"""

from __future__ import annotations

import importlib as _importlib
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any

from .errors import RobustclipError

if _TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from . import (
        attacks,
        bounds,
        checkpoints,
        cli,
        data,
        evaluation,
        gate,
        models,
        reports,
        stats,
        sweeps,
        testing,
        training,
    )
    from .api import benchmark, evaluate, load
    from .checkpoints.format import save
    from .evaluation.runner import EvalResult
    from .reports.compare import compare
    from .training.config import TrainConfig
    from .training.regularizers.penalty import ClipPenalty
    from .training.trainer import train

# where each public name lives (a relative module path): the one table a relayout of the modules updates
_NAMES = {"save": ".checkpoints.format", "load": ".api", "benchmark": ".api", "evaluate": ".api",
          "EvalResult": ".evaluation.runner", "train": ".training.trainer", "TrainConfig": ".training.config",
          "ClipPenalty": ".training.regularizers.penalty", "compare": ".reports.compare"}
__all__ = ["load", "save", "benchmark", "evaluate", "compare", "EvalResult", "train", "TrainConfig", "ClipPenalty",
           "RobustclipError", "attacks", "bounds", "checkpoints", "cli", "data", "evaluation", "gate", "models",
           "reports", "stats", "sweeps", "testing", "training"]
_MODULES = frozenset(__all__[__all__.index("RobustclipError") + 1:])  # the subpackages and stats: one path each


def __getattr__(name: str) -> _Any:
    if name in _NAMES:
        value = getattr(_importlib.import_module(_NAMES[name], __name__), name)
    elif name in _MODULES:
        value = _importlib.import_module(f".{name}", __name__)
    elif name == "__version__":
        from ._version import version

        value = version()
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, "__version__"})
