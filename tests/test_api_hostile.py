"""The Python API under hostile input (issue 23): models with NaN or wrongly shaped outputs or the wrong number of
classes, bad data and labels, Dropout and BatchNorm left in train mode, ClipPenalty on a model without parameters or
on integer inputs, and assert_robust with NaN, negative, empty, percent or unknown thresholds. Each ends in one
:class:`RobustclipError` (or, for a robustness too low or an unknown row, an AssertionError naming it)."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import suite_toml
from torch import nn

import robustclip as rc
from robustclip.errors import RobustclipError
from robustclip.testing import assert_robust

SUITE = suite_toml("api", n=16, eps=(1.0,), steps=2)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> str:
    p = tmp_path_factory.mktemp("api") / "api.toml"
    p.write_text(SUITE, encoding="utf-8")
    return str(p)


def _data(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _linear(k: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, k))


class _Wrap(nn.Module):
    def __init__(self, post) -> None:
        super().__init__()
        self.net = _linear()
        self.post = post

    def forward(self, x: torch.Tensor):
        return self.post(self.net(x))


BAD_MODELS = {
    "tuple": (lambda z: (z,), "is a tuple"),
    "1-d": (lambda z: z[:, 0], "shape (2,)"),
    "3-d": (lambda z: z[:, :, None], "shape (2, 10, 1)"),
    "fewer-rows": (lambda z: z[:1], "1 rows"),
    "class-indices": (lambda z: z.argmax(1, keepdim=True).repeat(1, 10), "floating-point logits"),
}


@pytest.mark.parametrize("name", list(BAD_MODELS))
def test_models_with_wrongly_shaped_outputs_are_one_line(name, suite):
    post, words = BAD_MODELS[name]
    x, y = _data()
    with pytest.raises(RobustclipError, match=words.replace("(", r"\(").replace(")", r"\)")):
        rc.evaluate(_Wrap(post), x, y, suite=suite, n_classes=10, progress=False)


@pytest.mark.parametrize("k,n_classes,words", [(5, 10, "5 outputs but the dataset has 10"),
                                               (1, None, "at least 2 classes"),
                                               (3, None, "labels y lie in")])
def test_wrong_number_of_classes_is_one_line(k, n_classes, words, suite):
    x, y = _data()
    with pytest.raises(RobustclipError, match=words):
        rc.evaluate(_linear(k), x, y, suite=suite, n_classes=n_classes, progress=False)


def test_nan_outputs_count_as_wrong_and_are_flagged(suite):
    x, y = _data()
    with pytest.warns(UserWarning):
        res = rc.evaluate(_Wrap(lambda z: z * math.nan), x, y, suite=suite, n_classes=10, progress=False)
    assert res.accuracy("clean") == 0.0
    assert res.accuracy("worst_case", "L2", 1.0) == 0.0
    assert any("NaN or infinite outputs" in f for f in res.flags)


@pytest.mark.parametrize("edit,words", [
    (lambda x, y: (x * math.nan, y), "NaN or infinite"),
    (lambda x, y: (x * 2, y), r"\[0,1\]"),
    (lambda x, y: ((x * 255).to(torch.uint8), y), "uint8"),
    (lambda x, y: (x[:0], y[:0]), "N >= 1"),
    (lambda x, y: (x, y[:5]), r"shape \(5,\) for 16"),
    (lambda x, y: (x, y.float()), "float32"),
    (lambda x, y: (x, y + 10), "labels y lie in"),
    (lambda x, y: (x, y - 10), "labels y lie in"),
], ids=["nan-x", "x-above-1", "uint8-x", "empty", "short-y", "float-y", "y-too-big", "y-negative"])
def test_bad_data_is_one_line_before_any_attack(edit, words, suite):
    x, y = edit(*_data())
    with pytest.raises(RobustclipError, match=words):
        rc.evaluate(_linear(), x, y, suite=suite, n_classes=10, progress=False)


class _BNDrop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(1, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 26 * 26, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(torch.relu(self.bn(self.conv(x)))))


def test_dropout_and_batchnorm_in_train_mode_are_evaluated_in_eval_mode_and_restored(suite):
    """Decision: a model is always evaluated in eval mode (deterministic, BatchNorm's running statistics used and
    left alone); every submodule's mode is restored afterwards, mixed modes included."""
    x, y = _data()
    net = _BNDrop()
    net.train()
    net.bn.eval()  # a user's frozen BatchNorm inside a model in train mode
    before = {k: v.clone() for k, v in net.state_dict().items()}
    res = rc.evaluate(net, x, y, suite=suite, n_classes=10, progress=False, sanity=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # running stats untouched
    assert net.training and net.drop.training and not net.bn.training  # each module's own mode back
    net.eval()
    ref = rc.evaluate(net, x, y, suite=suite, n_classes=10, progress=False, sanity=False)
    assert res.frame.accuracy.tolist() == ref.frame.accuracy.tolist()  # the same numbers as in eval mode
    assert not net.training


def test_modes_are_restored_when_the_check_refuses(suite):
    net = _BNDrop().train()
    x, y = _data()
    with pytest.raises(RobustclipError):
        rc.evaluate(net, x, y + 10, suite=suite, n_classes=10, progress=False)
    assert all(m.training for m in net.modules())


def test_clip_penalty_on_a_model_without_parameters_is_one_line():
    with pytest.raises(RobustclipError, match="no parameters"):
        rc.ClipPenalty(nn.Flatten())


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int64, torch.bool])
def test_clip_penalty_on_integer_inputs_is_one_line(dtype):
    x, _ = _data()
    pen = rc.ClipPenalty(_linear(), pairs=4)
    with pytest.raises(RobustclipError, match=str(dtype)):
        pen((x * 255).to(dtype))
    assert pen.calls == 0 and pen.pairs is None  # nothing was drawn from the bad batch


