"""Sweep plans: read a sweep file (TOML) and expand it into checked runs (experiments × methods × λ/τ × seeds).

A sweep file (TOML) lists experiments; top-level keys are defaults that each
``[[experiment]]`` may override. Without ``[[experiment]]`` the top level is
the one experiment::

    name = "mnist-lambda"
    dataset = "mnist"          # mnist | fashion-mnist | cifar10 | cifar100 | regression
    model = "fc"               # fc | cnn | mlp1d, a spec table, or "MODULE:CALLABLE" (your own code)
    # data = "train.npz"       # your own data instead of dataset: .npz/safetensors or an image folder ...
    # test_data = "test.npz"   # ... and the held-out test set each run is evaluated on (both needed)
    epochs = 10
    seeds = [0, 1, 2]
    n_train = 10000            # optional: a data subset
    suite = "ci-quick"         # attack suite for evaluation (image data only)
    n_test = 1000              # optional: test samples (default: the suite's n)
    lipschitz = "fast"         # optional: the evaluation's Lipschitz mode, full (default), fast or off
    n_val = 1000               # optional: validation images scored for model selection (default: as many as
                               # test images, at most 1000; 0: none)
    train = { optimizer = "sgd", lr = 0.1 }   # any other TrainConfig field

    [[method]]
    reg = "none"

    [[method]]
    reg = "weight"
    lam = [1e-4, 1e-3]

    [[method]]
    reg = "clip"
    lam = [0.05, 0.1]          # fixed λ values ...
    tau = [0.95, 0.97]         # ... and/or discrepancy-principle targets (λ starts at lam0)
    lam0 = 0.05
    lam_step = 0.01
    clip = { pairs = 16 }
"""

from __future__ import annotations

import collections
import math
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..core import files as _io
from ..errors import RobustclipError, SuiteError
from ..training.regularizers.registry import REGISTRY, SETTINGS
from .run import Run

_EXP_KEYS = {"name", "dataset", "model", "epochs", "seeds", "n_train", "suite", "n_test", "n_val", "train", "method",
             "experiment", "description", "output_sigmoid", "label", "data", "test_data", "lipschitz"}
_METHOD_KEYS = {"reg", "lam", "tau", "lam0", "lam_step", "lam_every", "warmup", "label", "train", "output_sigmoid",
                "require_target"} | set(SETTINGS)  # and one key per settings table (clip, adversarial, ...)


def _fmt_num(v: float) -> str:
    return f"{v:g}"


MAX_SWEEP_BYTES = 1024 * 1024
"""Largest sweep file read: a plan is a few kilobytes of TOML."""


