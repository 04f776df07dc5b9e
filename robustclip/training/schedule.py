"""The λ schedule: λ per epoch, fixed or steered by the paper's discrepancy principle (a target training accuracy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core import validate


@dataclass
class LambdaSchedule:
    """λ per epoch: fixed, or the paper's discrepancy principle.

    Epochs ``0 .. warmup-1`` train at λ = 0. From epoch ``warmup`` on, λ starts
    at ``lam``. With a target accuracy τ (``target``), after every ``every``-th
    epoch λ rises by ``step`` if the epoch's training accuracy is ≥ τ and falls
    by ``step`` (never below 0) otherwise. Without τ, λ stays fixed.
    ``history`` holds the λ used in each epoch.
    """

    lam: float = 0.0
    target: float | None = None
    step: float = 0.01
    every: int = 1
    warmup: int = 0
    history: list[float] = field(default_factory=list)
    _current: float | None = None

    def __post_init__(self) -> None:
        num = validate.number
        num(self.lam, "--lam (λ)", lo=0, fix="pass e.g. --lam 0.1")
        if self.target is not None:
            num(self.target, "--target-acc (τ)", lo=0, lo_open=True, hi=1, fix="pass e.g. --target-acc 0.97")
        num(self.step, "--lam-step", lo=0, fix="pass e.g. --lam-step 0.01")
        num(self.every, "--lam-every", integer=True, lo=1, fix="pass e.g. --lam-every 1")
        num(self.warmup, "warm-up (--warmup)", integer=True, lo=0, fix="pass e.g. --warmup 2")

    def value(self, epoch: int) -> float:
        """λ to use in ``epoch`` (0-based); records it in ``history``."""
        if epoch < self.warmup:
            lam = 0.0
        else:
            if self._current is None:
                self._current = self.lam
            lam = self._current
        if len(self.history) <= epoch:
            self.history.append(lam)
        return lam

    def update(self, epoch: int, train_acc: float | None) -> None:
        """Apply the discrepancy rule after ``epoch`` with its training accuracy."""
        if self.target is None or epoch < self.warmup or self._current is None:
            return
        if (epoch - self.warmup + 1) % self.every:
            return
        if train_acc is not None and train_acc >= self.target:
            self._current = self._current + self.step
        else:
            self._current = max(0.0, self._current - self.step)

    @property
    def final(self) -> float:
        return self._current if self._current is not None else 0.0

    def config(self) -> dict[str, Any]:
        return {"lam": self.lam, "target": self.target, "step": self.step, "every": self.every, "warmup": self.warmup}
