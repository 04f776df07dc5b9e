"""Every path that reports a Lipschitz upper bound (``check --lipschitz off|fast|full``, ``evaluate``, the Python
API) gives a model it understands a finite bound and a model it does not ``upper = None`` with the reason and no
certificate, and never exits 3. The users' models are written here, in a module of their own (never torchvision).
"""

from __future__ import annotations

import json
import math
import sys
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from tiny import run_cli, suite_toml

from robustclip.attacks.suites import parse_suite
from robustclip.bounds import lipschitz, upper
from robustclip.evaluation import pipeline
from robustclip.evaluation import runner as evaluation

USER_MODULE = '''\
"""A user's networks for (N, 1, 28, 28) inputs: one the bounds understand, four they do not."""
import torch
from torch import nn


class PoolCNN(nn.Module):
    """conv-relu-pool twice, then two linear layers (the issue's small_cnn)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.fc1 = nn.Linear(16 * 7 * 7, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(torch.flatten(self.features(x), 1))))


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class CustomOp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(Square.apply(x.flatten(1)))


class Attention(nn.Module):
    """Attention-like: a product of two input-dependent tensors."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(28, 16)
        self.k = nn.Linear(28, 16)
        self.fc = nn.Linear(28 * 28, 10)

    def forward(self, x):
        rows = x.flatten(1, 2)  # (N, 28, 28)
        att = torch.softmax(self.q(rows) @ self.k(rows).transpose(1, 2), dim=-1)
        return self.fc((att @ rows).flatten(1))


def small_cnn():
    torch.manual_seed(0)
    return PoolCNN()


def layernorm_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 10))


def custom_op():
    torch.manual_seed(0)
    return CustomOp()


def attention():
    torch.manual_seed(0)
    return Attention()


def gelu_mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.GELU(), nn.Linear(32, 10))
'''

TINY_SUITE = suite_toml("tiny", n=8, eps=(0.1,), steps=2)

UNSUPPORTED = {"layernorm_mlp": "LayerNorm", "custom_op": "", "attention": "", "gelu_mlp": "GELU"}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    from tiny import one_thread

    with one_thread():
        yield


@pytest.fixture(scope="module")
def user(tmp_path_factory) -> dict[str, Any]:
    """The user's folder: their module, random weights of each model (torch.save of the state_dict), a tiny suite."""
    import importlib

    d = tmp_path_factory.mktemp("paths")
    name = f"pathnets_{uuid.uuid4().hex[:10]}"
    (d / f"{name}.py").write_text(USER_MODULE, encoding="utf-8")
    sys.path.insert(0, str(d))
    try:
        importlib.invalidate_caches()
        mod = importlib.import_module(name)
    finally:
        sys.path.remove(str(d))
    nets = {}
    for fn in ("small_cnn", *UNSUPPORTED):
        net = getattr(mod, fn)()
        torch.save(net.state_dict(), d / f"{fn}.pt")
        nets[fn] = net
    (d / "tiny.toml").write_text(TINY_SUITE, encoding="utf-8")
    return {"dir": d, "name": name, "nets": nets}


@pytest.fixture
def in_user_dir(user, monkeypatch) -> Path:
    monkeypatch.chdir(user["dir"])
    return Path(user["dir"])


def _check(user: dict[str, Any], fn: str, mode: str, data_dir: Path) -> tuple[int, str, str]:
    return run_cli(["check", f"{fn}.pt", "--model", f"{user['name']}:{fn}", "--dataset", "mnist", "--suite",
                    "tiny.toml", "--n", "8", "--lipschitz", mode, "--baseline", f"b-{fn}-{mode}.json",
                    "--update-baseline", "--quiet", "--data-dir", data_dir])


@pytest.mark.parametrize("mode", ["off", "fast"])
def test_check_with_a_maxpool_cnn_gets_a_baseline(user, in_user_dir, data_dir, mode):
    """issue 21: ``check --lipschitz off`` on a CNN with MaxPool2d exited 3 (the off path had no guard)."""
    code, out, err = _check(user, "small_cnn", mode, data_dir)
    assert code == 0, out + err
    assert "internal error" not in err


@pytest.mark.parametrize(("fn", "mode"), [(fn, m) for fn in UNSUPPORTED for m in ("off", "fast")]
                         + [("layernorm_mlp", "full")])  # full differs from fast only in the ascent budget
