"""Lipschitz estimate: lower and sound upper bounds in one report, and the estimator's version.

The pieces live in :mod:`.pairs` (pair geometry), :mod:`.structure` (the understood layer chain),
:mod:`.upper` (upper bounds and the report), :mod:`.lipsdp` and :mod:`.lower`; import their names from there.
Conventions as in
:mod:`robustclip.bounds.pairs`: inputs in ``[0, 1]``, L2 in and out.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from .lower import (
    exact_1d,
    lower_bounds,
    lower_estimate,
    refine_lower,
)
from .structure import (
    known_layers,
)
from .upper import (
    LipschitzReport,
    upper_bounds,
)

ESTIMATOR_VERSION = "2"
"""Version of the bound estimators; bump it whenever a bound's value can change (the CI gate compares
Lipschitz bounds only between equal versions). 2: ``--lipschitz fast`` has its own, cheaper upper bound."""


def estimate(model: nn.Module, x: torch.Tensor, *, in_shape: tuple[int, ...] | None = None, seed: int = 0,
             pairs: int = 64, steps: int = 50, exact: bool = False, sdp: bool = False,
             budget: str | None = None, plan: Any = None, batch: int | None = None,
             fast_upper: bool = False, refine: bool = False) -> LipschitzReport:
    """Lower bounds (pair and Jacobian ascent), sound upper bounds and, for 1-D models, the exact constant.

    ``x``: data ``(N, *in_shape)`` in [0,1] to start the ascents from.
    Lower bounds are always returned; ``upper`` is None (with
    ``upper_reason``) for models that are not fully understood. ``plan``: an
    :class:`robustclip.bounds.budget.AscentPlan` whose settings replace ``pairs`` and ``steps`` (the
    cost-bounded settings of a ``--lipschitz`` mode; recorded in the report). ``budget``
    (``quick`` | ``normal`` | ``thorough``) adds the restart-based lower bounds
    of :func:`lower_bounds`, including the Jacobian floor over all of ``x``
    (off by default so the gate's committed baselines stay comparable);
    ``sdp`` adds LipSDP (needs cvxpy). ``batch``: points per chunk of the ascents (the result does not depend on it).
    ``fast_upper``: only the cheap upper bound of ``upper_bounds(..., fast=True)`` (``--lipschitz fast``).
    ``refine`` (what ``evaluate`` does by default; the CI gate does not, so its baselines stay comparable): also the
    longer Jacobian ascent of :func:`robustclip.bounds.lower.refine_lower` (within its MAC budget) and, for fully
    connected chains no wider than :data:`robustclip.bounds.eclipse.DEFAULT_MAX_WIDTH`, the ECLipsE upper bound.
    """
    in_shape = in_shape or tuple(x.shape[1:])
    kw: dict[str, Any] = {"pairs": pairs, "steps": steps}
    if plan is not None:
        kw = dict(plan.settings())
    methods, secs = lower_estimate(model, x, seed=seed, batch=batch, **kw)
    t2 = time.perf_counter()
    if budget is not None:
        methods.update(lower_bounds(model, x, seed=seed, budget=budget, pairs=kw["pairs"], steps=kw["steps"]))
    t3 = time.perf_counter()
    ups, reason = upper_bounds(model, in_shape, sdp=sdp, fast=fast_upper)
    t4 = time.perf_counter()
    extra: dict[str, Any] = {}
    if refine:
        used: dict[str, Any]
        try:
            found, used = refine_lower(model, x, seed=seed, macs=None if plan is None else plan.macs)
        except RuntimeError as exc:  # torch.func cannot trace it (e.g. an autograd.Function without setup_context)
            found, used = {}, {"skipped": str(exc).splitlines()[0][:200]}
        methods.update({f"{k}_refined": v for k, v in found.items()})
        t5 = time.perf_counter()
        extra = {"refine_lower": t5 - t4}
        if not fast_upper and ups and known_layers(model)[0] is not None and all(u.method != "eclipse" for u in ups):
            from .eclipse import DEFAULT_MAX_WIDTH, eclipse_upper

            ups.append(eclipse_upper(model, in_shape, max_width=DEFAULT_MAX_WIDTH))
            extra["refine_upper"] = time.perf_counter() - t5
        plan_d = None if plan is None else {**plan.to_dict(), "refine": used}
    else:
        plan_d = None if plan is None else plan.to_dict()
    finite = [u for u in ups if math.isfinite(u.value)]
    best_up = min(finite, key=lambda u: u.value) if finite else None
    ex = exact_1d(model) if exact else None
    lower_method = max(methods, key=lambda k: methods[k])
    lquo = max(v for k, v in methods.items() if k.startswith("quotient"))
    ljac = max(v for k, v in methods.items() if k.startswith("jacobian"))
    return LipschitzReport(lower=max(lquo, ljac), upper=best_up.value if best_up else None, lower_quotient=lquo,
                           lower_jacobian=ljac, exact=ex,
                           seconds={**secs, "lower_restarts": t3 - t2, "upper": t4 - t3, **extra},
                           seed=seed, lower_method=lower_method, upper_method=best_up.method if best_up else None,
                           upper_reason=reason, uppers=ups, lower_methods=methods, plan=plan_d)
