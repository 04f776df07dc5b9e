"""Lipschitz bounds against known answers.

* A linear map ``x -> W x`` has Lipschitz constant ``σ_max(W)`` everywhere:
  the pair-quotient and Jacobian lower bounds and the layer-norm upper bound
  must all find it.
* The upper bound of a Conv2d layer equals the operator norm of the dense
  matrix the convolution applies (built from basis vectors) on that input size.
* For the 1-D MLP, lower ≤ exact (grid) ≤ upper; for sigmoid MLPs lower ≤ upper.
* Pair ascent never lowers a quotient and keeps pairs in [0,1] with x != x'.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from robustclip.bounds import lipschitz, pairs
from robustclip.bounds import lower as lower_mod
from robustclip.bounds import upper as upper_mod
from robustclip.models import specs as models

REL = 1e-3


def _linear_model(d: int, k: int, sigmas: list[float], seed: int) -> tuple[nn.Sequential, float]:
    """``Flatten -> Linear(d, k, bias=False)`` with singular values ``sigmas`` (a clear top gap)."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    W = U @ torch.diag(torch.tensor(sigmas, dtype=torch.float64)) @ V[:, :k].T
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, k, bias=False))
    with torch.no_grad():
        model[1].weight.copy_(W.float())
    sigma = float(torch.linalg.matrix_norm(model[1].weight.detach().double(), ord=2))
    return model, sigma


def _centred_data(n: int, d: int, seed: int) -> torch.Tensor:
    """Points near 0.5, so pairs have room to move in any direction inside [0,1]."""
    g = torch.Generator().manual_seed(seed)
    return (0.5 + 0.01 * torch.randn(n, d, generator=g)).clamp(0, 1)


LINEAR_CASES = [
    pytest.param(8, 4, [3.0, 1.0, 0.5, 0.2], 0, id="d8-k4"),
    pytest.param(8, 3, [0.7, 0.3, 0.1], 1, id="d8-k3-small"),
    pytest.param(12, 5, [5.0, 2.0, 1.0, 0.5, 0.1], 2, id="d12-k5"),
]


@pytest.mark.parametrize("d,k,sigmas,seed", LINEAR_CASES)
def test_linear_model_quotient_and_upper_bounds_equal_the_spectral_norm(d, k, sigmas, seed):
    model, sigma = _linear_model(d, k, sigmas, seed)
    assert sigma == pytest.approx(sigmas[0], rel=1e-5)
    x = _centred_data(32, d, seed)
    lower = lower_mod.lower_bound_quotient(model, x, pairs=16, steps=60, seed=seed)
    upper = upper_mod.upper_bound(model, (d,))
    assert lower <= sigma * (1 + 1e-5) and upper >= sigma * (1 - 1e-6)
    assert abs(lower - sigma) / sigma < REL
    assert abs(upper - sigma) / sigma < REL


@pytest.mark.parametrize("d,k,sigmas,seed", LINEAR_CASES)
def test_linear_model_jacobian_bound_equals_the_spectral_norm(d, k, sigmas, seed):
    # a plain model with trainable weights, as a user would pass it
    model, sigma = _linear_model(d, k, sigmas, seed)
    x = _centred_data(32, d, seed)
    lower = lower_mod.lower_bound_jacobian(model, x, points=8, seed=seed)
    assert lower <= sigma * (1 + 1e-5)
    assert abs(lower - sigma) / sigma < REL


@pytest.mark.parametrize("d,k,sigmas,seed", LINEAR_CASES)
def test_linear_model_jacobian_bound_with_frozen_weights(d, k, sigmas, seed):
    model, sigma = _linear_model(d, k, sigmas, seed)
    for p in model.parameters():
        p.requires_grad_(False)
    x = _centred_data(32, d, seed)
    lower = lower_mod.lower_bound_jacobian(model, x, points=8, seed=seed)
    assert lower <= sigma * (1 + 1e-5)
    assert abs(lower - sigma) / sigma < REL
    js = lower_mod.jacobian_spectral_norm(model, x[:5], iters=30, generator=torch.Generator().manual_seed(0))
    assert js.shape == (5,)
    assert torch.allclose(js, torch.full((5,), sigma), rtol=REL)


