"""Soundness of the Lipschitz upper bounds for convolutions at any size, pooling, BatchNorm and residual blocks.

Every bound must be at least the operator norm found by power iteration on the real operator (autograd), and at
least every sampled difference quotient, on random and on small trained nets. The residual blocks are written
here as people write them (torchvision-style BasicBlock and Bottleneck, PreAct blocks); torchvision is never
imported.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from robustclip.bounds import conv_norms, lower, structure, upper
from robustclip.bounds.graph import Unsupported, graph_upper_bound


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    from tiny import one_thread

    with one_thread():
        yield


def power_norm(f, shape: tuple[int, ...], iters: int = 200, seed: int = 0) -> float:
    """``σ_max`` of a linear map ``f`` on ``(1, *shape)`` by power iteration with autograd (a lower bound)."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn((1, *shape), generator=g, dtype=torch.float64)
    v /= v.norm()
    s = 0.0
    for _ in range(iters):
        x = v.clone().requires_grad_(True)
        y = f(x)
        s = float(y.detach().norm())
        (w,) = torch.autograd.grad(y, x, grad_outputs=y.detach())
        v = (w / w.norm().clamp_min(1e-300)).detach()
    return s


def jacobian_lower(model: nn.Module, shape: tuple[int, ...], n: int = 16, seed: int = 0) -> float:
    """The largest local Jacobian norm (power iteration) at random points: a lower bound on L2."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=g)
    model.eval()
    return float(lower.jacobian_spectral_norm(model, x, iters=30, generator=g).max())


def quotient_lower(model: nn.Module, shape: tuple[int, ...], norm: str = "L2", n: int = 256, seed: int = 0) -> float:
    """The largest sampled difference quotient ``||f(x)−f(x')|| / ||x−x'||`` over nearby random pairs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=g)
    d = torch.randn((n, *shape), generator=g) * 1e-2
    model.eval()
    with torch.no_grad():
        dy = (model(x + d) - model(x)).flatten(1)
    p = 2 if norm == "L2" else math.inf
    return float((dy.norm(p=p, dim=1) / d.flatten(1).norm(p=p, dim=1)).max())


# --------------------------------------------------------------------------- convolutions without a dense matrix


CONVS = [  # (c_in, c_out, kernel, stride, padding, dilation, groups, H, W)
    (3, 8, 3, 1, 1, 1, 1, 10, 10), (2, 4, 4, 2, 1, 1, 1, 12, 12), (3, 5, 3, 2, 1, 1, 1, 9, 7),
    (2, 3, 3, 1, 2, 2, 1, 8, 8), (4, 4, 5, 3, 2, 1, 1, 11, 11), (4, 6, 3, 1, 0, 1, 2, 7, 9),
    (1, 2, (1, 3), (1, 2), (0, 1), 1, 1, 5, 8), (3, 4, 1, 2, 0, 1, 1, 8, 8),
]


@pytest.mark.parametrize("cfg", CONVS)
def test_fft_conv_bound_is_at_least_the_true_norm(cfg):
    ci, co, k, s, p, d, g, h, w = cfg
    torch.manual_seed(0)
    conv = nn.Conv2d(ci, co, k, stride=s, padding=p, dilation=d, groups=g).double()
    bound, linf = conv_norms.conv_module_bounds(conv, (ci, h, w))
    true = power_norm(lambda x: F.conv2d(x, conv.weight, None, s, p, d, g), (ci, h, w))
    dense = conv_norms.dense_conv_l2(conv, (ci, h, w))
    assert bound >= true * (1 - 1e-9) and bound >= dense * (1 - 1e-9)
    assert dense == pytest.approx(true, rel=1e-3)  # the dense SVD is exact
    assert bound <= 2 * dense  # and the circular bound is not loose on these
    assert linf >= quotient_lower(nn.Sequential(conv.float()), (ci, h, w), "Linf")


def test_cifar_sized_conv_gets_a_bound_without_a_dense_matrix():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 32, 3, padding=1)
    assert 3 * 32 * 32 * 32 * 32 * 32 > structure.MAX_DENSE  # issue 21: about 10^8 entries
    up = upper.upper_bound(nn.Sequential(conv), (3, 32, 32))
    true = power_norm(lambda x: F.conv2d(x, conv.weight.double(), None, 1, 1), (3, 32, 32), iters=100)
    assert math.isfinite(up) and up >= true
    assert up <= 1.05 * true  # stride 1, 32x32: the circular bound is nearly exact


