"""Attack suites: TOML files that name attacks, their settings and ε grids.

A suite file looks like this (see ``attacks/*.toml``)::

    name = "ci-quick"
    description = "fast smoke suite"
    n = 500            # test samples (default: all)
    batch_size = 500
    seed = 0

    [eps]              # ε grids per norm, used by attacks that give none
    L2 = [1.0, 2.0]

    [[attack]]
    type = "pgd"       # clean | noise | fgsm | pgd | apgd | apgdt | autoattack | authors_pgd
    norm = "L2"
    steps = 20

    certify = true     # optional: certified rows from the best sound method (lipschitz and crown)
    # or, as a table:  [certify]  methods = ["lipschitz", "crown"]  sdp = false

Without a ``certify`` key, certified rows come from the global Lipschitz
margin alone; ``certify = false`` drops them.

Every attack runs through torchattacks (``Attack`` subclasses). Norm-bounded
attacks produce inputs within ε of the clean input (in their norm) and inside
[0,1]; their results at the same norm and ε are combined per sample into the
worst case. Gaussian noise with a per-pixel ``sigma`` is not norm-bounded: it
gets its own row and never enters the worst case.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchattacks
from torch import nn

from .errors import SuiteError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

NORMS = ("L2", "Linf")
ATTACK_TYPES = ("clean", "noise", "fgsm", "pgd", "apgd", "apgdt", "autoattack", "authors_pgd")
_KEYS = {
    "clean": {"label"},
    "noise": {"label", "sigma", "norm", "eps", "samples"},
    "fgsm": {"label", "norm", "eps"},
    "pgd": {"label", "norm", "eps", "steps", "step_size", "restarts"},
    "apgd": {"label", "norm", "eps", "steps", "restarts", "loss"},
    "apgdt": {"label", "norm", "eps", "steps", "restarts"},
    "autoattack": {"label", "norm", "eps", "version"},
    "authors_pgd": {"label", "norm", "eps", "steps", "step_size", "restarts"},
}
_SUITE_KEYS = {"name", "description", "n", "batch_size", "seed", "eps", "attack", "headline", "certify"}
CERTIFY_METHODS = ("lipschitz", "crown")  # as robustclip.certify.METHODS
_CERTIFY_KEYS = {"methods", "sdp"}


# --------------------------------------------------------------------------- attacks


class AuthorsPGDL2(torchattacks.attack.Attack):
    r"""The CLIP authors' PGD-L2 variant, re-implemented to reproduce their numbers.

    It differs from standard PGD-L2 (Madry et al.) in three ways, each weaker:

    * steps are ``alpha · sign(grad)`` (an L∞ step) instead of the normalised gradient;
    * after each step the perturbation is rescaled onto the *sphere*
      ``||δ||_2 = ε``, not projected into the ball;
    * a sample stops being updated once the model misclassifies ``x + δ``;
      the iterate is not clipped to [0,1] inside the loop, only at the end.

    The start is uniform noise in ``[-ε, ε]`` per pixel (clipped to the valid
    range), rescaled onto the sphere. The returned images lie in [0,1] and
    within ε in L2. Shapes: images ``(N, C, H, W)`` in [0,1], labels ``(N,)``.
    """

    def __init__(self, model: nn.Module, eps: float = 2.0, alpha: float = 0.5, steps: int = 100,
                 restarts: int = 1) -> None:
        super().__init__("AuthorsPGDL2", model)
        self.eps, self.alpha, self.steps, self.restarts = eps, alpha, steps, restarts
        self.supported_mode = ["default"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = images.clone().detach().to(self.device)
        y = labels.clone().detach().to(self.device)
        n = x.shape[0]
        view = (n, *([1] * (x.dim() - 1)))
        loss_fn = nn.CrossEntropyLoss()
        delta0 = torch.empty_like(x).uniform_(-self.eps, self.eps)
        delta0 = torch.max(torch.min(delta0, 1 - x), -x)
        delta0 = delta0 / delta0.flatten(1).norm(dim=1).clamp_min(1e-12).view(view) * self.eps
        delta = delta0.clone()
        active = torch.ones(n, dtype=torch.bool, device=x.device)
        for r in range(self.restarts):
            if r > 0:
                delta = torch.where(active.view(view), delta0, delta)
            for _ in range(self.steps):
                d = delta.clone().requires_grad_(True)
                pred = self.get_logits(x + d)
                active = pred.argmax(1) == y
                if not bool(active.any()):
                    break
                (grad,) = torch.autograd.grad(loss_fn(pred, y), d)
                step = delta + self.alpha * grad.sign()
                step = step / step.flatten(1).norm(dim=1).clamp_min(1e-12).view(view) * self.eps
                delta = torch.where(active.view(view), step, delta).detach()
        return (x + delta).clamp(0, 1).detach()


class BallNoise(torchattacks.attack.Attack):
    """Random noise of norm exactly ε (L2: Gaussian direction; L∞: random signs), clipped to [0,1].

    A norm-bounded noise baseline: if it beats PGD at the same ε, the gradient
    attack is failing (a sign of gradient masking).
    """

    def __init__(self, model: nn.Module, eps: float = 1.0, norm: str = "L2") -> None:
        super().__init__("BallNoise", model)
        self.eps, self.norm = eps, norm

    def forward(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = images.clone().detach().to(self.device)
        if self.norm == "Linf":
            d = self.eps * torch.randint_like(x, 0, 2).mul(2).sub(1)
        else:
            d = torch.randn_like(x)
            d = d / d.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1))) * self.eps
        return (x + d).clamp(0, 1).detach()


@dataclass(frozen=True)
class AttackSpec:
    """One attack of a suite at one ε: everything needed to build it."""

    type: str
    label: str
    norm: str | None
    eps: float | None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def bounded(self) -> bool:
        """True when its outputs lie within ``eps`` (in ``norm``) of the clean input."""
        return self.norm is not None and self.eps is not None

    def build(self, model: nn.Module, *, n_classes: int, seed: int) -> torchattacks.attack.Attack | None:
        """The torchattacks object (None for ``clean``)."""
        p, eps = self.params, self.eps
        t = self.type
        if t == "clean":
            return None
        if t == "noise":
            return torchattacks.GN(model, std=p["sigma"]) if "sigma" in p else BallNoise(model, eps=eps, norm=self.norm)
        if t == "fgsm":
            if self.norm == "Linf":
                return torchattacks.FGSM(model, eps=eps)
            return torchattacks.PGDL2(model, eps=eps, alpha=eps, steps=1, random_start=False)
        if t == "pgd":
            steps = p.get("steps", 50)
            alpha = p.get("step_size", 2.5 * eps / steps)
            cls = torchattacks.PGD if self.norm == "Linf" else torchattacks.PGDL2
            return cls(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
        if t == "apgd":
            return torchattacks.APGD(model, norm=self.norm, eps=eps, steps=p.get("steps", 100),
                                     n_restarts=p.get("restarts", 1), seed=seed, loss=p.get("loss", "ce"))
        if t == "apgdt":
            return torchattacks.APGDT(model, norm=self.norm, eps=eps, steps=p.get("steps", 100),
                                      n_restarts=p.get("restarts", 1), seed=seed, n_classes=n_classes)
        if t == "autoattack":
            return torchattacks.AutoAttack(model, norm=self.norm, eps=eps, version=p.get("version", "standard"),
                                           n_classes=n_classes, seed=seed)
        if t == "authors_pgd":
            return AuthorsPGDL2(model, eps=eps, alpha=p.get("step_size", 0.5), steps=p.get("steps", 100))
        raise AssertionError(t)

    @property
    def restarts(self) -> int:
        """Independent runs with different seeds (only PGD repeats itself; APGD restarts internally)."""
        return int(self.params.get("restarts", 1)) if self.type in ("pgd", "authors_pgd") else 1


@dataclass
class Suite:
    """A parsed, validated attack suite."""

    name: str
    path: str
    description: str
    attacks: list[AttackSpec]
    n: int | None = None
    batch_size: int = 1000
    seed: int = 0
    headline: tuple[str, float] | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    certify: tuple[str, ...] | None = None  # None: the default (lipschitz); (): no certified rows
    certify_sdp: bool = False

    def grid(self) -> dict[tuple[str, float], list[AttackSpec]]:
        """Bounded attacks grouped by (norm, ε)."""
        out: dict[tuple[str, float], list[AttackSpec]] = {}
        for a in self.attacks:
            if a.bounded:
                out.setdefault((a.norm, a.eps), []).append(a)  # type: ignore[arg-type]
        return dict(sorted(out.items()))


# --------------------------------------------------------------------------- parsing

BUILTIN_SUITES: dict[str, dict[str, Any]] = {
    "demo": {
        "name": "demo",
        "description": "Small suite for the demo: clean, FGSM and PGD-L2 (20 steps) at three radii.",
        "n": 500, "batch_size": 500, "seed": 0,
        "eps": {"L2": [0.5, 1.0, 2.0]},
        "headline": {"norm": "L2", "eps": 2.0},
        "attack": [
            {"type": "clean"},
            {"type": "noise", "sigma": 0.3},
            {"type": "fgsm", "norm": "L2"},
            {"type": "pgd", "norm": "L2", "steps": 20},
        ],
    },
}


def find_suite(name_or_path: str | os.PathLike[str]) -> Path | str:
    """Resolve a suite argument: an existing file, ``attacks/NAME.toml``, or a built-in name."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    if p.suffix != ".toml":
        cand = Path("attacks") / f"{p.name}.toml"
        if cand.is_file():
            return cand
        if str(name_or_path) in BUILTIN_SUITES:
            return str(name_or_path)
    raise SuiteError(f"attack suite {str(name_or_path)!r} not found",
                     f"pass a TOML file path, a name under ./attacks/, or one of: {', '.join(BUILTIN_SUITES)}")