def test_check_on_every_lipschitz_mode_survives_a_model_it_does_not_understand(user, in_user_dir, data_dir, fn,
                                                                                mode):
    code, out, err = _check(user, fn, mode, data_dir)
    assert code == 0, out + err
    base = json.loads(Path(f"b-{fn}-{mode}.json").read_text())
    for bounds in base.get("lipschitz", {}).get("modes", {}).values():
        assert "upper" not in bounds  # no sound upper bound recorded


@pytest.mark.parametrize("fn", list(UNSUPPORTED))
def test_evaluate_reports_no_upper_bound_with_the_reason(user, in_user_dir, data_dir, fn):
    code, out, err = run_cli(["evaluate", f"{fn}.pt", "--model", f"{user['name']}:{fn}", "--dataset", "mnist",
                              "--suite", "tiny.toml", "--n", "8", "--out", f"ev-{fn}", "--quiet",
                              "--data-dir", data_dir])
    assert code == 0, out + err
    lip = json.loads(Path(f"ev-{fn}/lipschitz.json").read_text())[0]
    assert lip["upper"] is None and lip["upper_reason"], lip
    assert UNSUPPORTED[fn] in lip["upper_reason"]
    frame = pd.read_csv(f"ev-{fn}/results.csv")
    cert = frame[frame.attack.str.startswith("certified")]
    assert (cert.accuracy == 0).all(), cert


@pytest.mark.parametrize("fn", list(UNSUPPORTED))
@pytest.mark.parametrize("mode", ["off", "fast"])
def test_python_api_gives_none_and_the_reason(user, fn, mode):
    net = user["nets"][fn].eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 28, 28, generator=g)
    y = net(x).argmax(1)
    ups, reason = upper.upper_bounds(net, (1, 28, 28))
    assert ups == [] and reason
    with pytest.raises(ValueError, match="no Lipschitz upper bound"):
        upper.upper_bound(net, (1, 28, 28))
    rep = lipschitz.estimate(net, x, pairs=4, steps=2)
    assert rep.upper is None and rep.upper_reason and rep.ratio is None
    suite = parse_suite({"name": "t", "n": 8, "batch_size": 8, "seed": 0, "eps": {"L2": [1e-3]},
                         "attack": [{"type": "clean"}, {"type": "pgd", "norm": "L2", "steps": 1}]}, where="<test>")
    res = evaluation.evaluate(net, x, y, suite=suite, n_classes=10, progress=False, sanity=False)
    assert res.lipschitz.get("reason")
    cert = res.frame[res.frame.attack.str.startswith("certified")]
    assert (cert.accuracy == 0).all()  # every sample is clean-correct (y is the prediction), none certified
    ev = pipeline.evaluate_model(net, _meta(), suite=suite, eval_set=_set(x, y), progress=False, lipschitz=mode)
    assert ev.lipschitz.upper is None and ev.lipschitz.upper_reason


def test_the_understood_cnn_gets_a_finite_bound_on_every_path(user):
    net = user["nets"]["small_cnn"].eval()
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    up = upper.upper_bound(net, (1, 28, 28))
    assert math.isfinite(up) and up > 0
    ups, reason = upper.upper_bounds(net, (1, 28, 28))
    assert reason is None and ups[0].value == pytest.approx(up)
    rep = lipschitz.estimate(net, x, pairs=4, steps=2)
    assert rep.upper == pytest.approx(up) and rep.lower <= rep.upper
    suite = parse_suite({"name": "t", "n": 8, "batch_size": 8, "seed": 0, "eps": {"L2": [1e-3]},
                         "attack": [{"type": "clean"}, {"type": "pgd", "norm": "L2", "steps": 1}]}, where="<test>")
    for mode in ("off", "fast"):
        ev = pipeline.evaluate_model(net, _meta(), suite=suite, eval_set=_set(x, net(x).argmax(1)), progress=False,
                                     lipschitz=mode)
        assert ev.lipschitz.upper == pytest.approx(up)


def _meta() -> Any:
    from robustclip.checkpoints.format import CheckpointMeta

    return CheckpointMeta(dataset="user")


def _set(x: torch.Tensor, y: torch.Tensor) -> Any:
    from robustclip.data.datasets import Split

    return Split(x, y, dataset="user", split="test", source="test")