def test_mnist_models_keep_the_dense_path():
    """The paper's MLP and the small CNN stay on the dense path (tests/test_golden.py pins their values)."""
    from robustclip.models import specs as models

    for spec in (models.paper_spec(), {"arch": "cnn", "num_classes": 10}):
        assert structure.known_layers(models.build(spec))[0] is not None
    ups, _ = upper.upper_bounds(models.build(models.paper_spec()), (1, 28, 28))
    assert [u.method for u in ups] == ["layer_product", "layer_pair"]


# --------------------------------------------------------------------------- pooling


@pytest.mark.parametrize(("k", "s", "m"), [(3, 2, 4), (3, 1, 9), (2, 2, 1), (4, 2, 4), (3, 3, 1)])
def test_maxpool_constant_is_reached_by_one_pixel(k, s, m):
    pool = nn.Sequential(nn.MaxPool2d(k, s))
    b = graph_upper_bound(pool, (1, 12, 12))
    assert b.l2 == pytest.approx(math.sqrt(m)) and b.linf == pytest.approx(1.0)
    x = torch.zeros(1, 1, 12, 12)
    x[0, 0, 6, 6] = 0.5  # a pixel every overlapping window holds
    q = float(pool(x).norm() / x.norm())
    assert q == pytest.approx(math.sqrt(m))


@pytest.mark.parametrize("pool", [nn.MaxPool2d(3, 2, padding=1), nn.MaxPool2d(3, 2, ceil_mode=True),
                                  nn.MaxPool2d(2, 1, dilation=2), nn.AdaptiveMaxPool2d((3, 4)),
                                  nn.MaxPool1d(3, 2)])
def test_maxpool_variants_are_sound(pool):
    shape = (2, 11) if isinstance(pool, nn.MaxPool1d) else (2, 11, 10)
    b = graph_upper_bound(nn.Sequential(pool), shape)
    assert b.l2 >= quotient_lower(nn.Sequential(pool), shape) and b.linf >= 1 - 1e-9


@pytest.mark.parametrize("pool", [nn.AvgPool2d(2), nn.AvgPool2d(3, 2, padding=1, count_include_pad=False),
                                  nn.AvgPool2d(3, 1, padding=1, ceil_mode=True), nn.AdaptiveAvgPool2d((3, 4)),
                                  nn.AdaptiveAvgPool2d(1), nn.AvgPool1d(3, 2, padding=1, count_include_pad=False)])
def test_avgpool_bound_is_at_least_the_true_norm(pool):
    shape = (1, 11) if isinstance(pool, nn.AvgPool1d) else (1, 11, 10)
    b = graph_upper_bound(nn.Sequential(pool), shape)
    true = power_norm(pool, shape)
    assert b.l2 >= true * (1 - 1e-9)
    if isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size == 1:
        assert b.l2 == pytest.approx(1 / math.sqrt(110))  # the global mean: exact
    assert b.linf >= quotient_lower(nn.Sequential(pool), shape, "Linf")


# --------------------------------------------------------------------------- BatchNorm and residual blocks


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if hasattr(self, "shortcut") else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class Net(nn.Module):
    def __init__(self, block: type, widths: tuple[int, ...] = (8, 16), classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            layers.append(block(cin, w, 1 if i == 0 else 2))
            cin = w * block.expansion
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.stem(x)))
        out = self.layers(out)
        return self.fc(self.drop(torch.flatten(self.pool(out), 1)))


def _randomise_bn(net: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.1)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
    return net.eval()


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck, PreActBlock])
def test_single_block_bound_is_at_least_the_norm_of_the_linearised_block(block):
    torch.manual_seed(0)
    b = _randomise_bn(block(4, 4, 2) if block is not Bottleneck else block(4, 2, 2))
    shape = (4, 8, 8)
    bound = graph_upper_bound(b, shape)
    assert bound.l2 >= jacobian_lower(b, shape) and bound.l2 >= quotient_lower(b, shape)
    assert bound.linf >= quotient_lower(b, shape, "Linf")


def test_residual_bound_is_the_sum_of_shortcut_and_branch():
    """A linear block ``x -> x + conv(x)``: the bound is 1 + ||conv||, not a product."""
    class Lin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv(x)

    torch.manual_seed(0)
    m = Lin()
    b = graph_upper_bound(m, (2, 6, 6))
    conv = conv_norms.dense_conv_l2(m.conv, (2, 6, 6))
    assert b.l2 == pytest.approx(1 + conv)
    assert b.l2 >= power_norm(lambda x: m.double()(x), (2, 6, 6))


