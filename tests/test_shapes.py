"""Any model, any input shape: every attack runs on (N, d), (N, C, H, W), (N, 1, 1, 28, 28)-like inputs through the
image view; layers with their own train/eval behaviour (BatchNorm, Dropout) and pooling and residual blocks are
evaluated in eval mode and left as they were; bad data and unfit attacks are refused up front with one line.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustclip.attacks.suites import parse_suite
from robustclip.errors import RobustclipError
from robustclip.evaluation.runner import evaluate

EVERY = {"name": "every", "eps": {"L2": [0.5, 1.0], "Linf": [0.05]},
         "attack": [{"type": "clean"}, {"type": "noise", "sigma": 0.2}, {"type": "noise", "norm": "L2"},
                    {"type": "fgsm", "norm": "L2"}, {"type": "fgsm", "norm": "Linf"},
                    {"type": "pgd", "norm": "L2", "steps": 4}, {"type": "pgd", "norm": "Linf", "steps": 4},
                    {"type": "apgd", "norm": "L2", "steps": 4},
                    {"type": "apgd", "norm": "Linf", "steps": 4, "loss": "dlr"},
                    {"type": "apgdt", "norm": "L2", "steps": 4}, {"type": "fabt", "norm": "Linf", "steps": 4},
                    {"type": "authors_pgd", "norm": "L2", "steps": 4}]}


def _mlp(d: int = 20, k: int = 5) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, k)).eval()


def _data(net: nn.Module, shape: tuple[int, ...], n: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    x = torch.rand(n, *shape)
    with torch.no_grad():
        y = net(x).argmax(1)
    y[:3] = (y[:3] + 1) % 5  # a few clean mistakes
    return x, y


@pytest.mark.parametrize("shape", [(20,), (1, 1, 4, 5), (2, 2, 5), (1, 4, 5)])
def test_every_attack_runs_on_any_shape(shape):
    net = _mlp()
    x, y = _data(net, shape)
    res = evaluate(net, x, y, suite=parse_suite(EVERY), progress=False, sanity=False, certify=False)
    f = res.frame
    clean = res.accuracy("clean")
    assert clean == pytest.approx(27 / 30)
    for norm, eps in (("L2", 0.5), ("L2", 1.0), ("Linf", 0.05)):
        assert res.accuracy("worst_case", norm, eps) <= clean
    assert res.accuracy("worst_case", "L2", 1.0) < clean  # the attacks do something on every shape
    assert set(f.attack) >= {"fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgdt", "fabt", "authors_pgd"}
    assert res.meta["sample_shape"] == list(shape)
    assert res.samples is not None and len(res.samples) == 30 * 3


def test_flat_and_five_d_inputs_give_identical_results():
    """(N, 20) and (N, 1, 1, 4, 5) are the same data to a model that flattens: the attacks see the same view."""
    net = _mlp()
    x, y = _data(net, (20,))
    a = evaluate(net, x, y, suite=parse_suite(EVERY), progress=False, sanity=False, certify=False)
    b = evaluate(net, x.reshape(30, 1, 1, 4, 5), y, suite=parse_suite(EVERY), progress=False, sanity=False,
                 certify=False)
    assert a.frame.accuracy.tolist() == b.frame.accuracy.tolist()
    for key, ok in a.correct.items():
        assert torch.equal(ok, b.correct[key]), key


@pytest.mark.parametrize("shape", [(20,), (1, 1, 4, 5), (1, 1, 20), (2, 10)])
def test_square_is_refused_on_non_images(shape):
    net = _mlp()
    x, y = _data(net, shape)
    s = parse_suite({"attack": [{"type": "square", "norm": "Linf", "eps": 0.1, "n_queries": 10}]})
    with pytest.raises(RobustclipError, match="needs images") as exc:
        evaluate(net, x, y, suite=s, progress=False, sanity=False)
    assert "\n" not in str(exc.value)


def test_square_runs_on_images():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4)).eval()
    x = torch.rand(8, 3, 8, 8)
    y = net(x).argmax(1)
    s = parse_suite({"attack": [{"type": "clean"}, {"type": "square", "norm": "Linf", "eps": 0.1, "n_queries": 20}]})
    res = evaluate(net, x, y, suite=s, progress=False, sanity=False, certify=False)
    assert res.accuracy("square", "Linf", 0.1) <= 1.0


@pytest.mark.parametrize("k, attack, need", [
    (2, {"type": "apgd", "norm": "L2", "eps": 0.5, "loss": "dlr"}, 3),
    (3, {"type": "apgdt", "norm": "L2", "eps": 0.5}, 4),
    (3, {"type": "autoattack", "norm": "L2", "eps": 0.5}, 4),
])
def test_dlr_losses_need_enough_classes(k, attack, need):
    net = _mlp(k=k)
    x = torch.rand(6, 3, 4, 4)[:, :, :2, :].reshape(6, 24)[:, :20]
    y = torch.zeros(6, dtype=torch.long)
    if attack["type"] == "autoattack":
        x = torch.rand(6, 1, 4, 5)
    with pytest.raises(RobustclipError, match=f"at least {need} classes"):
        evaluate(net, x, y, suite=parse_suite({"attack": [attack]}), progress=False, sanity=False)


def test_apgdt_runs_with_four_classes():
    net = _mlp(k=4)
    x = torch.rand(6, 20)
    y = net(x).argmax(1)
    res = evaluate(net, x, y, suite=parse_suite({"attack": [{"type": "clean"}, {"type": "apgdt", "norm": "L2",
                                                                                "eps": 0.5, "steps": 3}]}),
                   progress=False, sanity=False, certify=False)
    assert res.accuracy("apgdt", "L2", 0.5) <= 1.0


@pytest.mark.parametrize("lo, hi", [(-0.1, 1.0), (0.0, 1.5), (0.0, float("nan"))])
def test_inputs_outside_the_unit_box_are_refused(lo, hi):
    net = _mlp()
    x = torch.rand(6, 20)
    x[0, 0], x[1, 0] = lo, hi
    with pytest.raises(RobustclipError, match=r"\[0,1\]"):
        evaluate(net, x, torch.zeros(6, dtype=torch.long), suite="ci-quick", progress=False, sanity=False)


class _Squeeze(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1)


@pytest.mark.parametrize("net, match", [
    (nn.Sequential(nn.Linear(20, 5), _Squeeze()), "expected \\(N, classes\\)"),
    (nn.Sequential(nn.Linear(20, 5), nn.Unflatten(1, (5, 1))), "expected \\(N, classes\\)"),
    (nn.Sequential(nn.Linear(30, 5)), "fails on inputs of shape \\(N, 20\\)"),
])
def test_unfit_models_are_one_line_errors(net, match):
    x = torch.rand(6, 20)
    with pytest.raises(RobustclipError, match=match) as exc:
        evaluate(net, x, torch.zeros(6, dtype=torch.long), suite="ci-quick", progress=False, sanity=False)
    assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------- layers with state, pooling, residuals


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


def _cnn(kind: str) -> nn.Module:
    torch.manual_seed(0)
    layers: dict[str, list[nn.Module]] = {
        "batchnorm": [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                      nn.Linear(8 * 8 * 8, 10)],
        "dropout": [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Dropout(0.5), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)],
        "maxpool": [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)],
        "avgpool": [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 10)],
        "adaptive": [nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)],
        "residual": [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), _Residual(8), nn.Dropout(0.3),
                     nn.AdaptiveMaxPool2d(2), nn.Flatten(), nn.Linear(8 * 2 * 2, 10)],
        "tabular": [nn.Linear(192, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 10)],
    }
    net = nn.Sequential(*layers[kind])
    with torch.no_grad():  # non-trivial running statistics, as after training
        net.train()
        for _ in range(3):
            net(torch.rand(16, *_shape(kind)))
    return net


def _shape(kind: str) -> tuple[int, ...]:
    return (192,) if kind == "tabular" else (3, 8, 8)


SMALL = {"eps": {"L2": [0.5], "Linf": [0.03]},
         "attack": [{"type": "clean"}, {"type": "fgsm", "norm": "Linf"}, {"type": "pgd", "norm": "L2", "steps": 4},
                    {"type": "apgd", "norm": "Linf", "steps": 4}, {"type": "apgdt", "norm": "L2", "steps": 3},
                    {"type": "fabt", "norm": "Linf", "steps": 3},
                    {"type": "square", "norm": "Linf", "n_queries": 10}]}


@pytest.mark.parametrize("kind", ["batchnorm", "dropout", "maxpool", "avgpool", "adaptive", "residual", "tabular"])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_stateful_pooling_and_residual_models_evaluate_in_eval_mode(kind, mode):
    net = _cnn(kind).train(mode == "train")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    torch.manual_seed(2)
    x = torch.rand(24, *_shape(kind))
    with torch.no_grad():
        y = net.eval()(x).argmax(1)
    net.train(mode == "train")
    suite = {**SMALL, "attack": [a for a in SMALL["attack"] if kind != "tabular" or a["type"] != "square"]}
    res = evaluate(net, x, y, suite=parse_suite(suite), progress=False, sanity=False, certify=False,
                   keep_adversarial=True)
    assert net.training == (mode == "train")  # the caller's mode is restored
    for k, v in net.state_dict().items():  # BatchNorm's running statistics were never updated
        assert torch.equal(v, before[k]), k
    assert res.accuracy("clean") == 1.0  # eval-mode predictions, deterministic (Dropout off)
    net.eval()
    with torch.no_grad():
        for i, attack, norm, eps, adv in res.adversarial:  # every kept example fools the eval-mode model, in the ball
            assert adv.shape == x[i].shape and 0 <= float(adv.min()) and float(adv.max()) <= 1
            d = (adv - x[i]).flatten()
            size = float(d.norm()) if norm == "L2" else float(d.abs().max())
            assert size <= eps * (1 + 1e-4) + 1e-6, (attack, size)
            assert int(net(adv[None]).argmax(1)) != int(y[i]), (i, attack)