def test_quotients_of_a_linear_map_by_hand():
    model, _ = _linear_model(8, 4, [3.0, 1.0, 0.5, 0.2], 0)
    W = model[1].weight.detach()
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(5, 8, generator=g), torch.rand(5, 8, generator=g)
    q = pairs.quotients(model, torch.cat([a, b]))
    want = ((a - b) @ W.T).norm(dim=1) / (a - b).norm(dim=1)
    assert torch.allclose(q, want, rtol=1e-5)
    xa, xb = pairs.split_pairs(torch.cat([a, b]))
    assert torch.equal(xa, a) and torch.equal(xb, b)


# --------------------------------------------------------------------------- convolutions


def _dense_conv_norm(conv: nn.Conv2d, in_shape: tuple[int, int, int]) -> float:
    """Operator norm of the linear map x -> conv(x) - bias, from its dense matrix."""
    d = math.prod(in_shape)
    basis = torch.eye(d, dtype=torch.float64).view(d, *in_shape)
    with torch.no_grad():
        cols = F.conv2d(basis, conv.weight.double(), stride=conv.stride, padding=conv.padding,
                        dilation=conv.dilation, groups=conv.groups)
    A = cols.flatten(1).T  # (out_dim, d): column j is the image of basis vector j
    return float(torch.linalg.matrix_norm(A, ord=2))


@pytest.mark.parametrize("cin,cout,kernel,stride,padding,size", [
    pytest.param(1, 2, 3, 1, 1, 6, id="1to2-k3-s1-p1-6x6"),
    pytest.param(1, 2, 3, 2, 1, 6, id="1to2-k3-s2-p1-6x6"),
    pytest.param(2, 3, 4, 3, 1, 7, id="2to3-k4-s3-p1-7x7"),
    pytest.param(1, 2, 2, 2, 0, 6, id="1to2-k2-s2-p0-6x6"),
    pytest.param(2, 4, 3, 1, 1, 8, id="2to4-k3-s1-p1-8x8"),
])
def test_conv_upper_bound_equals_dense_operator_norm(cin, cout, kernel, stride, padding, size):
    torch.manual_seed(cin * 100 + kernel * 10 + stride)
    conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding)
    in_shape = (cin, size, size)
    true = _dense_conv_norm(conv, in_shape)
    up = upper_mod.upper_bound(nn.Sequential(conv), in_shape, iters=300)
    assert abs(up - true) / true < REL, (up, true)
    names = upper_mod.layer_norms(nn.Sequential(conv, nn.ReLU(), nn.Flatten()), in_shape, iters=300)
    assert [n for n, _ in names] == ["0", "1", "2"]
    assert names[0][1] == pytest.approx(true, rel=REL) and names[1][1] == 1.0 and names[2][1] == 1.0


def test_conv_upper_bound_at_default_iterations_is_not_below_the_true_norm():
    # certification needs a true upper bound: power iteration from a random start
    # approaches sigma_max from below, so stopping early under-reports it
    torch.manual_seed(2 * 100 + 3 * 10 + 1)
    conv = nn.Conv2d(2, 4, 3, stride=1, padding=1)
    true = _dense_conv_norm(conv, (2, 8, 8))
    up = upper_mod.upper_bound(nn.Sequential(conv), (2, 8, 8))
    assert up >= true * (1 - 1e-9), f"upper bound {up} < true operator norm {true}"


def test_cnn_upper_bound_is_finite_and_above_the_lower_bound():
    torch.manual_seed(0)
    model = models.build({"arch": "cnn"}).eval()
    x = torch.rand(4, 1, 28, 28)
    up = upper_mod.upper_bound(model, (1, 28, 28), iters=30)
    low = lower_mod.lower_bound_jacobian(model, x, points=4, steps=1, iters=5)
    assert math.isfinite(up) and 0 < low <= up


