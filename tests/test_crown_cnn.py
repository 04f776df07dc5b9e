"""CROWN for CNNs (robustclip.bounds.crown): sound on random small CNNs, equal to the dense CROWN where both apply.

* Random small CNNs with BatchNorm, ReLU or MinMax, overlapping max pooling, average pooling, residual blocks and
  linear layers: every margin's CROWN lower bound is ≤ the margin (in float64, the arithmetic the certificate is
  for) at many random points and at PGD points of the ball ∩ [0,1], for L2 and L∞; ResNet-8 too.
* A conv-only net both CROWNs take: the same bounds to 1e-9.
* The max-pool relaxation against brute force on random intervals; BatchNorm folding reproduces the eval model.
* Batching over rows and samples does not change the bounds; radii from the largest down stay sound.
* The CLI end to end on an MNIST slice: certified ≤ attacked ≤ clean for a trained tiny CNN.
* A model it cannot take gets no certificate and a one-line reason.
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from tiny import run_cli
from torch import nn
from torch.nn import functional as F

from robustclip.bounds import certify
from robustclip.bounds.crown.engine import GraphCrown, _pool_relax
from robustclip.bounds.crown.ir import Node
from robustclip.bounds.crown.radii import certify_cells, graph_margins
from robustclip.bounds.crown.tracing import build_plan
from robustclip.errors import RobustclipError
from robustclip.models import specs as models
from robustclip.models.activations import GroupSort, MinMax
from robustclip.models.cifar import ResNet8


class Block(nn.Module):
    """A user's residual block: conv-BN-ReLU-conv-BN, ``out += x``, ReLU."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x
        return torch.relu(out)


def _random_bn(net: nn.Module, g: torch.Generator) -> nn.Module:
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=g))
            m.bias.data.copy_(0.4 * torch.rand(c, generator=g) - 0.2)
    return net.eval()


def small_cnn(kind: str, seed: int) -> nn.Module:
    """``(N, 1, 8, 8) -> (N, 3)``: conv+BN+act, overlapping max pool (3/2, padding 1), conv+act, avg pool, a
    residual block (``relu`` only), flatten, linear layers."""
    torch.manual_seed(seed)
    act = nn.ReLU if kind == "relu" else MinMax
    layers: list[nn.Module] = [nn.Conv2d(1, 4, 3, 1, 1), nn.BatchNorm2d(4), act(), nn.MaxPool2d(3, 2, 1),
                               nn.Conv2d(4, 6, 3, 1, 1), act(), nn.AvgPool2d(2)]
    if kind == "relu":
        layers.append(Block(6))
    else:
        layers.append(GroupSort(2))
    layers += [nn.Flatten(), nn.Linear(6 * 2 * 2, 8), nn.BatchNorm1d(8), act(), nn.Linear(8, 3)]
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.mul_(2.0)
    return _random_bn(net, torch.Generator().manual_seed(seed))


def _ball_points(x: torch.Tensor, eps: float, norm: str, k: int, g: torch.Generator) -> torch.Tensor:
    """``(k, N, ...)`` random points of the ball ∩ [0,1] around each sample (radius drawn uniformly)."""
    d = torch.randn(k, *x.shape, generator=g, dtype=torch.float64)
    r = torch.rand(k, x.shape[0], *([1] * (x.dim() - 1)), generator=g, dtype=torch.float64)
    if norm == "Linf":
        d = torch.sign(d) * torch.where(torch.rand(d.shape, generator=g, dtype=torch.float64) < 0.5, 1.0, r) * eps
    else:
        d = d / d.flatten(2).norm(dim=2).view(k, x.shape[0], *([1] * (x.dim() - 1))) * eps * r
    return (x.double().unsqueeze(0) + d).clamp(0, 1)


def _pgd_margin(net: nn.Module, x: torch.Tensor, y: torch.Tensor, j: int, eps: float, norm: str,
                steps: int = 40) -> torch.Tensor:
    """The smallest ``f_y − f_j`` PGD finds in the ball ∩ [0,1] (float64), ``(N,)``."""
    x = x.double()
    view = (-1, *([1] * (x.dim() - 1)))
    d = torch.zeros_like(x)
    best = torch.full((x.shape[0],), math.inf, dtype=torch.float64)
    for t in range(steps):
        d.requires_grad_(True)
        out = net((x + d).clamp(0, 1))
        gap = out.gather(1, y.view(-1, 1)).squeeze(1) - out[:, j]
        (grad,) = torch.autograd.grad(gap.sum(), d)
        with torch.no_grad():
            best = torch.minimum(best, gap.detach())
            step = 2.5 * eps / steps * (1 - t / steps)
            if norm == "L2":
                d = d - step * grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
                d = d * (eps / d.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1).view(view)
            else:
                d = (d - step * grad.sign()).clamp(-eps, eps)
            d = (x + d).clamp(0, 1) - x
    with torch.no_grad():
        out = net((x + d).clamp(0, 1))
        return torch.minimum(best, out.gather(1, y.view(-1, 1)).squeeze(1) - out[:, j])