def test_batchnorm_is_folded_only_after_a_conv():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    bn = _randomise_bn(nn.Sequential(nn.BatchNorm2d(3)))[0]
    folded = graph_upper_bound(nn.Sequential(conv, bn).eval(), (2, 6, 6)).l2
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    w = conv.weight.detach() * scale.view(-1, 1, 1, 1)
    assert folded == pytest.approx(conv_norms.dense_conv_l2(conv, (2, 6, 6), w), rel=1e-6)
    conv2 = nn.Conv2d(3, 2, 3, padding=1, bias=False)
    pre = graph_upper_bound(nn.Sequential(bn, nn.ReLU(), conv2).eval(), (3, 6, 6)).l2  # pre-activation: a scale
    assert pre == pytest.approx(float(scale.abs().max()) * conv_norms.dense_conv_l2(conv2, (3, 6, 6)), rel=1e-6)


def test_batchnorm_after_a_linear_on_sequences_is_not_folded_over_the_wrong_axis():
    """``Linear`` on ``(N, C, L)`` acts on L; a BatchNorm1d after it scales C: folding would be wrong."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 5), _randomise_bn(nn.Sequential(nn.BatchNorm1d(3)))[0]).eval()
    b = graph_upper_bound(net, (3, 5))
    assert b.l2 >= jacobian_lower(net, (3, 5)) * (1 - 1e-6) and b.l2 >= quotient_lower(net, (3, 5))


def test_channel_normalisation_that_broadcasts_counts_the_copies():
    from robustclip.models.cifar import ChannelNormalize

    net = nn.Sequential(ChannelNormalize([0.5, 0.5, 0.5], [0.25, 0.25, 0.25]))
    assert graph_upper_bound(net, (3, 4, 4)).l2 == pytest.approx(4.0)
    with pytest.raises(Unsupported, match="broadcasts"):
        graph_upper_bound(net, (1, 4, 4))  # one grey channel copied to three


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck, PreActBlock])
def test_whole_resnets_are_sound_random_and_trained(block):
    torch.manual_seed(0)
    net = _randomise_bn(Net(block, widths=(4, 8)))
    shape = (3, 16, 16)
    b = graph_upper_bound(net, shape)
    assert math.isfinite(b.l2) and b.l2 >= jacobian_lower(net, shape) and b.l2 >= quotient_lower(net, shape)
    assert b.linf >= quotient_lower(net, shape, "Linf")
    # a few steps of training on synthetic data (BatchNorm statistics move), then eval
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(64, *shape, generator=g), torch.randint(0, 10, (64,), generator=g)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    net.train()
    for _ in range(10):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    b = graph_upper_bound(net, shape)
    assert b.l2 >= jacobian_lower(net, shape) and b.l2 >= quotient_lower(net, shape)
    assert b.l2 >= lower.lower_bound_quotient(net, x[:16], pairs=8, steps=10)
    assert upper.upper_bound(net, shape) == pytest.approx(b.l2)  # the public API takes the graph path


# --------------------------------------------------------------------------- what is refused


class _Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # a branch on the data: torch.fx cannot trace it
            return self.fc(x)
        return -self.fc(x)


class _Doubles(nn.Module):
    """``out`` is doubled in place after a later node's input was taken from it (an aliasing trick)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(x)
        keep = out
        out.mul_(3.0)
        return keep + x


def _hooked() -> nn.Module:
    m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    m[0].register_forward_hook(lambda mod, i, o: o * 10)
    return m


@pytest.mark.parametrize(("make", "words"), [
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)), "LayerNorm"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4, track_running_stats=False)), "running statistics"),
    (lambda: _Branchy(), "traced"),
    (lambda: _Doubles(), "in place"),
    (_hooked, "hooks"),
    (lambda: nn.Sequential(nn.Unflatten(1, (1, 2, 2)), nn.Conv2d(1, 1, 3, padding=1, padding_mode="reflect"),
                           nn.MaxPool2d(2)), "reflect"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.GELU()), "GELU"),
])
def test_models_not_understood_get_no_bound_with_the_reason(make, words):
    torch.manual_seed(0)
    with pytest.raises(Unsupported, match=words):
        graph_upper_bound(make(), (4,))
    ups, reason = upper.upper_bounds(make(), (4,))
    assert ups == [] and reason and words in reason
