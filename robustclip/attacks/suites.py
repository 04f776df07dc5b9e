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
    # or, as a table:  [certify]  methods = ["lipschitz", "crown"]  sdp = false  skip_certified = ["apgdt"]

Without a ``certify`` key, certified rows come from the global Lipschitz
margin alone; ``certify = false`` drops them.

Every attack runs through torchattacks (``Attack`` subclasses). Norm-bounded
attacks produce inputs within ε of the clean input (in their norm) and inside
[0,1]; their results at the same norm and ε are combined per sample into the
worst case. Gaussian noise with a per-pixel ``sigma`` is not norm-bounded: it
gets its own row and never enters the worst case.

This module parses and validates suites (:class:`Suite`, :func:`load_suite`, :func:`parse_suite`); the attack kinds
live in :mod:`robustclip.attacks.kinds`, our own attacks in :mod:`robustclip.attacks.custom`, and finding a suite
by name in :mod:`robustclip.attacks.library`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import files as _io
from ..core import validate
from ..errors import SuiteError
from .kinds import ATTACKS, AttackSpec, attack_cost
from .library import BUILTIN_SUITES, find_suite

NORMS = ("L2", "Linf")
_SUITE_KEYS = {"name", "description", "n", "batch_size", "seed", "eps", "attack", "headline", "certify", "cascade"}
CERTIFY_METHODS = ("lipschitz", "crown")  # as robustclip.bounds.certify.METHODS
_CERTIFY_KEYS = {"methods", "sdp", "skip_certified"}

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
    skip_certified: tuple[str, ...] = ()
    """Labels of attacks that skip samples a certificate proves robust at their ε (``[certify] skip_certified``):
    the certificates are computed before the first of them, and such a sample counts as robust in their rows."""

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
    _check_header(raw, where)
    grids = _eps_grids(raw, where)
    items = raw.get("attack")
    if not isinstance(items, list) or not items:
        raise SuiteError(f"{where}: no [[attack]] entries", "add at least one [[attack]] table with a type")
    specs = [spec for i, item in enumerate(items) for spec in _attack_entry(item, f"{where}: attack[{i}]", grids)]
    _check_labels(specs, where)
    n = raw.get("n")
    if n is not None:
        _num(where, "n", n, integer=True, hi=MAX_SAMPLES)
    bs = _num(where, "batch_size", raw.get("batch_size", 1000), integer=True, hi=MAX_BATCH)
    seed = validate.seed(raw.get("seed", 0), f"{where}: seed", error=SuiteError)
    headline = _headline(raw, where, specs)
    cert, sdp, skip = _parse_certify(raw.get("certify"), where, specs) if "certify" in raw else (None, False, ())
    cascade = raw.get("cascade", False)
    if not isinstance(cascade, bool):
        raise SuiteError(f"{where}: cascade must be true or false, got {cascade!r:.80}", "e.g. cascade = true")
    suite = Suite(name=str(raw.get("name") or Path(where).stem), path=where,
                  description=str(raw.get("description", "")), attacks=specs, n=n, batch_size=bs, seed=seed,
                  headline=headline, raw=raw, certify=cert, certify_sdp=sdp, cascade=cascade,
                  skip_certified=skip)
    suite.check_budget()
    return suite


RESERVED_LABELS = {"worst_case": None, "certified": None, "clean_full": None, "val_clean": None,
                   "val_worst_case": None, "fit": None, "clean": "clean", "noise": "noise"}
"""Row names that an evaluation writes itself (the per-sample worst case, certificates, ...), and the one attack
type (if any) whose rows carry that name: an attack labelled ``worst_case`` would be a second worst-case row."""


def _check_labels(specs: list[AttackSpec], where: str) -> None:
    """Labels are printable, never a summary row's name (:data:`RESERVED_LABELS`), and each (label, norm, ε) once."""
    seen: set[tuple[str, str | None, float | None]] = set()
    for a in specs:
        if not a.label.isprintable():
            raise SuiteError(f"{where}: attack label {a.label!r:.80} holds a control character (a newline?)",
                             "use a label of printable characters")
        if a.label in RESERVED_LABELS and RESERVED_LABELS[a.label] != a.type:
            raise SuiteError(f"{where}: attack label {a.label!r} is the name of a row the evaluation writes itself",
                             f'pick another label, e.g. label = "{a.type}-{a.label}"')
        key = (a.label, a.norm, a.eps)
        if key in seen:
            raise SuiteError(f"{where}: attack label {a.label!r} is used twice at {a.norm} ε={a.eps}",
                             "give each attack its own label")
        seen.add(key)


