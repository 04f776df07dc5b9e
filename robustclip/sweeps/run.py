"""One planned run of a sweep: its id, training config, suite and the digest that says whether it is done."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass
class Run:
    """One planned training + evaluation run.

    ``id``: a safe folder name. ``train``: the :class:`~robustclip.training.trainer.TrainConfig` fields. ``suite``: the
    attack suite as a dict (None for regression). ``n_test``: test samples (None: the suite's n). ``meta``: the
    sweep's labels for it (method, λ or τ, seed, experiment). ``n_val``: validation images scored for model
    selection (None: as many as test images, at most :data:`robustclip.evaluation.pipeline.VAL_N`; 0: none).
    """

    id: str
    train: dict[str, Any]
    suite: dict[str, Any] | None
    n_test: int | None
    meta: dict[str, Any]
    n_val: int | None = None
    lipschitz: str | None = None
    """The evaluation's Lipschitz mode (``full``, ``fast`` or ``off``; None: ``full``)."""

    def digest(self) -> str:
        """A hash of what defines the run's result: its training config, suite, test and validation sizes."""
        # settings tables added to TrainConfig later are left out while empty, so older sweeps keep their digests
        train = {k: v for k, v in self.train.items() if not (k == "settings" and not v)}
        what: dict[str, Any] = {"train": train, "suite": self.suite, "n_test": self.n_test}
        if self.n_val is not None:
            what["n_val"] = self.n_val
        if self.lipschitz is not None:  # left out while unset, so older sweeps keep their digests
            what["lipschitz"] = self.lipschitz
        blob = json.dumps(what, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]
