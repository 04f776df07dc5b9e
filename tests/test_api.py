"""The public surface of ``import robustclip``: what dir() lists, what the docstring promises, and keys that do not
depend on how ε was written."""

from __future__ import annotations

import importlib
import inspect

import pytest

import robustclip as rc
from robustclip.core.results import canonical_key, metric_key


def test_dir_lists_only_public_names_once():
    names = dir(rc)
    assert len(names) == len(set(names))
    for leaked in ("Any", "TYPE_CHECKING", "annotations", "importlib"):
        assert leaked not in names
    assert set(rc.__all__) <= set(names)


@pytest.mark.parametrize("name", [n for n in rc.__all__ if n[0].islower() and n not in ("load", "save", "train",
                                                                                      "evaluate", "benchmark",
                                                                                      "compare")])
def test_every_module_the_docstring_lists_is_an_attribute_and_importable(name):
    assert name in (rc.__doc__ or "")
    assert getattr(rc, name) is importlib.import_module(f"robustclip.{name}")


def test_evaluate_and_benchmark_need_a_suite():
    for fn in (rc.evaluate, rc.benchmark):
        p = inspect.signature(fn).parameters["suite"]
        assert p.default is inspect.Parameter.empty and p.kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("spelled", ["worst_case@L2:1", "worst_case@L2:1.0", "worst_case@L2:1e0", "worst_case@L2:1.00"])
def test_metric_keys_are_canonical_however_eps_is_written(spelled):
    assert canonical_key(spelled) == metric_key("worst_case", "L2", 1.0) == "worst_case@L2:1"


def test_keys_that_are_not_metric_keys_pass_through():
    for key in ("clean", "noise", "pgd@L2:x", "pgd@L2"):
        assert canonical_key(key) == key


def test_load_takes_your_own_weights_and_the_code_that_builds_them(tmp_path, monkeypatch):
    import torch
    from torch import nn

    import robustclip as rc

    (tmp_path / "mynets_api.py").write_text(
        "from torch import nn\n"
        "def tiny():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))\n", encoding="utf-8")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    torch.save(net.state_dict(), tmp_path / "w.pt")
    monkeypatch.chdir(tmp_path)
    model, meta = rc.load(tmp_path / "w.pt", model="mynets_api:tiny", device="cpu")
    x = torch.rand(5, 1, 2, 2)
    assert torch.equal(model(x), net(x)) and not model.training
    with pytest.raises(rc.RobustclipError, match="model"):
        rc.load(tmp_path / "w.pt")  # weights alone do not say which network they belong to