def test_fast_upper_bound_is_sound_and_never_densifies(monkeypatch):
    """``--lipschitz fast``'s one bound: per layer at least the exact operator norm, with no dense conv matrix."""
    from robustclip.bounds import upper

    torch.manual_seed(0)
    model = models.build({"arch": "cnn"}).eval()
    exact = [_dense_conv_norm(model[0], (1, 28, 28)), _dense_conv_norm(model[2], (16, 14, 14)),
             float(torch.linalg.matrix_norm(model[5].weight.double(), ord=2)),
             float(torch.linalg.matrix_norm(model[7].weight.double(), ord=2))]

    def no_dense(*a, **k):
        raise AssertionError("the fast bound built a dense matrix")

    monkeypatch.setattr(upper, "affine_ops", no_dense)
    fast, why = upper.upper_bounds(model, (1, 28, 28), fast=True)
    assert why is None and [u.method for u in fast] == ["layer_product_fft"]
    norms = [v for _, v in upper.layer_norms(model, (1, 28, 28), fast=True)]
    assert norms[0] >= exact[0] * (1 - 1e-9) and norms[2] >= exact[1] * (1 - 1e-9)
    assert fast[0].value == pytest.approx(math.prod(norms)) and fast[0].value >= math.prod(exact) * (1 - 1e-9)
    P = torch.tensor(fast[0].pairs, dtype=torch.float64)  # GloRo's pair constants: min(√2·L, L(body)·||w_y − w_j||)
    W = model[7].weight.detach().double()
    body = math.prod(norms[:-1])
    for y, j in [(0, 1), (3, 7)]:
        want = min(math.sqrt(2) * fast[0].value, body * float((W[y] - W[j]).norm()))
        assert float(P[y, j]) == pytest.approx(want, rel=1e-9) and float(P[j, y]) == float(P[y, j])
    assert torch.all(P.diagonal() == 0)


# --------------------------------------------------------------------------- other layers and models


def test_layer_norms_of_activations_and_normalisation():
    model = models.build({"arch": "fc", "sizes": [64, 16, 10], "activation": "sigmoid", "mean": 0.1, "std": 0.5})
    norms = dict(upper_mod.layer_norms(model, (1, 8, 8)))
    kinds = {type(layer).__name__: norms[name] for name, layer in model.named_children()}
    assert kinds["Flatten"] == 1.0 and kinds["Normalize"] == pytest.approx(2.0) and kinds["Sigmoid"] == 0.25
    W1, W2 = model[2].weight.detach().double(), model[4].weight.detach().double()
    want = 2.0 * float(torch.linalg.matrix_norm(W1, ord=2)) * 0.25 * float(torch.linalg.matrix_norm(W2, ord=2))
    assert upper_mod.upper_bound(model, (1, 8, 8)) == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError, match="Softmax"):
        upper_mod.upper_bound(nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Softmax(dim=1)), (4,))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mlp1d_lower_le_exact_le_upper(seed):
    torch.manual_seed(seed)
    model = models.build({"arch": "mlp1d"})
    with torch.no_grad():  # a steeper function than the tiny initial one
        for m in model:
            if isinstance(m, nn.Linear):
                m.weight.mul_(3.0)
    x = torch.rand(64, 1, generator=torch.Generator().manual_seed(seed))
    rep = lipschitz.estimate(model, x, pairs=16, steps=30, seed=seed, exact=True)
    assert rep.exact is not None and rep.exact > 0
    assert rep.lower == max(rep.lower_quotient, rep.lower_jacobian)
    assert rep.lower <= rep.exact * (1 + 1e-4), rep
    assert rep.exact <= rep.upper, rep
    assert rep.lower > 0.5 * rep.exact, "the ascents should get close to the true constant in 1-D"
    d = rep.to_dict()
    assert d["ratio"] == pytest.approx(rep.upper / rep.lower) and d["exact"] == rep.exact