def _check_header(raw: Any, where: str) -> None:
    """The suite is a table with known top-level keys, and its name and description are strings."""
    if not isinstance(raw, dict):
        raise SuiteError(f"{where}: a suite must be a table, got {type(raw).__name__}", "see attacks/ci-quick.toml")
    unknown = sorted(str(k) for k in set(raw) - _SUITE_KEYS)
    if unknown:
        raise SuiteError(f"{where}: unknown key {unknown[0]!r}",
                         f"allowed top-level keys: {', '.join(sorted(_SUITE_KEYS))}")
    for key in ("name", "description"):
        if key in raw and not isinstance(raw[key], str):
            raise SuiteError(f"{where}: {key} must be a string, got {raw[key]!r:.80}", f'e.g. {key} = "mine"')


def _eps_grids(raw: dict[str, Any], where: str) -> dict[str, list[float]]:
    """The suite's ``[eps]`` table: ε grids per norm, used by attacks that give no ε of their own."""
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
    return grids


def _attack_entry(item: Any, at: str, grids: dict[str, list[float]]) -> list[AttackSpec]:
    """One ``[[attack]]`` table into its specs, one per ε (one spec for ``clean`` and sigma noise)."""
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
    _check_params(at, params)
    label = _text(at, "label", item["label"]) if "label" in item else (kind.label(params) if kind.label else t)
    if t == "clean" or (t == "noise" and "sigma" in params):
        if t == "noise" and ("norm" in item or "eps" in item):
            raise SuiteError(f"{at}: noise takes either sigma or norm+eps, not both", "drop one of them")
        return [AttackSpec(t, label, None, params.get("sigma"), params)]
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
    return [AttackSpec(t, label, norm, _eps(at, "eps", norm, e), params) for e in eps_list]


def _check_params(at: str, params: dict[str, Any]) -> None:
    """An attack's settings in range: counts whole and bounded, step sizes finite, choices among the known ones."""
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


def _headline(raw: dict[str, Any], where: str, specs: list[AttackSpec]) -> tuple[str, float] | None:
    """The suite's headline (norm, ε): its ``headline`` table, else the largest ε of the last bounded attack's norm."""
    if "headline" in raw:
        h = raw["headline"]
        if not isinstance(h, dict) or not isinstance(h.get("norm"), str) or h["norm"] not in NORMS or "eps" not in h:
            raise SuiteError(f"{where}: headline must be a table with norm and eps",
                             'e.g. headline = {norm = "L2", eps = 2.0}')
        return (h["norm"], _eps(where, "headline.eps", h["norm"], h["eps"]))
    bounded = [a for a in specs if a.bounded]
    if bounded:
        return (bounded[-1].norm, max(a.eps for a in bounded if a.norm == bounded[-1].norm))  # type: ignore
    return None


def _parse_certify(v: Any, where: str, specs: list[AttackSpec]) -> tuple[tuple[str, ...], bool, tuple[str, ...]]:
    """``certify = true | false`` or ``[certify] methods = [...], sdp = bool, skip_certified = [...]`` into
    ``(methods, sdp, skip_certified)``; ``specs``: the suite's attacks, which ``skip_certified`` names by label."""
    fix = f'write certify = true, or [certify] with methods = [...] from {", ".join(CERTIFY_METHODS)}'
    if isinstance(v, bool):
        return (CERTIFY_METHODS if v else ()), False, ()
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
    return tuple(methods), sdp, _skip_certified(v.get("skip_certified", []), where, specs, methods)


def _skip_certified(v: Any, where: str, specs: list[AttackSpec], methods: list[str]) -> tuple[str, ...]:
    """``certify.skip_certified``: labels of the suite's bounded attacks, each once, with a method to certify."""
    bounded = list(dict.fromkeys(a.label for a in specs if a.bounded))
    fix = f"name some of this suite's norm-bounded attacks: {', '.join(bounded) or 'none'}"
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise SuiteError(f"{where}: certify.skip_certified must be a list of attack labels, got {v!r:.80}", fix)
    unknown = [x for x in v if x not in bounded]
    if unknown:
        raise SuiteError(f"{where}: certify.skip_certified names {unknown[0]!r}, not a bounded attack of the suite",
                         fix)
    if len(set(v)) != len(v):
        raise SuiteError(f"{where}: certify.skip_certified lists an attack twice", "name each attack once")
    if v and not methods:
        raise SuiteError(f"{where}: certify.skip_certified needs a certification method",
                         'add "lipschitz" or "crown" to certify.methods')
    return tuple(v)