def test_clip_penalty_with_frozen_parameters_still_measures():
    net = _linear()
    for p in net.parameters():
        p.requires_grad_(False)
    value = rc.ClipPenalty(net, pairs=4)(_data()[0])
    v = float(value.detach())
    assert value.dim() == 0 and math.isfinite(v) and v >= 0


@pytest.mark.parametrize("thresholds,words", [
    ({"clean": math.nan}, "got nan"),
    ({"clean": -0.5}, "got -0.5"),
    ({"clean": 90}, "got 90"),
    ({"clean": math.inf}, "got inf"),
    ({"clean": "0.5"}, "got '0.5'"),
    ({"clean": True}, "got True"),
    ({}, "at least one row"),
    ({1: 0.5}, "not a string"),
], ids=["nan", "negative", "percent", "inf", "string", "bool", "empty", "int-key"])
def test_assert_robust_refuses_meaningless_thresholds_before_evaluating(thresholds, words, monkeypatch):
    from robustclip import testing

    def boom(*a, **k):
        raise AssertionError("evaluated before the thresholds were checked")

    monkeypatch.setattr(testing, "evaluate", boom)
    with pytest.raises(RobustclipError, match=words):
        assert_robust(_linear(), _data(), suite="ci-quick", min_accuracy=thresholds, n_classes=10)


def test_assert_robust_unknown_row_names_what_exists(suite):
    with pytest.raises(AssertionError, match="no result named 'nope'; available: clean"):
        assert_robust(_linear(), _data(), suite=suite, min_accuracy={"nope": 0.5}, n_classes=10)


def test_assert_robust_zero_and_one_are_valid_minimums(suite):
    res = assert_robust(_linear(), _data(), suite=suite, min_accuracy={"clean": 0.0}, n_classes=10)
    assert 0 <= res.accuracy("clean") <= 1
    with pytest.raises(AssertionError, match="TOO LOW"):
        assert_robust(_linear(), _data(), suite=suite, min_accuracy={"clean": 1}, n_classes=10)
