"""The shipped AutoAttack-standard suites build exactly the reference settings on torchattacks' objects: APGD-CE
(100 iterations, 1 restart), APGD-T (100, 9 targets, 1 restart), FAB-T (100, 9 targets, 1 restart), Square (5000
queries, p_init 0.8, no rescaled schedule), in that order, cascaded; targeted attacks take min(9, k - 1) targets.
"""

from __future__ import annotations

import pytest
import torch
import torchattacks
from torch import nn

from robustclip.attacks.suites import load_suite, parse_suite

EPS = {"cifar10-linf-8": ("Linf", 8 / 255), "cifar10-l2-0.5": ("L2", 0.5), "mnist-linf-0.3": ("Linf", 0.3)}


def _net(k: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, k))


@pytest.mark.parametrize("name", sorted(EPS))
def test_suite_is_autoattack_standard(name):
    norm, eps = EPS[name]
    s = load_suite(name)
    assert s.cascade and s.headline is not None and s.headline[0] == norm
    assert s.headline[1] == pytest.approx(eps, abs=1e-12)
    bounded = [a for a in s.attacks if a.bounded]
    assert [a.type for a in bounded] == ["apgd", "apgdt", "fabt", "square"]  # AutoAttack's order
    assert all(a.norm == norm and a.eps == pytest.approx(eps, abs=1e-12) for a in bounded)
    built = [a.build(_net(), n_classes=10, seed=0) for a in bounded]
    apgd, apgdt, fab, square = built
    assert isinstance(apgd, torchattacks.APGD) and apgd.loss == "ce"
    assert (apgd.steps, apgd.n_restarts, apgd.thr_decr, apgd.eot_iter) == (100, 1, 0.75, 1)
    assert isinstance(apgdt, torchattacks.APGDT)
    assert (apgdt.steps, apgdt.n_restarts, apgdt.n_target_classes, apgdt.thr_decr) == (100, 1, 9, 0.75)
    assert isinstance(fab, torchattacks.FAB) and fab.multi_targeted
    assert (fab.steps, fab.n_restarts, fab.n_target_classes) == (100, 1, 9)
    assert (fab.alpha_max, fab.eta, fab.beta) == (0.1, 1.05, 0.9)
    assert isinstance(square, torchattacks.Square)
    assert (square.n_queries, square.p_init, square.n_restarts, square.rescale_schedule, square.loss) == (
        5000, 0.8, 1, False, "margin")
    for atk in built:
        assert atk.norm == norm and atk.eps == pytest.approx(eps, abs=1e-12)


@pytest.mark.parametrize("k, targets", [(100, 9), (10, 9), (5, 4), (4, 3)])
def test_targeted_attacks_use_at_most_nine_targets(k, targets):
    s = parse_suite({"eps": {"Linf": [0.1]}, "attack": [{"type": "apgdt", "norm": "Linf"},
                                                          {"type": "fabt", "norm": "Linf"},
                                                          {"type": "autoattack", "norm": "Linf"}]})
    apgdt, fab, aa = (a.build(_net(k), n_classes=k, seed=0) for a in s.attacks)
    assert apgdt.n_target_classes == targets and fab.n_target_classes == targets
    inner = aa._autoattack.attacks
    assert [type(a).__name__ for a in inner] == ["APGD", "APGDT", "FAB", "Square"]
    assert inner[1].n_target_classes == targets and inner[2].n_target_classes == targets


def test_fab_t_runs_and_stays_in_the_ball():
    """FAB-T through the evaluation: outputs within ε and in [0,1] (checked per batch), breaks a weak linear model."""
    from robustclip.evaluation.runner import evaluate

    torch.manual_seed(0)
    net = _net(5)
    x = torch.rand(32, 3, 4, 4)
    y = net(x).argmax(1)
    s = parse_suite({"eps": {"Linf": [0.05]}, "attack": [{"type": "clean"},
                                                          {"type": "fabt", "norm": "Linf", "steps": 10}]})
    res = evaluate(net, x, y, suite=s, progress=False, sanity=False, certify=False)
    assert res.accuracy("clean") == 1.0
    assert res.accuracy("fabt", "Linf", 0.05) < 1.0
    assert res.meta["max_perturbation"]["fabt|Linf|0.05"] <= 0.05 * (1 + 1e-5) + 1e-6


def test_square_rescale_schedule_is_validated():
    from robustclip.errors import SuiteError

    with pytest.raises(SuiteError, match="rescale_schedule must be true or false"):
        parse_suite({"attack": [{"type": "square", "norm": "Linf", "eps": 0.1, "rescale_schedule": "no"}]})