def test_exact_1d_of_a_known_function():
    model = nn.Sequential(nn.Linear(1, 1), nn.Tanh())
    with torch.no_grad():
        model[0].weight.fill_(4.0)
        model[0].bias.fill_(-2.0)  # f(x) = tanh(4x - 2): steepest at x = 0.5, slope 4
    assert lower_mod.exact_1d(model) == pytest.approx(4.0, rel=1e-6)
    assert upper_mod.upper_bound(model, (1,)) == pytest.approx(4.0)


@pytest.mark.parametrize("shape,sizes", [
    pytest.param((1, 8, 8), [64, 32, 10], id="8x8"),
    pytest.param((1, 28, 28), [784, 32, 16, 10], id="28x28"),
])
@pytest.mark.parametrize("seed", [0, 1])
def test_sigmoid_mlp_lower_le_upper(shape, sizes, seed):
    torch.manual_seed(seed)
    model = models.build({"arch": "fc", "sizes": sizes, "activation": "sigmoid"})
    x = torch.rand(16, *shape, generator=torch.Generator().manual_seed(seed))
    rep = lipschitz.estimate(model, x, pairs=8, steps=15, seed=seed)
    assert 0 < rep.lower_quotient <= rep.upper and 0 < rep.lower_jacobian <= rep.upper
    assert rep.ratio >= 1


# --------------------------------------------------------------------------- pairs and ascent


@pytest.mark.parametrize("mode", ["plain", "partial_random", "noise"])
def test_init_pairs_shapes_box_and_separation(mode):
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    x[3] = x[4]  # duplicates must still give distinct pairs
    P = pairs.init_pairs(x, 7, mode=mode, generator=torch.Generator().manual_seed(1))
    assert P.shape == (14, 1, 8, 8)
    assert float(P.min()) >= 0 and float(P.max()) <= 1
    a, b = pairs.split_pairs(P)
    assert float((a - b).flatten(1).norm(dim=1).min()) >= pairs.MIN_DIST


def test_init_pairs_rejects_unknown_mode():
    with pytest.raises(ValueError, match="plain, partial_random or noise"):
        pairs.init_pairs(torch.rand(4, 3), 2, mode="grid")


def test_separate_moves_identical_pairs_apart_inside_the_box():
    P = torch.cat([torch.zeros(3, 5), torch.zeros(3, 5)])
    P[:, 0] = 1.0  # corners of the box
    pairs.separate(P, generator=torch.Generator().manual_seed(0))
    a, b = pairs.split_pairs(P)
    assert float((a - b).norm(dim=1).min()) >= pairs.MIN_DIST
    assert float(P.min()) >= 0 and float(P.max()) <= 1


@settings(max_examples=8, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), m=st.integers(1, 6), steps=st.integers(1, 8),
       act=st.sampled_from(["relu", "sigmoid", "tanh"]))
def test_pair_ascent_never_lowers_a_quotient_and_stays_in_the_box(seed, m, steps, act):
    torch.manual_seed(seed)
    model = models.build({"arch": "fc", "sizes": [64, 16, 10], "activation": act})
    model.train()
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    P0 = pairs.init_pairs(x, m, generator=torch.Generator().manual_seed(seed))
    q0 = pairs.quotients(model, P0).detach()
    P, q = pairs.pair_ascent(model, P0, steps=steps)
    assert P.shape == P0.shape and q.shape == (m,)
    assert bool((q >= q0 - 1e-6).all())
    assert torch.allclose(q, pairs.quotients(model, P).detach(), rtol=1e-5)
    assert float(P.min()) >= 0 and float(P.max()) <= 1
    a, b = pairs.split_pairs(P)
    assert float((a - b).flatten(1).norm(dim=1).min()) > 0
    # the model is left as it was: training mode and trainable weights
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert P0.grad is None
