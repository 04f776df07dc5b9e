"""Contract tests: every entry of the three registries passes the same checks, so a new method, attack kind or
dataset is tested the moment it is registered.

Regularisers (:data:`robustclip.training.regularizers.registry.REGISTRY`): each builds from its defaults, trains a tiny
model for one
epoch, round-trips its state and its checkpoint, is planned by a sweep, has a report label and a ``train`` flag.
Attack kinds (:data:`robustclip.attacks.suites.ATTACKS`): each builds, attacks a tiny model within its budget (never
above
clean accuracy), round-trips through its suite's dict, is planned by a sweep and lands as a row of the results.
Datasets (:data:`robustclip.data.datasets.REGISTRY`): each entry's facts agree (task, classes, splits), its default
model takes its input shape and gives one output per class, a run's settings and a sweep accept it, the command line
offers it, and its loader serves every split in its shape (files from a folder the test writes in the official
layout).
Synthetic data in [0, 1] and tiny models keep this in the fast tier (no MNIST files).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import one_thread, run_cli

from robustclip.attacks.kinds import ATTACKS
from robustclip.attacks.suites import parse_suite, suite_digest
from robustclip.checkpoints import format as checkpoints
from robustclip.data import cifar
from robustclip.data import datasets as data
from robustclip.evaluation.runner import evaluate
from robustclip.models import specs as models
from robustclip.reports import tables
from robustclip.sweeps import planning
from robustclip.training.config import TrainConfig
from robustclip.training.regularizers import base
from robustclip.training.regularizers import registry as regularizers
from robustclip.training.trainer import train

TINY_MODEL = {"arch": "fc", "sizes": [784, 16, 10], "activation": "relu"}
# cheap values for the settings every registered kind or table may have; an entry takes the ones its schema knows
CHEAP_ATTACK = {"norm": "L2", "steps": 2, "restarts": 1, "n_queries": 20, "samples": 1, "sigma": 0.3}
CHEAP_TABLES = {"clip": {"pairs": 4}, "adversarial": {"steps": 1, "eps": 1.0}}


def _synthetic(n: int, seed: int) -> data.Split:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, 1, 28, 28), generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return data.Split(x, y, "mnist", "train", "synthetic")


def _tables(name: str) -> dict[str, dict]:
    """Cheap settings for every table the method reads (only keys its schema accepts)."""
    entry = regularizers.REGISTRY[name]
    out = {}
    for table in entry.fields:
        keys = regularizers.SETTINGS[table].keys
        out[table] = {k: v for k, v in CHEAP_TABLES.get(table, {}).items() if k in keys}
    return out


@pytest.mark.parametrize("name", sorted(regularizers.REGISTRY))
def test_every_regularizer_trains_round_trips_and_is_planned_and_reported(name, tmp_path):
    entry = regularizers.REGISTRY[name]
    assert entry.doc and entry.label, f"{name}: a registry entry needs a --help line and a report label"
    for table in entry.fields:
        assert table in regularizers.SETTINGS, f"{name} reads settings table {table!r}, which SETTINGS lacks"
    # builds from its defaults and from the settings its tables hold
    params = _tables(name)
    single = params[entry.params_field] if isinstance(entry.params_field, str) else params
    reg = regularizers.make(name, seed=0, **(single if entry.fields else {}))
    assert isinstance(reg, base.Regularizer)

    # trains one epoch of a tiny model
    lam = entry.default_lam if entry.takes_lam else 0.0
    cfg = TrainConfig(dataset="mnist", reg=name, lam=lam, epochs=1, model=TINY_MODEL, batch_size=64,
                      lip_probe_pairs=0, **TrainConfig.table_kwargs(params))
    cfg.validate()
    with one_thread():
        res = train(cfg, progress=False, splits=(_synthetic(256, 0), _synthetic(64, 1)))
    assert res.meta.train["reg"] == name and len(res.history) == 1

    # round-trips its state and its checkpoint (config included)
    state = reg.state_dict()
    twin = regularizers.make(name, seed=0, **(single if entry.fields else {}))
    twin.load_state_dict(state)
    assert twin.config() == reg.config()
    path = checkpoints.save(res.model, tmp_path / f"{name}.safetensors", res.meta)
    model, meta = checkpoints.load(path)
    again = TrainConfig(**{k: v for k, v in meta.train.items() if k in TrainConfig.__dataclass_fields__})
    assert again.reg == name and again.reg_params() == cfg.reg_params()
    x = _synthetic(8, 2).x
    with torch.no_grad():
        assert torch.equal(model(x), res.model.eval()(x))

    # is planned by a sweep, with its settings tables as method keys
    method = {"reg": name, **params, **({"lam": [lam]} if entry.takes_lam else {})}
    runs = planning.plan({"name": "contract", "experiment": [{"dataset": "mnist", "model": TINY_MODEL, "epochs": 1,
                                                            "suite": "ci-quick", "seeds": [0],
                                                            "method": [method]}]})
    assert [r.meta["method"] for r in runs] == [name]
    assert TrainConfig(**runs[0].train).reg_params() == cfg.reg_params()

    # has its label in reports and its name in `robustclip train --help`
    assert tables.METHOD_NAMES[name] == entry.label
    rc, out, _ = run_cli(["train", "--help"])
    assert rc == 0 and name in " ".join(out.split())


def _attack_entry(kind: str) -> dict:
    entry = {"type": kind, **{k: v for k, v in CHEAP_ATTACK.items() if k in ATTACKS[kind].keys}}
    if "sigma" in entry and "eps" in ATTACKS[kind].keys:
        entry.pop("sigma")  # noise: the ε-ball version, on the suite's grid
    return entry


@pytest.mark.parametrize("kind", sorted(ATTACKS))
def test_every_attack_kind_attacks_round_trips_and_is_planned_and_reported(kind, tmp_path):
    raw = {"name": "contract", "n": 16, "batch_size": 16, "seed": 0, "eps": {"L2": [1.0]},
           "attack": [{"type": "clean"}] + ([_attack_entry(kind)] if kind != "clean" else [])}
    suite = parse_suite(raw, where="<contract>")
    # round-trips through its dict: the same suite, the same digest
    again = parse_suite(dict(suite.raw), where="<contract>")
    assert suite_digest(again.raw) == suite_digest(suite.raw)
    assert [a.type for a in again.attacks] == [a.type for a in suite.attacks]

    # attacks a tiny model, and never reports more than clean accuracy
    torch.manual_seed(0)
    model = models.build(TINY_MODEL).eval()
    x = torch.rand((16, 1, 28, 28), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = model(x).argmax(1)  # clean accuracy 1: every attack has work to do
    with one_thread():
        res = evaluate(model, x, y, suite=suite, model_name="m", dataset="mnist", progress=False, sanity=False)
    rows = res.frame[res.frame.attack != "clean"] if kind != "clean" else res.frame
    assert not rows.empty, f"{kind} produced no result row"
    assert (rows.accuracy <= 1.0).all() and (rows.n == 16).all()

    # is planned by a sweep that names the suite file, and its rows reach a report's table
    path = tmp_path / "contract.toml"
    path.write_text(_toml(raw), encoding="utf-8")
    runs = planning.plan({"name": "c", "experiment": [{"dataset": "mnist", "model": TINY_MODEL, "epochs": 1,
                                                     "suite": str(path), "seeds": [0],
                                                     "method": [{"reg": "none"}]}]})
    assert runs and {a["type"] for a in runs[0].suite["attack"]} == {a["type"] for a in raw["attack"]}
    labels = set(res.frame.attack)
    assert labels and all(isinstance(lab, str) and lab for lab in labels)


def _toml(raw: dict) -> str:
    lines = [f'name = "{raw["name"]}"', f'n = {raw["n"]}', f'batch_size = {raw["batch_size"]}', f'seed = {raw["seed"]}',
             "", "[eps]", "L2 = [1.0]"]
    for a in raw["attack"]:
        lines += ["", "[[attack]]"] + [f"{k} = {v!r}" if not isinstance(v, str) else f'{k} = "{v}"'
                                       for k, v in a.items()]
    return "\n".join(lines) + "\n"


def _official_files(name: str, root: Path) -> None:
    """A tiny copy of ``name`` in its official layout under ``root/name`` (a few records per split; CIFAR's layouts
    must be shrunk to match, as the CIFAR tests do)."""
    from test_cifar import _write_folder  # the CIFAR record writer of those tests

    folder = root / name
    if name in cifar.LAYOUTS:
        _write_folder(folder, name)
        return
    folder.mkdir(parents=True)
    g = np.random.default_rng(0)
    h, w = data.REGISTRY[name].shape[1:]
    for split, (img, lab) in data._FILES.items():
        n = 5 if split == "train" else 3
        pixels = g.integers(0, 256, n * h * w).astype(np.uint8).tobytes()
        (folder / img).write_bytes(struct.pack(">IIII", 2051, n, h, w) + pixels)
        (folder / lab).write_bytes(struct.pack(">II", 2049, n) + (np.arange(n) % 10).astype(np.uint8).tobytes())


@pytest.mark.parametrize("name", list(data.REGISTRY))
def test_every_dataset_entry_loads_builds_its_default_model_and_is_accepted_everywhere(name, tmp_path, monkeypatch):
    entry = data.REGISTRY[name]
    assert entry.name == name and entry.task in ("classification", "regression")
    assert entry.regression == (entry.task == "regression") and (entry.classes is None) == entry.regression
    assert {"train", "test"} <= set(entry.splits) <= {"train", "val", "test"}

    # its default model takes its input shape and gives one output per class (one value for regression)
    spec = models.default_spec(None, name)
    assert spec["arch"] == entry.default_model
    assert models.input_shape(spec) == entry.shape and models.output_size(spec) == (entry.classes or 1)
    torch.manual_seed(0)
    with torch.no_grad():
        assert models.build(spec).eval()(torch.rand(2, *entry.shape)).shape == (2, entry.classes or 1)

    # a run's settings and a sweep accept it; the command line offers it
    TrainConfig.for_dataset(name, reg="weight", lam=0.001, epochs=1).validate()
    runs = planning.plan({"name": "c", "experiment": [{"dataset": name, "epochs": 1, "seeds": [0],
                                                     "method": [{"reg": "weight", "lam": [0.001]}]}]})
    assert [r.train["dataset"] for r in runs] == [name]
    assert runs[0].train["model"] == spec and (runs[0].suite is None) == entry.regression
    rc, out, _ = run_cli(["train", "--help"])
    assert rc == 0 and name in " ".join(out.split())
    if entry.files:
        rc, out, _ = run_cli(["data", "--help"])
        assert rc == 0 and name in out

    # its loader serves every split in its shape, from files in the official layout where it has files
    if entry.files:
        for n in cifar.NAMES:
            monkeypatch.setitem(cifar.LAYOUTS, n, cifar.with_counts(n, {"train": 6, "test": 5}))
        monkeypatch.setenv("ROBUSTCLIP_NO_DOWNLOAD", "1")
        _official_files(name, tmp_path)
        data._load_cached.cache_clear()
    try:
        for split in entry.splits:
            s = data.load(name, split, data_dir=tmp_path if entry.files else None)
            assert s.dataset == name and s.split == split and len(s) > 0
            assert tuple(s.x.shape[1:]) == entry.shape and 0.0 <= float(s.x.min()) <= float(s.x.max()) <= 1.0
            if entry.regression:
                assert s.y.dtype == torch.float32 and s.y.shape == (len(s), 1)
            else:
                assert s.y.dtype == torch.int64 and s.y.shape == (len(s),)
                assert entry.classes is not None and 0 <= int(s.y.min()) and int(s.y.max()) < entry.classes
    finally:
        data._load_cached.cache_clear()
