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
    type = "pgd"       # clean | noise | fgsm | pgd | apgd | apgdt | fabt | autoattack | square | authors_pgd
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

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchattacks
from torch import nn

from ..core import files as _io
from ..core import validate
from ..errors import SuiteError

NORMS = ("L2", "Linf")
_SUITE_KEYS = {"name", "description", "n", "batch_size", "seed", "eps", "attack", "headline", "certify", "cascade"}
CERTIFY_METHODS = ("lipschitz", "crown")  # as robustclip.bounds.certify.METHODS
_CERTIFY_KEYS = {"methods", "sdp"}

MAX_EPS = {"L2": 28.0, "Linf": 1.0}
"""Largest ε per norm: beyond it the ball holds all of [0,1]^784 (L2 diameter 28) or [0,1] (L∞)."""
MAX_STEPS = 10_000
"""Most steps (or noise samples) one attack may take per sample."""
MAX_RESTARTS = 100
"""Most restarts one attack may make."""
MAX_QUERIES = 1_000_000
"""Most queries a black-box attack (Square) may make per sample."""
MAX_SAMPLES = 1_000_000
"""Most test samples (n) a suite may ask for."""
MAX_BATCH = 100_000
"""Largest batch size."""
MAX_BUDGET = 1_000_000_000
"""Most sample-steps (Σ steps × restarts × samples over a suite's attacks) one evaluation may cost."""
MAX_SUITE_BYTES = 1024 * 1024
"""Largest suite file read."""
DEFAULT_N = 10_000
"""Samples assumed when a suite gives no n (the size of the MNIST test split)."""


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
        return ATTACKS[self.type].build(self, model, n_classes, seed)

    @property
    def restarts(self) -> int:
        """Independent runs with different seeds (for kinds that do not restart internally; else 1)."""
        return int(self.params.get("restarts", 1)) if ATTACKS[self.type].outer_restarts else 1


# --------------------------------------------------------------------------- the registry of attack kinds

Builder = Callable[[AttackSpec, nn.Module, int, int], "torchattacks.attack.Attack | None"]


@dataclass(frozen=True)
class AttackKind:
    """One attack type of the suite language: adding an attack is one :data:`ATTACKS` entry.

    ``keys``: the settings a suite may give it (besides ``type``). ``build(spec, model, n_classes, seed)``: the
    torchattacks object. ``label(params)``: its default row label. ``outer_restarts``: the evaluation repeats it
    ``restarts`` times with new seeds (kinds that restart internally, like APGD, say False). ``role``: ``weak``
    (a baseline that must not beat the iterative attacks, else gradients are masked), ``iterative`` (a strong
    gradient attack), ``blackbox`` (a query attack without gradients: breaking what the gradient attacks could not
    is a sign of gradient masking), or ``other``. ``cost(params)``: model evaluations per sample it spends, restarts
    included (for the suite's budget cap).
    """

    keys: frozenset[str]
    build: Builder
    label: Callable[[dict[str, Any]], str] | None = None
    outer_restarts: bool = False
    role: str = "other"
    cost: Callable[[dict[str, Any]], int] = lambda p: int(p.get("steps", 1)) * int(p.get("restarts", 1))