def load_suite(name_or_path: str | os.PathLike[str] | Suite) -> Suite:
    """Parse and validate a suite file (or built-in name). Raises :class:`SuiteError`."""
    if isinstance(name_or_path, Suite):
        return name_or_path
    where = find_suite(name_or_path)
    if isinstance(where, str):
        return parse_suite(BUILTIN_SUITES[where], where=f"<builtin {where}>")
    try:
        raw = tomllib.loads(where.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise SuiteError(f"{where}: not valid TOML ({exc})", "fix the syntax") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SuiteError(f"{where}: cannot read ({exc})", "check the path") from None
    return parse_suite(raw, where=str(where))


def _num(where: str, key: str, v: Any, *, integer: bool = False, positive: bool = True, allow_zero: bool = False) -> Any:
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok_type:
        raise SuiteError(f"{where}: {key} must be {'an integer' if integer else 'a number'}, got {v!r}",
                         f"set {key} to a {'whole ' if integer else ''}number")
    if positive and (v < 0 or (v == 0 and not allow_zero)):
        raise SuiteError(f"{where}: {key} must be {'>= 0' if allow_zero else '> 0'}, got {v!r}",
                         f"set {key} to a {'non-negative' if allow_zero else 'positive'} value")
    return v


def parse_suite(raw: dict[str, Any], *, where: str = "<suite>") -> Suite:
    """Validate a suite dict (as read from TOML) into a :class:`Suite`."""
    unknown = set(raw) - _SUITE_KEYS
    if unknown:
        raise SuiteError(f"{where}: unknown key {sorted(unknown)[0]!r}", f"allowed top-level keys: {', '.join(sorted(_SUITE_KEYS))}")
    grids: dict[str, list[float]] = {}
    if not isinstance(raw.get("eps", {}), dict):
        raise SuiteError(f"{where}: eps must be a table of grids per norm, got {raw['eps']!r}",
                         "write it as [eps] with L2 = [...] and/or Linf = [...]")
    for norm, values in (raw.get("eps") or {}).items():
        if norm not in NORMS:
            raise SuiteError(f"{where}: eps.{norm} is not a norm", f"use one of {', '.join(NORMS)}")
        values = values if isinstance(values, list) else [values]
        grids[norm] = [float(_num(where, f"eps.{norm}", v)) for v in values]
        if not grids[norm]:
            raise SuiteError(f"{where}: eps.{norm} is an empty list", "give at least one ε, or drop the key")
    items = raw.get("attack")
    if not isinstance(items, list) or not items:
        raise SuiteError(f"{where}: no [[attack]] entries", "add at least one [[attack]] table with a type")
    specs: list[AttackSpec] = []
    for i, item in enumerate(items):
        at = f"{where}: attack[{i}]"
        if not isinstance(item, dict):
            raise SuiteError(f"{at} must be a table", "write it as [[attack]]")
        t = item.get("type")
        if t not in ATTACK_TYPES:
            raise SuiteError(f"{at}: unknown attack type {t!r}", f"use one of {', '.join(ATTACK_TYPES)}")
        bad = set(item) - _KEYS[t] - {"type"}
        if bad:
            raise SuiteError(f"{at} ({t}): unknown key {sorted(bad)[0]!r}", f"allowed keys: {', '.join(sorted(_KEYS[t]))}")
        params = {k: v for k, v in item.items() if k not in ("type", "label", "norm", "eps")}
        for key in ("steps", "restarts", "samples"):
            if key in params:
                _num(at, key, params[key], integer=True)
        for key in ("step_size", "sigma"):
            if key in params:
                _num(at, key, params[key])
        if "loss" in params and params["loss"] not in ("ce", "dlr"):
            raise SuiteError(f"{at}: loss {params['loss']!r} is not supported", "use ce or dlr")
        if "version" in params and params["version"] not in ("standard", "plus", "rand"):
            raise SuiteError(f"{at}: version {params['version']!r} is not supported", "use standard, plus or rand")
        label = item.get("label") or _default_label(t, params)
        if t == "clean" or (t == "noise" and "sigma" in params):
            if t == "noise" and ("norm" in item or "eps" in item):
                raise SuiteError(f"{at}: noise takes either sigma or norm+eps, not both", "drop one of them")
            specs.append(AttackSpec(t, label, None, params.get("sigma"), params))
            continue
        norm = item.get("norm")
        if norm not in NORMS:
            raise SuiteError(f"{at} ({t}): norm {norm!r} is missing or unknown", f"set norm to one of {', '.join(NORMS)}")
        if t == "authors_pgd" and norm != "L2":
            raise SuiteError(f"{at}: authors_pgd is an L2 attack", 'set norm = "L2"')
        eps_list = item.get("eps", grids.get(norm))
        if eps_list is None:
            raise SuiteError(f"{at} ({t}): no ε given and the suite has no eps.{norm} grid",
                             f"set eps on the attack or add [eps] {norm} = [...]")
        eps_list = eps_list if isinstance(eps_list, list) else [eps_list]
        if not eps_list:
            raise SuiteError(f"{at} ({t}): eps is an empty list", "give at least one ε")
        for e in eps_list:
            specs.append(AttackSpec(t, label, norm, float(_num(at, "eps", e)), params))
    n = raw.get("n")
    if n is not None:
        _num(where, "n", n, integer=True)
    bs = _num(where, "batch_size", raw.get("batch_size", 1000), integer=True)
    seed = _num(where, "seed", raw.get("seed", 0), integer=True, allow_zero=True)
    headline = None
    if "headline" in raw:
        h = raw["headline"]
        if not isinstance(h, dict) or h.get("norm") not in NORMS or "eps" not in h:
            raise SuiteError(f"{where}: headline must be a table with norm and eps", 'e.g. headline = {norm = "L2", eps = 2.0}')
        headline = (h["norm"], float(_num(where, "headline.eps", h["eps"])))
    else:
        bounded = [a for a in specs if a.bounded]
        if bounded:
            headline = (bounded[-1].norm, max(a.eps for a in bounded if a.norm == bounded[-1].norm))  # type: ignore
    cert, sdp = _parse_certify(raw.get("certify"), where) if "certify" in raw else (None, False)
    return Suite(name=str(raw.get("name") or Path(where).stem), path=where, description=str(raw.get("description", "")),
                 attacks=specs, n=n, batch_size=bs, seed=seed, headline=headline, raw=raw, certify=cert,
                 certify_sdp=sdp)


def _parse_certify(v: Any, where: str) -> tuple[tuple[str, ...], bool]:
    """``certify = true | false`` or ``[certify] methods = [...], sdp = bool`` into ``(methods, sdp)``."""
    fix = f'write certify = true, or [certify] with methods = [...] from {", ".join(CERTIFY_METHODS)}'
    if isinstance(v, bool):
        return (CERTIFY_METHODS if v else ()), False
    if not isinstance(v, dict):
        raise SuiteError(f"{where}: certify must be true, false or a table, got {v!r}", fix)
    bad = set(v) - _CERTIFY_KEYS
    if bad:
        raise SuiteError(f"{where}: certify has unknown key {sorted(bad)[0]!r}",
                         f"allowed keys: {', '.join(sorted(_CERTIFY_KEYS))}")
    methods = v.get("methods", list(CERTIFY_METHODS))
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise SuiteError(f"{where}: certify.methods must be a list of names, got {methods!r}", fix)
    unknown = [m for m in methods if m not in CERTIFY_METHODS]
    if unknown:
        raise SuiteError(f"{where}: unknown certification method {unknown[0]!r}", fix)
    if len(set(methods)) != len(methods):
        raise SuiteError(f"{where}: certify.methods lists a method twice", "name each method once")
    sdp = v.get("sdp", False)
    if not isinstance(sdp, bool):
        raise SuiteError(f"{where}: certify.sdp must be true or false, got {sdp!r}", "e.g. sdp = true")
    if sdp and "lipschitz" not in methods:
        raise SuiteError(f"{where}: certify.sdp needs the lipschitz method", 'add "lipschitz" to certify.methods')
    return tuple(methods), sdp


def _default_label(t: str, params: dict[str, Any]) -> str:
    if t == "apgd":
        return f"apgd-{params.get('loss', 'ce')}"
    return t