def load_sweep(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a sweep TOML file into a dict (raises :class:`SuiteError`)."""
    from ..core import validate

    p = Path(path)
    if not p.exists():
        raise SuiteError(f"sweep file {p} does not exist", "pass the path of a sweep TOML file")
    blob = validate.read_bytes(p, "sweep file", max_bytes=MAX_SWEEP_BYTES, error=SuiteError)
    try:
        raw = _io.loads_toml(blob.decode("utf-8"))
    except UnicodeDecodeError:
        raise SuiteError(f"{p}: not UTF-8 text", "save the sweep file as UTF-8 TOML") from None
    except _io.TOMLDecodeError as exc:
        raise SuiteError(f"{p}: not valid TOML ({exc})", "fix the syntax") from None
    raw.setdefault("name", p.stem)
    return raw


def plan(raw: dict[str, Any], *, where: str = "<sweep>") -> list[Run]:
    """Expand a sweep dict into runs: experiments × methods × (λ or τ) × seeds."""
    unknown = set(raw) - _EXP_KEYS
    if unknown:
        raise SuiteError(f"{where}: unknown key {sorted(unknown)[0]!r}",
                         f"allowed keys: {', '.join(sorted(_EXP_KEYS))}")
    exps = raw.get("experiment") or [{}]
    defaults = {k: v for k, v in raw.items() if k != "experiment"}
    runs: list[Run] = []
    for ei, exp in enumerate(exps):
        at = f"{where}: experiment[{ei}]"
        bad = set(exp) - _EXP_KEYS
        if bad:
            raise SuiteError(f"{at}: unknown key {sorted(bad)[0]!r}", f"allowed keys: {', '.join(sorted(_EXP_KEYS))}")
        e = {**defaults, **exp}
        x = _experiment(e, at)
        for mi, m in enumerate(x.methods):
            runs += _method_runs(e, x, m, f"{at}.method[{mi}]")
    counts = collections.Counter(r.id for r in runs)  # linear: a 100,000-run plan is checked in a blink
    dup = {i for i, c in counts.items() if c > 1}
    if dup:
        raise SuiteError(f"{where}: run {sorted(dup)[0]!r} appears twice", "give methods distinct labels")
    return runs


CUSTOM = "custom"
"""The dataset of an experiment on the user's own ``data`` (as :data:`robustclip.training.config.CUSTOM`)."""


def _dataset(e: dict[str, Any], at: str) -> str:
    """The experiment's dataset: a built-in name, or ``custom`` when it names ``data`` and ``test_data``."""
    from ..data import datasets as data

    if "data" in e or "test_data" in e:
        if "dataset" in e:
            raise SuiteError(f"{at}: data and dataset {e['dataset']!r} name two training sets", "keep one of them")
        for key in ("data", "test_data"):
            if not isinstance(e.get(key), str) or not e[key]:
                raise SuiteError(f"{at}: {key} must be a path, got {e.get(key)!r:.80}",
                                 'give both, e.g. data = "train.npz" and test_data = "test.npz"')
        return CUSTOM
    dataset = e.get("dataset")
    if dataset not in data.REGISTRY:
        raise SuiteError(f"{at}: dataset {dataset!r} is missing or unknown", f"use {', '.join(data.REGISTRY)}")
    return str(dataset)


@dataclass
class _Experiment:
    """One checked ``[[experiment]]`` of a sweep: what its methods share."""

    dataset: str
    model: dict[str, Any] | str
    seeds: list[int]
    suite: dict[str, Any] | None
    n_val: int | None
    methods: list[dict[str, Any]]


def _experiment(e: dict[str, Any], at: str) -> _Experiment:
    """Check one experiment (its keys merged over the sweep's defaults) and resolve its model and suite."""
    from ..attacks.suites import MAX_SAMPLES, load_suite
    from ..core import validate
    from ..data import datasets as data
    from ..models import specs as models

    dataset = _dataset(e, at)
    _check_label(e.get("label"), f"{at}: label")
    model = e.get("model")
    if isinstance(model, str) and ":" in model:  # the user's own code: imported only when a run starts
        from ..checkpoints.format import check_factory_ref

        try:
            check_factory_ref(model, what="model")
        except RobustclipError as exc:
            raise SuiteError(f"{at}: {exc.problem}", exc.fix) from None
    elif isinstance(model, str) or model is None:
        if dataset == CUSTOM:
            raise SuiteError(f"{at}: data needs a model for its inputs", 'e.g. model = "mynets:small_cnn"')
        model = models.default_spec(model, dataset)
    if e.get("output_sigmoid"):
        if not isinstance(model, dict):
            raise SuiteError(f"{at}: output_sigmoid applies to the built-in fc net, not to {model}",
                             "drop it, or put the sigmoid in your own model")
        model = {**model, "output_activation": "sigmoid"}
    seeds = e.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise SuiteError(f"{at}: seeds must be a non-empty list of integers", "e.g. seeds = [0, 1, 2]")
    suite = None
    if not data.is_regression(dataset):
        try:
            suite = load_suite(e.get("suite", "demo")).raw
        except SuiteError as exc:
            raise SuiteError(f"{at}: {exc.problem}", exc.fix) from None
    if e.get("n_test") is not None:  # 0 is refused, never read as "the suite's n"
        validate.number(e["n_test"], f"{at}: n_test", integer=True, lo=1, hi=MAX_SAMPLES, error=SuiteError,
                        fix="use e.g. n_test = 1000 (or drop it: the suite's n)")
    if e.get("lipschitz") not in (None, "full", "fast", "off"):
        raise SuiteError(f"{at}: lipschitz must be full, fast or off, got {e['lipschitz']!r:.80}",
                         'e.g. lipschitz = "fast" (a cheaper lower bound; the upper bound is the same)')
    n_val = e.get("n_val")
    if n_val is not None:
        validate.number(n_val, f"{at}: n_val", integer=True, lo=0, hi=60_000, error=SuiteError,
                        fix="use e.g. n_val = 1000 (0: no validation scoring)")
    methods = e.get("method")
    if not isinstance(methods, list) or not methods:
        raise SuiteError(f"{at}: no [[method]] entries", 'add e.g. [[method]] reg = "clip" lam = [0.1]')
    return _Experiment(dataset, model, seeds, suite, n_val, methods)


def _method_runs(e: dict[str, Any], x: _Experiment, m: dict[str, Any], mat: str) -> list[Run]:
    """The runs of one ``[[method]]`` of experiment ``e``: one per λ or τ setting and seed, each config checked."""
    from ..training.config import TrainConfig

    dataset, model, seeds, suite, n_val = x.dataset, x.model, x.seeds, x.suite, x.n_val
    runs: list[Run] = []
    badm = set(m) - _METHOD_KEYS
    if badm:
        raise SuiteError(f"{mat}: unknown key {sorted(badm)[0]!r}",
                         f"allowed keys: {', '.join(sorted(_METHOD_KEYS))}")
    _check_label(m.get("label"), f"{mat}: label")
    reg = m.get("reg")
    if reg not in REGISTRY:
        raise SuiteError(f"{mat}: reg {reg!r} is missing or unknown", f"use one of {', '.join(REGISTRY)}")
    settings: list[tuple[str, dict[str, Any]]] = []
    takes_lam = REGISTRY[reg].takes_lam
    if not takes_lam and ("lam" in m or "tau" in m):
        raise SuiteError(f"{mat}: reg {reg} takes no lam or tau", "drop them, or use reg weight or clip")
    if not takes_lam:
        settings.append(("", {"lam": 0.0}))
    for lam in _as_list(m.get("lam"), mat, "lam") if takes_lam else []:
        settings.append((f"lam{_fmt_num(lam)}", {"lam": lam}))
    for tau in _as_list(m.get("tau"), mat, "tau") if takes_lam else []:
        settings.append((f"tau{_fmt_num(tau)}", {"lam": m.get("lam0", 0.05), "target_acc": tau,
                                                   "lam_step": m.get("lam_step", 0.01),
                                                   "lam_every": m.get("lam_every", 1)}))
    if not settings:
        raise SuiteError(f"{mat}: {reg} needs lam = [...] and/or tau = [...]", "give at least one value")
    if isinstance(model, str) and m.get("output_sigmoid"):
        raise SuiteError(f"{mat}: output_sigmoid applies to the built-in fc net, not to {model}",
                         "drop it, or put the sigmoid in your own model")
    mmodel = {**model, "output_activation": "sigmoid"} if m.get("output_sigmoid") and isinstance(model, dict) \
        else model
    sources = {"model": None, "factory": mmodel} if isinstance(mmodel, str) else {"model": mmodel}
    if dataset == CUSTOM:
        sources.update(data=e["data"], test_data=e["test_data"])
    for tag, lamcfg in settings:
        for seed in seeds:
            label = m.get("label") or reg
            run_id = "-".join(x for x in (e.get("label") or dataset, label, tag, f"s{seed}") if x)
            _check_id(run_id, f"{mat}: run id")
            kw: dict[str, Any] = dict(**sources, reg=reg, seed=seed, epochs=e.get("epochs"),
                                      n_train=e.get("n_train"), warmup=m.get("warmup"),
                                      require_target=m.get("require_target"), **lamcfg,
                                      **TrainConfig.table_kwargs({t: m.get(t) for t in SETTINGS}))
            for extra in (e.get("train") or {}, m.get("train") or {}):  # a method's own epochs, lr, ...
                if not isinstance(extra, dict):
                    raise SuiteError(f"{mat}: train must be a table, got {extra!r:.80}",
                                     'e.g. train = { epochs = 20, lr_schedule = "cosine" }')
                kw.update(extra)
            try:
                cfg = TrainConfig.for_dataset(dataset, **kw)
            except TypeError as exc:
                raise SuiteError(f"{mat}: unknown training setting ({exc})",
                                 "use fields of robustclip.TrainConfig in train = {...}") from None
            try:
                cfg.validate()
            except RobustclipError as exc:
                raise SuiteError(f"{mat} ({run_id}): {exc.problem}", exc.fix or "fix the sweep file") from None
            runs.append(Run(id=run_id, train=asdict(cfg), suite=suite, n_test=e.get("n_test"), n_val=n_val,
                            lipschitz=e.get("lipschitz"),
                            meta={"label": label, "method": reg,
                                  "lam": lamcfg.get("lam") if "target_acc" not in lamcfg else None,
                                  "tau": lamcfg.get("target_acc"), "seed": seed,
                                  "experiment": e.get("label") or dataset}))
    return runs


SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=-]*")
"""Labels and run ids: letters, digits and ``. _ + = -``, starting with a letter or digit (so never a path)."""
MAX_LABEL, MAX_ID = 64, 160