def _pgd(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    eps = float(s.eps or 0.0)
    steps = s.params.get("steps", 50)
    cls = torchattacks.PGD if s.norm == "Linf" else torchattacks.PGDL2
    return cls(m, eps=eps, alpha=s.params.get("step_size", 2.5 * eps / steps), steps=steps, random_start=True)


def _fgsm(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    if s.norm == "Linf":
        return torchattacks.FGSM(m, eps=s.eps)
    return torchattacks.PGDL2(m, eps=s.eps, alpha=s.eps, steps=1, random_start=False)


def _noise(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    if "sigma" in s.params:
        return torchattacks.GN(m, std=s.params["sigma"])
    return BallNoise(m, eps=float(s.eps or 0.0), norm=s.norm or "L2")


def _apgd(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    return torchattacks.APGD(m, norm=s.norm, eps=s.eps, steps=s.params.get("steps", 100),
                             n_restarts=s.params.get("restarts", 1), seed=seed, loss=s.params.get("loss", "ce"))


TARGETS = 9
"""Target classes of the targeted attacks (APGD-T, FAB-T), as AutoAttack's standard version: the 9 classes with
the highest logits after the true one (fewer when the model has fewer than 10 classes)."""


def _target_arg(k: int) -> int:
    """torchattacks' ``n_classes`` argument of its targeted attacks: they attack ``n_classes - 1`` targets."""
    return min(TARGETS, k - 1) + 1


def _apgdt(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    return torchattacks.APGDT(m, norm=s.norm, eps=s.eps, steps=s.params.get("steps", 100),
                              n_restarts=s.params.get("restarts", 1), seed=seed, n_classes=_target_arg(k))


def _fabt(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    # multi_targeted: for each of the top-9 wrong classes in turn, FAB searches the closest boundary to it
    return torchattacks.FAB(m, norm=s.norm, eps=s.eps, steps=s.params.get("steps", 100),
                            n_restarts=s.params.get("restarts", 1), seed=seed, multi_targeted=True,
                            n_classes=_target_arg(k))


def _autoattack(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    return torchattacks.AutoAttack(m, norm=s.norm, eps=s.eps, version=s.params.get("version", "standard"),
                                   n_classes=_target_arg(k), seed=seed)


def _square(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    return torchattacks.Square(m, norm=s.norm, eps=s.eps, n_queries=s.params.get("n_queries", 5000),
                               n_restarts=s.params.get("restarts", 1), p_init=s.params.get("p_init", 0.8),
                               resc_schedule=s.params.get("rescale_schedule", True), seed=seed)


def _authors_pgd(s: AttackSpec, m: nn.Module, k: int, seed: int) -> torchattacks.attack.Attack:
    return AuthorsPGDL2(m, eps=float(s.eps or 0.0), alpha=s.params.get("step_size", 0.5),
                        steps=s.params.get("steps", 100))


def _keys(*names: str) -> frozenset[str]:
    return frozenset({"label", *names})


def _steps(default: int, targets: int = 1) -> Callable[[dict[str, Any]], int]:
    return lambda p: int(p.get("steps", default)) * int(p.get("restarts", 1)) * targets


ATTACKS: dict[str, AttackKind] = {
    "clean": AttackKind(_keys(), lambda s, m, k, seed: None, cost=lambda p: 0),
    "noise": AttackKind(_keys("sigma", "norm", "eps", "samples"), _noise, role="weak",
                        cost=lambda p: int(p.get("samples", 1))),
    "fgsm": AttackKind(_keys("norm", "eps"), _fgsm, role="weak", cost=lambda p: 1),
    "pgd": AttackKind(_keys("norm", "eps", "steps", "step_size", "restarts"), _pgd, outer_restarts=True,
                      role="iterative", cost=_steps(50)),
    "apgd": AttackKind(_keys("norm", "eps", "steps", "restarts", "loss"), _apgd,
                       label=lambda p: f"apgd-{p.get('loss', 'ce')}", role="iterative", cost=_steps(100)),
    "apgdt": AttackKind(_keys("norm", "eps", "steps", "restarts"), _apgdt, role="iterative",
                        cost=_steps(100, targets=TARGETS)),
    # FAB-T: per target, one forward and one backward pass per step (plus a few for the final search)
    "fabt": AttackKind(_keys("norm", "eps", "steps", "restarts"), _fabt, role="iterative",
                       cost=_steps(100, targets=TARGETS)),
    # APGD-CE + APGD-T (9 targets) + FAB-T + Square (5,000 queries), rounded up
    "autoattack": AttackKind(_keys("norm", "eps", "version"), _autoattack, role="iterative",
                             cost=lambda p: 10_000),
    "square": AttackKind(_keys("norm", "eps", "n_queries", "restarts", "p_init", "rescale_schedule"), _square,
                         role="blackbox",
                         cost=lambda p: int(p.get("n_queries", 5000)) * int(p.get("restarts", 1))),
    "authors_pgd": AttackKind(_keys("norm", "eps", "steps", "step_size", "restarts"), _authors_pgd,
                              outer_restarts=True, role="iterative", cost=_steps(100)),
}
ATTACK_TYPES = tuple(ATTACKS)


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
    cascade: bool = False  # AutoAttack's order: a later strong attack runs only on the samples still robust

    def budget(self, n: int | None = None) -> int:
        """Sample-steps the suite costs on ``n`` samples (default: its n, else :data:`DEFAULT_N`)."""
        n = n or self.n or DEFAULT_N
        return sum(attack_cost(a) for a in self.attacks) * n

    def check_budget(self, n: int | None = None) -> None:
        """Raise :class:`SuiteError` when the suite on ``n`` samples would cost more than :data:`MAX_BUDGET`."""
        cost = self.budget(n)
        if cost > MAX_BUDGET:
            raise SuiteError(f"{self.path}: the suite costs {cost:,} sample-steps (Σ steps × restarts × samples) on "
                             f"{n or self.n or DEFAULT_N:,} samples, more than the {MAX_BUDGET:,} allowed",
                             "lower n (or --n), steps or restarts, or split the suite")

    def grid(self) -> dict[tuple[str, float], list[AttackSpec]]:
        """Bounded attacks grouped by (norm, ε)."""
        out: dict[tuple[str, float], list[AttackSpec]] = {}
        for a in self.attacks:
            if a.bounded:
                out.setdefault((a.norm, a.eps), []).append(a)  # type: ignore[arg-type]
        return dict(sorted(out.items()))


def suite_digest(raw: dict[str, Any]) -> str:
    """A stable hash of a suite's settings (its TOML as a dict)."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True, default=str).encode()).hexdigest()[:16]


def attack_cost(a: AttackSpec) -> int:
    """Gradient steps (or forward passes, or queries) one attack spends per sample, restarts included."""
    return int(ATTACKS[a.type].cost(a.params))


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


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def shipped_suites_dir() -> Path | None:
    """The folder of the suites shipped with robustclip (``attacks/*.toml`` of the repo).

    Installed from a wheel they live in the package, ``robustclip/suites/``; run from a source checkout (an
    editable install, or ``PYTHONPATH`` pointing at it) they are the checkout's own ``attacks/``.
    """
    pkg = Path(__file__).resolve().parents[__name__.count(".") - 1]  # the package root, however deep this module is
    if (pkg / "suites").is_dir():
        return pkg / "suites"
    checkout = pkg.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "attacks").is_dir():
        return checkout / "attacks"
    return None


def suite_names() -> list[str]:
    """Names that ``--suite NAME`` resolves from any folder: the shipped suites, then the built-ins."""
    where = shipped_suites_dir()
    shipped = sorted(p.stem for p in where.glob("*.toml")) if where else []
    return shipped + [b for b in BUILTIN_SUITES if b not in shipped]


def find_suite(name_or_path: str | os.PathLike[str]) -> Path | str:
    """Resolve a suite argument, first match wins: an existing file path; ``./attacks/NAME.toml`` (relative to
    the current folder); the suite NAME shipped with robustclip; a built-in name (returned as a string)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    name = str(name_or_path)
    if p.suffix != ".toml" and _NAME_RE.match(name):
        for folder in (Path("attacks"), shipped_suites_dir()):
            cand = folder / f"{name}.toml" if folder is not None else None
            if cand is not None and cand.is_file():
                return cand
        if name in BUILTIN_SUITES:
            return name
    raise SuiteError(f"attack suite {name!r} not found",
                     f"pass a TOML file path, a name under ./attacks/, or one of: {', '.join(suite_names())}")


def load_suite(name_or_path: str | os.PathLike[str] | Suite) -> Suite:
    """Parse and validate a suite file (or built-in name). Raises :class:`SuiteError`."""
    if isinstance(name_or_path, Suite):
        return name_or_path
    where = find_suite(name_or_path)
    if isinstance(where, str):
        return parse_suite(BUILTIN_SUITES[where], where=f"<builtin {where}>")
    blob = validate.read_bytes(where, "attack suite", max_bytes=MAX_SUITE_BYTES, error=SuiteError)
    try:
        raw = _io.loads_toml(blob.decode("utf-8"))
    except _io.TOMLDecodeError as exc:
        raise SuiteError(f"{where}: not valid TOML ({exc})", "fix the syntax") from None
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{where}: not UTF-8 text ({exc.reason})", "save the suite as UTF-8") from None
    except RecursionError:
        raise SuiteError(f"{where}: nested too deeply", "a suite needs only a few levels of tables") from None
    return parse_suite(raw, where=str(where))


def _num(where: str, key: str, v: Any, *, integer: bool = False, hi: float | None = None,
         allow_zero: bool = False) -> Any:
    """A suite number: finite, > 0 (>= 0 with ``allow_zero``), at most ``hi``; else :class:`SuiteError`."""
    return validate.number(v, f"{where}: {key}", integer=integer, lo=0, lo_open=not allow_zero, hi=hi,
                           error=SuiteError)


def _eps(where: str, key: str, norm: str, v: Any) -> float:
    return float(_num(where, key, v, hi=MAX_EPS[norm]))


def _text(where: str, key: str, v: Any, *, limit: int = 200) -> str:
    if not isinstance(v, str) or not v.strip() or len(v) > limit:
        raise SuiteError(f"{where}: {key} must be a non-empty string of at most {limit} characters, got {v!r:.80}",
                         f'e.g. {key} = "pgd-long"')
    return v


def parse_suite(raw: dict[str, Any], *, where: str = "<suite>") -> Suite:
    """Validate a suite dict (as read from TOML) into a :class:`Suite`.

    Every number must be finite and in range (ε within the input domain, steps ≤ :data:`MAX_STEPS`, restarts ≤
    :data:`MAX_RESTARTS`), every name a string, and the whole suite must cost at most :data:`MAX_BUDGET`
    sample-steps; anything else is a :class:`SuiteError`.
    """
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a suite must be a table, got {type(raw).__name__}", "see attacks/ci-quick.toml")
    unknown = sorted(str(k) for k in set(raw) - _SUITE_KEYS)
    if unknown:
        raise SuiteError(f"{where}: unknown key {unknown[0]!r}",
                         f"allowed top-level keys: {', '.join(sorted(_SUITE_KEYS))}")
    for key in ("name", "description"):
        if key in raw and not isinstance(raw[key], str):
            raise SuiteError(f"{where}: {key} must be a string, got {raw[key]!r:.80}", f'e.g. {key} = "mine"')
    grids: dict[str, list[float]] = {}
    if not isinstance(raw.get("eps", {}), dict):
        raise SuiteError(f"{where}: eps must be a table of grids per norm, got {raw['eps']!r:.80}",
                         "write it as [eps] with L2 = [...] and/or Linf = [...]")
    for norm, values in (raw.get("eps") or {}).items():
        if norm not in NORMS:
            raise SuiteError(f"{where}: eps key {norm!r} is not a norm", f"use one of {', '.join(NORMS)}")
        values = values if isinstance(values, list) else [values]
        grids[norm] = [_eps(where, f"eps.{norm}", norm, v) for v in values]
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
        if not isinstance(t, str) or t not in ATTACKS:
            raise SuiteError(f"{at}: unknown attack type {t!r:.80}", f"use one of {', '.join(ATTACKS)}")
        kind = ATTACKS[t]
        bad = sorted(str(k) for k in set(item) - kind.keys - {"type"})
        if bad:
            raise SuiteError(f"{at} ({t}): unknown key {bad[0]!r}", f"allowed keys: {', '.join(sorted(kind.keys))}")
        params = {k: v for k, v in item.items() if k not in ("type", "label", "norm", "eps")}
        for key, hi in (("steps", MAX_STEPS), ("restarts", MAX_RESTARTS), ("samples", MAX_STEPS),
                        ("n_queries", MAX_QUERIES)):
            if key in params:
                _num(at, key, params[key], integer=True, hi=hi)
        for key in ("step_size", "sigma", "p_init"):
            if key in params:
                _num(at, key, params[key], hi=MAX_EPS["L2"])
        if "rescale_schedule" in params and not isinstance(params["rescale_schedule"], bool):
            raise SuiteError(f"{at}: rescale_schedule must be true or false, got {params['rescale_schedule']!r:.80}",
                             "AutoAttack's standard protocol uses rescale_schedule = false")
        if "loss" in params and params["loss"] not in ("ce", "dlr"):
            raise SuiteError(f"{at}: loss {params['loss']!r:.80} is not supported", "use ce or dlr")
        if "version" in params and params["version"] not in ("standard", "plus", "rand"):
            raise SuiteError(f"{at}: version {params['version']!r:.80} is not supported", "use standard, plus or rand")
        label = _text(at, "label", item["label"]) if "label" in item else (kind.label(params) if kind.label else t)
        if t == "clean" or (t == "noise" and "sigma" in params):
            if t == "noise" and ("norm" in item or "eps" in item):
                raise SuiteError(f"{at}: noise takes either sigma or norm+eps, not both", "drop one of them")
            specs.append(AttackSpec(t, label, None, params.get("sigma"), params))
            continue
        norm = item.get("norm")
        if not isinstance(norm, str) or norm not in NORMS:
            raise SuiteError(f"{at} ({t}): norm {norm!r:.80} is missing or unknown",
                             f"set norm to one of {', '.join(NORMS)}")
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
            specs.append(AttackSpec(t, label, norm, _eps(at, "eps", norm, e), params))
    n = raw.get("n")
    if n is not None:
        _num(where, "n", n, integer=True, hi=MAX_SAMPLES)
    bs = _num(where, "batch_size", raw.get("batch_size", 1000), integer=True, hi=MAX_BATCH)
    seed = validate.seed(raw.get("seed", 0), f"{where}: seed", error=SuiteError)
    headline = None
    if "headline" in raw:
        h = raw["headline"]
        if not isinstance(h, dict) or not isinstance(h.get("norm"), str) or h["norm"] not in NORMS or "eps" not in h:
            raise SuiteError(f"{where}: headline must be a table with norm and eps",
                             'e.g. headline = {norm = "L2", eps = 2.0}')
        headline = (h["norm"], _eps(where, "headline.eps", h["norm"], h["eps"]))
    else:
        bounded = [a for a in specs if a.bounded]
        if bounded:
            headline = (bounded[-1].norm, max(a.eps for a in bounded if a.norm == bounded[-1].norm))  # type: ignore
    cert, sdp = _parse_certify(raw.get("certify"), where) if "certify" in raw else (None, False)
    cascade = raw.get("cascade", False)
    if not isinstance(cascade, bool):
        raise SuiteError(f"{where}: cascade must be true or false, got {cascade!r:.80}", "e.g. cascade = true")
    suite = Suite(name=str(raw.get("name") or Path(where).stem), path=where,
                  description=str(raw.get("description", "")), attacks=specs, n=n, batch_size=bs, seed=seed,
                  headline=headline, raw=raw, certify=cert, certify_sdp=sdp, cascade=cascade)
    suite.check_budget()
    return suite


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
