"""Certificates of an evaluation: per-method certified samples (Lipschitz margin, CROWN) for every cell of a suite."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..attacks.suites import Suite
from ..bounds import certify as certify_mod
from ..bounds import upper
from ..errors import RobustclipError


def _methods(certify: bool | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    if certify is True:
        return certify_mod.METHODS
    if certify is False:
        return ()
    if isinstance(certify, (tuple, list)) and all(m in certify_mod.METHODS for m in certify):
        return tuple(certify)
    raise RobustclipError(f"certify must be True, False or methods from {certify_mod.METHODS}, got {certify!r}",
                          "e.g. certify=('lipschitz', 'crown')")


def certificates(model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, s: Suite, *,
                 methods: tuple[str, ...] | None, lip_upper: float | None, sdp: bool = False,
                 pairs_out: list[torch.Tensor] | None = None,
                 broken: dict[tuple[str, float], torch.Tensor] | None = None,
                 ) -> tuple[dict[str, dict[tuple[str, float], torch.Tensor]], dict[str, Any]]:
    """Per-method certificates ``{method: {(norm, ε): bool (N,)}}`` for every cell of the suite, and info.

    ``methods`` None is the default: the ``lipschitz`` method alone. With a
    caller-given ``lip_upper`` that method uses ``√2 · lip_upper`` (none if it
    is infinite); otherwise the sound per-class-pair constants of
    :func:`robustclip.bounds.lipschitz.upper_bounds`, or nothing (with the reason in
    the info) for a model whose structure is not fully understood.
    ``pairs_out``, when given, receives the ``(K, K)`` per-class-pair constants the ``lipschitz`` method used.
    ``broken``: per cell, samples the attacks broke (CROWN skips them; see :func:`robustclip.bounds.certify.certify`).
    """
    methods = ("lipschitz",) if methods is None else methods
    cells = list(s.grid())
    info: dict[str, Any] = {"methods": list(methods)}
    out: dict[str, dict[tuple[str, float], torch.Tensor]] = {}
    if not methods or not cells:
        return out, info
    if lip_upper is not None:
        if not (isinstance(lip_upper, (int, float)) and lip_upper > 0) or math.isnan(lip_upper):
            raise RobustclipError(f"lip_upper must be a positive number, got {lip_upper!r}",
                                  "pass an upper bound from robustclip.bounds.lipschitz.estimate, or None")
        info["upper"] = float(lip_upper)
        info["upper_method"] = "given by the caller"
    if "lipschitz" in methods and lip_upper is not None:
        if math.isfinite(lip_upper):
            K = logits.shape[1]
            pairs = torch.full((K, K), math.sqrt(2) * lip_upper, dtype=torch.float64)
            if pairs_out is not None:
                pairs_out.append(pairs)
            out["lipschitz"] = {(nm, e): certify_mod.lipschitz_certified(logits, y, pairs, e if nm == "L2" else
                                                                       e * math.sqrt(x[0].numel()))
                                for nm, e in cells}
        methods = tuple(m for m in methods if m != "lipschitz")
        if not methods:
            return out, info
    uppers = None
    if "lipschitz" in methods:
        uppers, reason = upper.upper_bounds(model, tuple(x.shape[1:]), sdp=sdp)
        if sdp and uppers:  # the fast LipSDP-class bound beside LipSDP
            from ..bounds.eclipse import eclipse_upper

            uppers.append(eclipse_upper(model, tuple(x.shape[1:])))
        if reason:
            info["reason"] = reason
        finite = [u for u in uppers if math.isfinite(u.value)]
        if finite:
            best = min(finite, key=lambda u: u.value)
            info.setdefault("upper", best.value)
            info.setdefault("upper_method", best.method)
            info["uppers"] = {u.method: {"value": u.value, "seconds": u.seconds, "assumptions": u.assumptions}
                              for u in uppers}
    # with the strong attacks' outcomes at hand, CROWN's own 10-step PGD prefilter would only repeat them
    res = certify_mod.certify(model, x, y, cells, methods=methods, uppers=uppers, broken=broken,
                              prefilter=0 if broken is not None else 10)
    if "reason" in res.info:
        info["reason"] = res.info["reason"]
        return out, info
    if pairs_out is not None and uppers is not None:
        best_pairs = upper.best_pairs(uppers)
        values = [u.value for u in uppers if math.isfinite(u.value)]
        if best_pairs is None and values:
            best_pairs = torch.full((logits.shape[1],) * 2, math.sqrt(2) * min(values), dtype=torch.float64)
        if best_pairs is not None:
            pairs_out.append(best_pairs)
    out.update(res.per_method)
    info["seconds"] = res.seconds
    return out, info