def _check_label(label: Any, at: str) -> None:
    if label is None:
        return
    if not isinstance(label, str):
        raise SuiteError(f"{at} must be a string, got {label!r}", 'e.g. label = "clip128"')
    _check_name(label, at, MAX_LABEL)


def _check_id(run_id: str, at: str) -> None:
    _check_name(run_id, at, MAX_ID)


def _check_name(name: str, at: str, limit: int) -> None:
    """Refuse anything that could leave ``SWEEP/runs/``: separators, ``..``, absolute paths, odd characters."""
    if not SAFE_NAME.fullmatch(name) or ".." in name or len(name) > limit:
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise SuiteError(f"{at} {shown!r} is not a safe name (it becomes a folder name under runs/)",
                         f"use at most {limit} letters, digits and . _ + = -, starting with a letter or digit, "
                         "without '..'")


def _as_list(v: Any, at: str, key: str) -> list[float]:
    if v is None:
        return []
    vals = v if isinstance(v, list) else [v]
    for x in vals:
        if isinstance(x, bool) or not isinstance(x, (int, float)) or x < 0 or not math.isfinite(x):
            raise SuiteError(f"{at}: {key} values must be numbers >= 0, got {x!r}", f"e.g. {key} = [0.01, 0.1]")
    return [float(x) for x in vals]


def flags_command(raw: dict[str, Any], out: str | os.PathLike[str]) -> str:
    """The ``robustclip sweep`` command line (flags mode) that rebuilds the plan ``raw`` into folder ``out``: the
    inverse of the CLI's flags-to-plan step, so a report can name the exact command of a sweep that has no file."""
    import shlex

    parts = ["robustclip", "sweep", *(["--dataset", str(raw["dataset"])] if "dataset" in raw else [])]
    for m in raw.get("method", []):
        spec = str(m.get("reg", ""))
        if m.get("tau"):
            spec += ":tau=" + ",".join(f"{v:g}" for v in m["tau"])
        elif m.get("lam"):
            spec += ":" + ",".join(f"{v:g}" for v in m["lam"])
        parts += ["--method", spec]
    parts += ["--seeds", ",".join(str(v) for v in raw.get("seeds", [0]))]
    for key in ("model", "epochs", "n_train", "suite", "n_test", "data", "test_data"):
        if raw.get(key) is not None:
            parts += [f"--{key.replace('_', '-')}", str(raw[key])]
    parts += ["--out", str(out)]
    return shlex.join(parts)