def _assert_sound(net: nn.Module, shape: tuple[int, ...], eps: float, norm: str, seed: int) -> torch.Tensor:
    x = torch.rand(8, *shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        y = net(x).argmax(1)
    plan, why = build_plan(net, shape)
    assert plan is not None, why
    m = graph_margins(plan, x, y, eps, norm)
    net64 = net.double()
    try:
        pts = _ball_points(x, eps, norm, 300, torch.Generator().manual_seed(seed + 1))
        with torch.no_grad():
            out = net64(pts.flatten(0, 1)).view(300, x.shape[0], -1)
        gaps = out.gather(2, y.view(1, -1, 1).expand(300, -1, 1)) - out  # (k, N, K)
        worst = gaps.min(dim=0).values
        for j in range(m.shape[1]):
            worst[:, j] = torch.minimum(worst[:, j], _pgd_margin(net64, x, y, j, eps, norm))
    finally:
        net.float()
    real = m < math.inf
    assert bool((m[real] <= worst[real] + 1e-9).all()), float((m - worst)[real].max())
    return m


# --------------------------------------------------------------------------- soundness


@pytest.mark.parametrize("norm,eps", [("L2", 0.3), ("Linf", 0.04)])
@pytest.mark.parametrize("kind", ["relu", "minmax"])
@pytest.mark.parametrize("seed", [0, 1])
def test_margin_bounds_are_below_every_point_random_and_pgd_finds(kind, seed, norm, eps):
    m = _assert_sound(small_cnn(kind, seed), (1, 8, 8), eps, norm, seed)
    assert bool(torch.isfinite(m[m < math.inf]).all())


@pytest.mark.parametrize("norm,eps", [("L2", 0.2), ("Linf", 0.02)])
def test_resnet8_bounds_are_sound(norm, eps):
    torch.manual_seed(3)
    net = _random_bn(ResNet8(3, 4, (0.5,), (0.25,)), torch.Generator().manual_seed(3))
    m = _assert_sound(net, (1, 8, 8), eps, norm, 3)
    assert bool((m > 0).any()), "the bounds should not be vacuous at this radius"


class TwoSorts(nn.Module):
    """One conv read by MinMax (halves) and by GroupSort (neighbours): two pairings of the same node."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, 2, 1)
        self.mm, self.gs = MinMax(), GroupSort(2)
        self.fc = nn.Linear(4 * 4 * 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.fc((self.mm(h) + 2 * self.gs(h)).flatten(1))


@pytest.mark.parametrize("norm,eps", [("L2", 0.3), ("Linf", 0.04)])
def test_a_node_read_by_two_pairings_gets_both_relaxed(norm, eps):
    torch.manual_seed(6)
    _assert_sound(TwoSorts().eval(), (1, 8, 8), eps, norm, 6)


def test_the_bounds_equal_the_dense_crowns_on_a_net_both_take():
    torch.manual_seed(0)
    net = nn.Sequential(models.Normalize(0.5, 0.5), nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(3, 4, 3, stride=1, padding=1), nn.Tanh(), nn.Flatten(),
                        nn.Linear(64, 5), nn.ReLU(), nn.Linear(5, 3)).eval()
    x = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x).argmax(1)
    ops, _ = certify.logit_ops(net, (1, 8, 8))
    plan, _ = build_plan(net, (1, 8, 8))
    for norm, eps in [("Linf", 0.05), ("L2", 0.3)]:
        dense = certify.Crown(ops, x.flatten(1).double(), eps, norm, first_cheap=False).margins(y, 3)
        graph = GraphCrown(plan, x.double(), eps, norm, full=True).margins(y)
        real = dense < math.inf
        assert torch.equal(real, graph < math.inf)
        assert float((dense - graph)[real].abs().max()) < 1e-9, norm


def test_chunking_over_rows_and_samples_does_not_change_the_bounds():
    net = small_cnn("relu", 4)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y = net(x).argmax(1)
    plan, _ = build_plan(net, (1, 8, 8))
    big = graph_margins(plan, x, y, 0.3, "L2")
    small = graph_margins(plan, x, y, 0.3, "L2", batch_size=2, max_elems=3000)
    real = big < math.inf
    assert float((big - small)[real].abs().max()) < 1e-9


def test_radii_from_the_largest_down_certify_only_what_no_attack_breaks():
    net = small_cnn("relu", 5)
    x = torch.rand(24, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        y = net(x).argmax(1)
    plan, _ = build_plan(net, (1, 8, 8))
    cells = [("L2", e) for e in (0.05, 0.1, 0.2, 0.4)]
    got = certify_cells(plan, x, y, cells, torch.ones(24, dtype=torch.bool), {}, batch_size=10)
    for small, large in zip(cells, cells[1:]):
        assert bool((got[small] | ~got[large]).all()), "certified at a larger radius, so at a smaller one"
    net64 = net.double()
    try:
        for cell in cells:
            ok = got[cell]
            for j in range(3):
                gap = _pgd_margin(net64, x, y, j, cell[1], "L2")
                assert bool((gap[ok & (y != j)] > 0).all()), cell
    finally:
        net.float()
    assert bool(got[cells[0]].any()), "the certificates should not be vacuous"


# --------------------------------------------------------------------------- the pieces


def test_max_pool_relaxation_holds_against_brute_force_on_random_intervals():
    g = torch.Generator().manual_seed(0)
    for kernel, stride, pad in [(3, 2, 1), (2, 2, 0), (3, 1, 1), (2, 1, 0)]:
        mid = torch.randn(5, 2, 6, 6, generator=g, dtype=torch.float64)
        wid = torch.rand(5, 2, 6, 6, generator=g, dtype=torch.float64) * torch.where(
            torch.rand(5, 2, 6, 6, generator=g) < 0.5, 0.05, 1.5).double()
        l, u = mid - wid, mid + wid
        shape_out = F.max_pool2d(l, kernel, stride, pad).shape
        node = Node("maxpool", (0,), tuple(shape_out[1:]),
                    {"kernel": (kernel, kernel), "stride": (stride, stride), "padding": (pad, pad)})
        lo, hi, cst, open_ = _pool_relax(node, l, u)
        assert bool(((hi >= 0) == ~open_).all()) and bool((~open_).any()) and bool(open_.any())
        for _ in range(200):
            t = torch.rand(l.shape, generator=g, dtype=torch.float64)
            xs = l + t * (u - l)
            true = F.max_pool2d(xs, kernel, stride, pad)
            cols = F.unfold(F.pad(xs, (pad,) * 4, value=-math.inf), kernel, stride=stride)
            cols = cols.view(5, 2, kernel * kernel, *shape_out[2:])
            at_lo = cols.gather(2, lo.unsqueeze(2)).squeeze(2)
            assert bool(torch.isfinite(at_lo).all()), "the lower line picks a real input, never padding"
            assert bool((true >= at_lo).all())
            at_hi = cols.gather(2, hi.clamp_min(0).unsqueeze(2)).squeeze(2)
            assert bool((true[~open_] == at_hi[~open_]).all())
            assert bool((true[open_] <= cst[open_]).all())


def test_batchnorm_is_folded_into_the_layer_before_it_and_the_plan_reproduces_the_eval_model():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = _random_bn(nn.Sequential(
        nn.BatchNorm2d(1),  # nothing affine before it: its own per-channel map (never folded into the next conv)
        nn.Conv2d(1, 4, 3, 1, 1), nn.BatchNorm2d(4), nn.ReLU(),  # folded into the conv
        nn.Conv2d(4, 4, 3, 1, 1, bias=False), nn.ReLU(), nn.BatchNorm2d(4),  # after a ReLU: its own map
        nn.Flatten(), nn.Linear(4 * 8 * 8, 5), nn.BatchNorm1d(5), nn.Linear(5, 2)), g)
    plan, why = build_plan(net, (1, 8, 8))
    assert plan is not None, why
    assert [n.kind for n in plan.nodes] == ["input", "scale", "conv", "act", "conv", "act", "scale", "reshape",
                                            "linear", "linear"]
    x = torch.rand(16, 1, 8, 8, generator=g)
    with torch.no_grad():
        want = net.double()(x.double())
    net.float()
    got = plan.forward(x.double())
    assert float((want - got).abs().max()) < 1e-12


def test_models_with_their_own_forward_dropout_and_sequential_subclasses_are_taken():
    class MySequential(nn.Sequential):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
            return super().forward(x) * 20

    for net in (MySequential(nn.Linear(4, 3)), nn.Sequential(nn.Linear(4, 3), nn.Dropout(), nn.ReLU(),
                                                             nn.Linear(3, 2))):
        net.eval()
        plan, why = build_plan(net, (4,))
        assert plan is not None, why
        x = torch.rand(5, 4)
        with torch.no_grad():
            assert float((plan.forward(x.double()) - net(x).double()).abs().max()) < 1e-5


def test_routing_keeps_fully_connected_chains_on_the_dense_crown():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Sigmoid(), nn.Linear(8, 3)).eval()
    ops, plan, why = certify.crown_route(mlp, (1, 4, 4))
    assert ops is not None and plan is None and why is None
    for net in (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)),
                nn.Sequential(nn.Flatten(), nn.Linear(16, 8), MinMax(), nn.Linear(8, 3))):
        ops, plan, why = certify.crown_route(net.eval(), (1, 4, 4))
        assert ops is None and plan is not None


@pytest.mark.parametrize("net,words", [
    (nn.Sequential(nn.Conv2d(1, 3, 3), GroupSort(3), nn.Flatten(), nn.Linear(12, 2)), "groups of 3"),
    (nn.Sequential(nn.Flatten(), nn.Linear(16, 4), nn.LayerNorm(4), nn.Linear(4, 2)), "LayerNorm"),
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(2, 2)), "ceil"),
])
def test_a_model_it_cannot_take_gets_no_certificate_and_a_one_line_reason(net, words):
    net.eval()
    x = torch.rand(4, 1, 4, 4)
    y = torch.zeros(4, dtype=torch.long)
    res = certify.certify(net, x, y, [("L2", 0.1)])
    reason = res.info["reason"]
    assert words in reason and "\n" not in reason and len(reason) < 300
    assert not bool(res.best[("L2", 0.1)].any())
    with pytest.raises(RobustclipError) as err:
        certify.crown_margins(net, x, y, 0.1, "L2")
    assert words in str(err.value) and "\n" not in str(err.value)


# --------------------------------------------------------------------------- the command line on MNIST


SUITE = """\
name = "crown-cnn"
n = 40
batch_size = 40
seed = 0
certify = true

[eps]
L2 = [0.1, 0.3, 0.6]
Linf = [0.01]

[[attack]]
type = "clean"

[[attack]]
type = "pgd"
norm = "L2"
steps = 20

[[attack]]
type = "pgd"
norm = "Linf"
steps = 20
"""


@pytest.mark.data
def test_evaluate_certifies_a_trained_tiny_cnn_below_attacked_below_clean(tmp_path, data_dir):
    ckpt = tmp_path / "cnn.safetensors"
    rc, out, err = run_cli(["train", "--dataset", "mnist", "--model", "cnn", "--epochs", "1", "--n-train", "1500",
                            "--optimizer", "adam", "--lr", "0.002", "--out", ckpt, "--quiet", "--data-dir", data_dir])
    assert rc == 0, err
    (tmp_path / "suite.toml").write_text(SUITE, encoding="utf-8")
    rc, out, err = run_cli(["evaluate", ckpt, "--suite", tmp_path / "suite.toml", "--out", tmp_path / "ev",
                            "--quiet", "--data-dir", data_dir])
    assert rc == 0, err  # evaluate itself raises if a certified sample is broken by an attack
    f = pd.read_csv(tmp_path / "ev" / "results.csv")

    def acc(attack: str, norm: str | None = None, eps: float | None = None) -> float:
        rows = f[f.attack == attack]
        if norm is not None:
            rows = rows[(rows.norm == norm) & (rows.eps == eps)]
        return float(rows.accuracy.iloc[0])

    clean = acc("clean")
    assert clean > 0.5
    for norm, eps in [("L2", 0.1), ("L2", 0.3), ("L2", 0.6), ("Linf", 0.01)]:
        cert, crown, worst = acc("certified", norm, eps), acc("certified-crown", norm, eps), acc(
            "worst_case", norm, eps)
        assert crown <= cert <= worst <= clean, (norm, eps)
    assert acc("certified-crown", "L2", 0.1) > acc("certified-lipschitz", "L2", 0.1), \
        "CROWN should certify what the global Lipschitz margin cannot on a plainly trained CNN"
