"""ECLipsE-class bound: sound against independent lower bounds on random and trained nets, never below LipSDP's
optimum, class-pair constants above local gradient norms, and one-line refusals for what it does not cover."""

import math

import pytest
import torch
from torch import nn

from robustclip.bounds import eclipse, lipsdp, lower, structure, upper
from robustclip.models import specs as models
from robustclip.training import config
from robustclip.training import trainer as training
from tests.tiny import one_thread


def _net(act: type[nn.Module], sizes=(12, 16, 10, 4), seed=0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh, nn.Sigmoid])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_nets_sound_and_tighter_than_the_product(act, seed):
    with one_thread():
        m = _net(act, seed=seed)
        ops, _ = structure.affine_ops(m, (12,))
        L, pairs, info = eclipse.eclipse(ops, pair_rows=m[-1].weight.detach().double(), refine_iters=30)
        prod = upper.upper_bound(m, (12,))
        z = torch.randn(256, 12, generator=torch.Generator().manual_seed(seed))
        jac = lower._jacobian_norms(m, z)
    assert info["verified_rho"] is not None
    assert float(jac.max()) <= L * (1 + 1e-5)
    assert L <= prod * (1 + 1e-6)
    # class pairs: the gradient of f_y − f_j at any point is below its constant
    J = torch.func.vmap(torch.func.jacrev(m))(z)  # (N, K, d)
    assert pairs is not None
    for y in range(4):
        for j in range(4):
            if y != j:
                assert float((J[:, y] - J[:, j]).norm(dim=1).max()) <= float(pairs[y, j]) * (1 + 1e-5)
                assert float(pairs[y, j]) <= math.sqrt(2) * L * (1 + 1e-12)


def test_never_below_lipsdp_and_close_to_it():
    pytest.importorskip("cvxpy")
    with one_thread():
        m = _net(nn.ReLU, sizes=(10, 14, 12, 3), seed=3)
        ops, _ = structure.affine_ops(m, (10,))
        sdp, _, _ = lipsdp.lipsdp(ops)
        L, _, _ = eclipse.eclipse(ops, refine_iters=200)
        L0, _, _ = eclipse.eclipse(ops)
    assert L >= sdp * (1 - 1e-3)  # its multipliers are feasible for LipSDP-Neuron, whose optimum is the smallest
    assert L <= sdp * 1.05
    assert L <= L0 * (1 + 1e-9)  # the joint descent only improves on the stages


@pytest.mark.data
def test_trained_net_sound_against_lower_bounds(mnist_train):
    from robustclip.data.datasets import Split

    x, y = mnist_train.x[:600], mnist_train.y[:600]
    splits = (Split(x[:512], y[:512], "mnist", "train", "t"), Split(x[512:], y[512:], "mnist", "val", "t"))
    cfg = config.TrainConfig(model={"arch": "fc", "sizes": [784, 24, 12, 10], "activation": "sigmoid"},
                               epochs=2, optimizer="adam", lr=0.01, lip_probe_pairs=0)
    with one_thread():
        m = training.train(cfg, progress=False, splits=splits).model
        ub = eclipse.eclipse_upper(m, (1, 28, 28))
        low = lower.lower_bound_jacobian(m, x[:64])
        lp = upper.layer_pair_bound(structure.affine_ops(m, (1, 28, 28))[0] or [])
    assert math.isfinite(ub.value)
    assert low <= ub.value * (1 + 1e-9)
    assert ub.value <= lp * (1 + 1e-6)


def test_refusals_name_the_reason():
    with one_thread():
        mm = models.build({"arch": "fc", "sizes": [784, 8, 10], "activation": "minmax"})
        assert "MinMax" in eclipse.eclipse_upper(mm, (1, 28, 28)).assumptions
        leaky = nn.Sequential(nn.Linear(4, 6), nn.LeakyReLU(0.1), nn.Linear(6, 2))
        ub = eclipse.eclipse_upper(leaky, (4,))
    assert ub.value == math.inf and "LeakyReLU" in ub.assumptions
