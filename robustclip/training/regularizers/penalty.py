"""CLIP as a loss term for your own training loop: one object that computes the penalty and moves its pairs.

    clip = robustclip.ClipPenalty(model)                 # 64 pairs, as the CLI default
    for x, y in loader:                                   # x (B, *in_shape) in [0,1]
        loss = F.cross_entropy(model(x), y) + lam * clip(x)
        opt.zero_grad(); loss.backward(); opt.step()

``clip(x)`` returns the CLIP penalty (the largest difference quotient ``||f(a)-f(b)|| / ||a-b||`` over its pair
set, a scalar with graph) for the model's current weights. The pairs chase the steepest directions by gradient
ascent without any further call: the backward pass of the loss leaves each pair's gradient on the pair set, and
the next ``clip(x)`` first moves the pairs along it (the paper's "ascend, then descend", one step lagged, as in
:class:`~robustclip.training.regularizers.clip.ClipRegularizer`, whose state and math this object reuses). If no
gradient
reached the pairs (the penalty was left out of the loss, or scaled by 0), the next call computes their ascent
direction itself, so the pairs never silently freeze.

BatchNorm: in train mode the pair points are normalised by their own batch statistics, as training does, but
the running statistics (what eval mode uses) are restored after every pass of the pairs: they are not data.

``state_dict()`` / ``load_state_dict()`` save and restore the pairs, their step sizes, the random generator and
the counters: a resumed run continues bit-identically (save the model and optimiser too).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...bounds import pairs as pairs_mod
from ...core.devices import resolve_device
from ...core.modes import kept_running_stats
from ...errors import RobustclipError
from .clip import ClipConfig, ClipRegularizer

__all__ = ["ClipPenalty"]


class ClipPenalty:
    """The CLIP penalty of ``model`` on an adaptive pair set drawn from the training batches.

    Args:
        model: the network ``f``; inputs ``(N, *in_shape)`` in [0,1], outputs ``(N, k)``.
        pairs: the number m of pairs (the set holds ``2m`` points).
        init: how pairs are drawn from a batch: ``partial_random`` (a sample and itself moved by ``radius`` in L2),
            ``plain`` (two samples) or ``noise`` (uniform in [0,1]).
        radius: L2 distance of ``partial_random`` pairs.
        eta: initial L2 ascent step per pair; grown ×1.2 when a pair's quotient rose since the last call, halved
            when it fell.
        reduce: ``max`` (the paper: the largest quotient) or ``mean``.
        cap: a call whose largest quotient exceeds this (or is not finite) returns 0 and redraws the pairs.
        refresh_every: redraw the pairs from the current batch every this many calls.
        ascent_steps: ascent moves per call; the first comes from the loss's backward pass, further ones run on
            the current weights at the start of the call.
        seed: seeds the pair draws (the generator is part of the state).

    Calling it with a batch ``x`` ``(B, *in_shape)`` in [0,1] returns a scalar tensor ``>= 0`` with graph.
    ``device`` (``auto``, ``cpu``, ``cuda``, ``cuda:N``; None: where the model is) moves the model there first.
    """

    def __init__(self, model: nn.Module, *, pairs: int = 64, init: str = "partial_random", radius: float = 2.0,
                 eta: float = 0.1, reduce: str = "max", cap: float = 1e4, refresh_every: int = 20,
                 ascent_steps: int = 1, seed: int = 0, device: str | None = None) -> None:
        if next(model.parameters(), None) is None:
            raise RobustclipError("ClipPenalty: the model has no parameters, so no penalty could change it",
                                  "pass the network you train")
        if device is not None:  # "auto", "cpu", "cuda", "cuda:N": the model (and so the pairs) move there
            model.to(resolve_device(device))
        cfg = ClipConfig(pairs=pairs, init=init, radius=radius, ascent_steps=ascent_steps, eta=eta, reduce=reduce,
                         cap=cap, refresh_every=refresh_every, every=1)
        self.model = model
        self.reg = ClipRegularizer(cfg, seed=seed)
        self.reg.bind(model)
        self.calls = 0
        self._pending = False  # the last call's pairs have not moved yet

    @property
    def config(self) -> dict[str, Any]:
        """The settings (as :class:`~robustclip.training.regularizers.clip.ClipConfig` fields)."""
        return self.reg.config()

    @property
    def pairs(self) -> torch.Tensor | None:
        """The pair set of the last call ``(2m, *in_shape)`` in [0,1] (first half ``x``, second half ``x'``), detached.

        Reading it changes nothing: the pending ascent move still happens at the next call (or :meth:`state_dict`).
        """
        return None if self.reg.P is None else self.reg.P.detach()

    @property
    def quotients(self) -> torch.Tensor | None:
        """The difference quotients ``(m,)`` of the last call's pairs (lower bounds on the L2 Lipschitz constant)."""
        q = getattr(self.reg, "_q", None)
        return None if q is None else q.detach()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The penalty for batch ``x`` ``(B, *in_shape)`` in [0,1]: a scalar with graph (0 when capped)."""
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            got = str(x.dtype) if isinstance(x, torch.Tensor) else type(x).__name__
            raise RobustclipError(f"ClipPenalty: the batch is {got}, expected floating-point inputs in [0,1]",
                                  "pass the batch the model trains on, e.g. x.float() / 255")
        if x.dim() < 2 or x.shape[0] == 0:
            raise RobustclipError(f"ClipPenalty: the batch has shape {tuple(x.shape)}, no samples to draw pairs from",
                                  "call it with a non-empty batch (B, *in_shape), B >= 1")
        weight = next(self.model.parameters())
        if x.dtype != weight.dtype:  # a float64 batch for a float32 model: the pairs take the model's dtype
            x = x.to(weight.dtype)
        self._settle()
        P = self.reg.extra_inputs(x, self.calls)
        assert P is not None
        with kept_running_stats(self.model):  # pair points are not data: BatchNorm's statistics stay as they were
            out = self.model(P)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != P.shape[0]:
            got = f"a {type(out).__name__}" if not isinstance(out, torch.Tensor) else f"shape {tuple(out.shape)}"
            raise RobustclipError(f"ClipPenalty: the model returns {got}, expected logits (N, classes)",
                                  "return the logits tensor itself from forward (not a tuple or dict)")
        pen = self.reg.penalty(self.model, out)
        self.calls += 1
        self._pending = True
        if pen is None:  # above the cap: no penalty now; the pairs are redrawn at the next call
            return torch.zeros((), device=P.device, dtype=P.dtype)
        return pen

    def _settle(self) -> None:
        """Move the last call's pairs along their ascent direction (once)."""
        if not self._pending:
            return
        self._pending = False
        P = self.reg.P
        if P is None:
            return
        grad = P.grad
        if (grad is None or not bool(grad.any())) and not self.reg._skip:
            grad = self._ascent_direction(P)  # the loss's backward did not reach the pairs
        if P.grad is None or P.grad is not grad:
            P.grad = grad
        self.reg.after_step()

    def _ascent_direction(self, P: torch.Tensor) -> torch.Tensor:
        """Gradient ``(2m, ...)`` of the pairs' quotients at the current weights (weights' ``.grad`` untouched)."""
        Pg = P.detach().requires_grad_(True)
        # in the model's own mode, as the loss's forward pass would have run; BatchNorm's statistics untouched
        with torch.enable_grad(), kept_running_stats(self.model):
            q = pairs_mod.quotients(self.model, Pg)
            (g,) = torch.autograd.grad(q.sum(), Pg)
        return g

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: pairs, step sizes, last quotients, generator state and counters.

        Any pending ascent move is made first (it is what the next call would do), so saving changes nothing.
        """
        self._settle()
        return {"regularizer": self.reg.state_dict(), "calls": self.calls, "config": self.config}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (into an object built with the same settings)."""
        self.reg.load_state_dict(state["regularizer"])
        self.calls = int(state["calls"])
        self._pending = False
