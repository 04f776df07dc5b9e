"""The regulariser protocol the trainer drives: extra rows beside the batch, a penalty on their outputs, state."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Regularizer:
    """Base class: no penalty at all (plain training).

    The protocol the trainer drives, once per weight step:

    1. ``bind(model)`` once, before the first step;
    2. ``extra_inputs(x, step, y=y)``: rows ``(r, *in_shape)`` in [0,1] to run through the model, or None;
    3. ``penalty(model, model(extra))``: the unscaled penalty (a scalar with graph), or None to skip; the trainer
       adds ``λ · penalty`` to the data loss, and also ``unscaled_penalty()`` (a term of weight 1, for hybrids);
    4. after the optimiser step, ``after_step()``.
    """

    name = "none"
    unscaled = False
    """True when :meth:`unscaled_penalty` may return a term: the trainer then drives the regulariser even at λ = 0."""
    data_weight = 1.0
    """Weight of the trainer's own data loss (0 when the method's term replaces it, e.g. GloRo's ⊥ cross-entropy)."""

    def plan(self, total_steps: int) -> None:
        """Told once, before training, how many weight steps the run will take (for schedules)."""

    def batch_outputs(self, out: torch.Tensor, y: torch.Tensor) -> None:
        """The batch's outputs ``(n, K)`` (with graph) and labels ``(n,)``, each step before :meth:`penalty`."""

    def selection_score(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float | None:
        """A validation score (higher is better) to select epochs by instead of clean accuracy, or None."""
        return None

    def bind(self, model: nn.Module, in_shape: tuple[int, ...] | None = None) -> None:
        """Tell the regulariser which model it serves (some build their extra rows with it)."""

    def extra_inputs(self, x: torch.Tensor, step: int, y: torch.Tensor | None = None) -> torch.Tensor | None:
        """Rows ``(r, *in_shape)`` to pass through the model beside batch ``x`` (labels ``y``), or None."""
        return None

    def penalty(self, model: nn.Module, extra_out: torch.Tensor | None) -> torch.Tensor | None:
        """The unscaled penalty (a scalar with graph) given outputs of the extra rows."""
        return None

    def unscaled_penalty(self) -> torch.Tensor | None:
        """A term (a scalar with graph) the trainer adds with weight 1, not λ, computed by the last ``penalty`` call.

        None for every single method; the hybrid ``clip-adversarial`` returns its adversarial cross-entropy here.
        """
        return None

    def after_step(self) -> None:
        """Update internal state once the optimiser step is done."""

    def estimate(self) -> float | None:
        """The largest quotient seen since the last call (CLIP), else None."""
        return None

    def peek(self) -> float | None:
        """The largest quotient seen so far in this epoch, without resetting it."""
        return None

    def config(self) -> dict[str, Any]:
        """The settings, as stored in a checkpoint's metadata."""
        return {"name": self.name}

    def state_dict(self) -> dict[str, Any]:
        """Internal state (tensors and numbers) to resume a run; empty for stateless methods."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
