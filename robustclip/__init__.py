"""robustclip: CLIP (cheap Lipschitz training) and an honest robustness evaluation.

The small public surface::

    model, meta = robustclip.load("model.safetensors")
    clean, robust = robustclip.benchmark(model, dataset="mnist", suite="attacks/paper-mnist.toml")
    result = robustclip.evaluate(model, x, y, suite="attacks/curve-l2.toml", n_classes=10)
    trained = robustclip.train(robustclip.TrainConfig(dataset="mnist", reg="clip", lam=0.1))
    robustclip.save(trained.model, "clip.safetensors", trained.meta)

Modules: data, models, checkpoints, regularizers, training, attacks,
evaluation, lipschitz, sweeps, reports, gate, testing, cli.
"""

from . import attacks, checkpoints, data, evaluation, lipschitz, models, regularizers, training
from .checkpoints import save
from .errors import RobustclipError
from .evaluation import EvalResult, benchmark, evaluate
from .loading import load
from .penalty import ClipPenalty
from .training import TrainConfig, train

__all__ = ["load", "save", "benchmark", "evaluate", "EvalResult", "train", "TrainConfig", "ClipPenalty",
           "RobustclipError", "attacks", "checkpoints", "data", "evaluation", "lipschitz", "models", "regularizers",
           "training"]

try:
    from importlib.metadata import version as _version

    __version__ = _version("robustclip")
except Exception:  # pragma: no cover
    __version__ = "unknown"
