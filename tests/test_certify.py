"""Soundness of the Lipschitz upper bounds and the per-sample certificates, against exhaustive checks.

* Tiny nets on 2-D inputs: the largest Jacobian norm on a dense grid (the
  true constant, up to the grid) is ≤ every upper bound, and each class-pair
  constant bounds the grid slopes of ``f_y − f_j``; a point certified at ε
  has no grid point in its ball (∩ [0,1]²) of another class, and CROWN's
  margin bounds are ≤ the margins at every grid point of the ball.
* The relaxations and the L2-ball-∩-box bound are sound on random cases.
* Upper bound ≥ every quotient any ascent finds; certified ≤ attacked per
  sample on an MNIST slice (evaluate raises if not); a wrong bound raises.
* Models whose structure is not understood get no upper bound and no
  certificate, but still get lower bounds.
"""

from __future__ import annotations

import math
import sys
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from robustclip.attacks.suites import parse_suite
from robustclip.bounds import certify, lipschitz, lipsdp, lower, relaxations, structure, upper
from robustclip.errors import RobustclipError, SuiteError
from robustclip.evaluation.runner import evaluate
from robustclip.evaluation.summary import InvariantError
from robustclip.models import specs as models

ACTS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "leaky": lambda: nn.LeakyReLU(0.1)}


def tiny_net(act: str, seed: int, *, width: int = 12, k: int = 3, scale: float = 3.0) -> nn.Sequential:
    """``(N, 2) -> (N, k)``: Linear-act-Linear-act-Linear with weights scaled up so the function bends."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(2, width), ACTS[act](), nn.Linear(width, width), ACTS[act](), nn.Linear(width, k))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.mul_(scale)
    return net.eval()


def grid(n: int = 201) -> torch.Tensor:
    """A dense grid on [0,1]² as ``(n², 2)``."""
    t = torch.linspace(0, 1, n)
    return torch.stack(torch.meshgrid(t, t, indexing="ij"), -1).view(-1, 2)


# --------------------------------------------------------------------------- structure


class Times20(nn.Module):
    """Children look known (Linear, ReLU) but forward multiplies the input by 20."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(20 * x))


class MySequential(nn.Sequential):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x) * 20


def test_a_module_with_its_own_forward_is_bounded_through_its_traced_graph():
    """Issue 21: its own forward is traced (torch.fx), so the ×20 counts; the children alone would give a bound
    20 times too small. Its certificates come from the graph CROWN (issue 25), which sees the ×20 too: no
    certified sample changes class at random points of its ball."""
    torch.manual_seed(0)
    m = Times20()
    layers, why = structure.known_layers(m)
    assert layers is None and "Times20" in why
    ups, reason = upper.upper_bounds(m, (4,))
    assert reason is None and [u.method for u in ups] == ["graph_product"]
    sigma = float(torch.linalg.matrix_norm(m.fc.weight.detach().double(), ord=2))
    assert ups[0].value == pytest.approx(20 * sigma)
    x = torch.rand(32, 4, generator=torch.Generator().manual_seed(0))
    rep = lipschitz.estimate(m, x, pairs=8, steps=10)
    assert rep.upper == pytest.approx(20 * sigma)
    assert 0 < rep.lower <= rep.upper * (1 + 1e-6)  # one linear layer: the float32 ascent reaches it, to rounding
    child = upper.upper_bound(nn.Sequential(m.fc, m.act), (4,))
    assert rep.lower > child, "the true constant is 20x the children's bound"
    with torch.no_grad():
        y = m(x).argmax(1)
    res = certify.certify(m, x, y, [("L2", 0.1)], prefilter=0)
    assert "reason" not in res.info
    ok = res.per_method["crown"][("L2", 0.1)]
    d = torch.randn(200, *x.shape, generator=torch.Generator().manual_seed(1))
    d = 0.1 * d / d.flatten(2).norm(dim=2).unsqueeze(-1)
    with torch.no_grad():
        pred = m((x + d).clamp(0, 1).flatten(0, 1)).view(200, 32, -1)
    ties = pred.max(-1).values.unsqueeze(-1) == pred  # a ReLU output of 0 for several classes: argmax by index
    assert bool((ties.gather(2, y.view(1, -1, 1).expand(200, -1, 1)).squeeze(-1) | ~ok).all())


@pytest.mark.parametrize("model", [
    pytest.param(nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1)), id="softmax"),
    pytest.param(nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3)), id="layernorm"),
    pytest.param(nn.Sequential(nn.Flatten(0), nn.Linear(4, 3)), id="flatten-dim0"),
])
def test_unknown_structures_are_refused_with_a_reason(model):
    """Neither the dense chain nor the graph CROWN takes them (a subclass of nn.Sequential and Dropout in eval mode
    are now certified through the graph: tests/test_crown_cnn.py)."""
    layers, why = structure.known_layers(model)
    assert layers is None and why
    x = torch.rand(6, 4)
    res = certify.certify(model, x, torch.zeros(6, dtype=torch.long), [("L2", 0.1)])
    assert res.info["reason"] and not bool(res.best[("L2", 0.1)].any())


def test_forward_hooks_make_a_model_not_understood():
    net = nn.Sequential(nn.Linear(4, 3))
    net[0].register_forward_hook(lambda mod, inp, out: out * 20)
    assert structure.known_layers(net)[0] is None


def test_nested_sequential_of_known_layers_is_understood():
    net = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(4, 5), nn.Tanh()), nn.Identity(),
                        nn.Sequential(nn.Sequential(nn.Linear(5, 3))))
    layers, why = structure.known_layers(net)
    assert why is None and [type(m).__name__ for _, m in layers] == ["Flatten", "Linear", "Tanh", "Identity", "Linear"]
    W1, W2 = net[1][0].weight.detach().double(), net[3][0][0].weight.detach().double()
    want = float(torch.linalg.matrix_norm(W1, ord=2) * torch.linalg.matrix_norm(W2, ord=2))
    assert upper.upper_bound(net, (4,)) == pytest.approx(want, rel=1e-9)


def test_evaluate_gives_no_certified_rows_for_a_model_it_does_not_understand():
    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x) * self.net(x)  # a product of two input-dependent tensors: no bound understands it

    torch.manual_seed(0)
    m = Wrapped()
    x = torch.rand(20, 1, 4, 4)
    with torch.no_grad():
        y = m(x).argmax(1)
    s = parse_suite({"eps": {"L2": [0.1]}, "certify": True,
                     "attack": [{"type": "clean"}, {"type": "pgd", "norm": "L2", "steps": 3}]})
    res = evaluate(m, x, y, suite=s, progress=False, sanity=False)
    assert "certified" not in set(res.frame.attack)
    assert "input-dependent" in res.lipschitz["reason"]


# --------------------------------------------------------------------------- upper bounds on exhaustive grids


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh", "leaky"])
@pytest.mark.parametrize("seed", [0, 1])
def test_grid_lipschitz_constant_is_below_every_upper_bound(act, seed):
    net = tiny_net(act, seed)
    g = grid(101)
    J = torch.func.vmap(torch.func.jacrev(lambda v: net(v.unsqueeze(0)).squeeze(0)))(g).detach().double()  # (n, k, 2)
    true = float(torch.linalg.matrix_norm(J, ord=2).max())
    ups, reason = upper.upper_bounds(net, (2,), sdp=True)
    assert reason is None
    methods = {u.method: u for u in ups}
    assert set(methods) == {"layer_product", "layer_pair", "lipsdp"}
    for u in ups:
        assert math.isfinite(u.value) and u.value >= true * (1 - 1e-9), (u.method, u.value, true)
        assert u.seconds >= 0 and u.assumptions
    assert methods["layer_pair"].value <= methods["layer_product"].value * (1 + 1e-12)
    # per class pair: the grid slope of f_y - f_j is below L_yj
    pairs = upper.best_pairs(ups)
    for y in range(3):
        for j in range(3):
            if y != j:
                slope = float((J[:, y] - J[:, j]).norm(dim=1).max())
                assert slope <= pairs[y, j] * (1 + 1e-9), (y, j, slope, float(pairs[y, j]))
    assert float(pairs.max()) <= math.sqrt(2) * min(u.value for u in ups) * (1 + 1e-9)


@settings(max_examples=6, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), act=st.sampled_from(["relu", "sigmoid", "tanh"]),
       width=st.integers(2, 10), scale=st.floats(0.5, 4.0))
def test_upper_bound_is_above_every_quotient_any_ascent_finds(seed, act, width, scale):
    net = tiny_net(act, seed, width=width, scale=scale)
    x = torch.rand(16, 2, generator=torch.Generator().manual_seed(seed))
    ups, _ = upper.upper_bounds(net, (2,))
    best_up = min(u.value for u in ups)
    lows = lower.lower_bounds(net, x, seed=seed, budget="quick", pairs=8, steps=10)
    assert set(lows) == {"jacobian_data", "jacobian_ascent", "quotient_data", "quotient_jacobian"}
    for name, v in lows.items():
        assert 0 <= v <= best_up * (1 + 1e-6), (name, v, best_up)
    q = lower.lower_bound_quotient(net, x, pairs=8, steps=20, seed=seed)
    assert q <= best_up * (1 + 1e-6)


@settings(max_examples=12, deadline=None, derandomize=True)
@given(m=st.integers(1, 40), n=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_gram_iteration_never_falls_below_the_spectral_norm(m, n, seed):
    A = torch.randn(m, n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    true = float(torch.linalg.matrix_norm(A, ord=2))
    bound = upper.gram_spectral_bound(A)
    assert true <= bound <= true * (1 + 1e-3)


def test_lipsdp_without_cvxpy_falls_back_with_a_reason(monkeypatch):
    monkeypatch.setitem(sys.modules, "cvxpy", None)  # import cvxpy now raises ImportError
    ups, reason = upper.upper_bounds(tiny_net("sigmoid", 0), (2,), sdp=True)
    methods = {u.method: u for u in ups}
    assert reason is None and "cvxpy is not installed" in methods["lipsdp"].assumptions
    assert methods["lipsdp"].value == math.inf and math.isfinite(methods["layer_pair"].value)
    rep = lipschitz.estimate(tiny_net("sigmoid", 0), torch.rand(8, 2), pairs=4, steps=3, sdp=True)
    assert rep.upper_method in ("layer_product", "layer_pair") and math.isfinite(rep.upper)


def test_lipsdp_verification_rejects_bad_multipliers():
    net = tiny_net("relu", 0)
    ops, _ = structure.affine_ops(net, (2,))
    mats, _, _ = structure._chain(ops)
    Ws, last = mats[:-1], mats[-1]
    ones = [torch.ones(W.shape[0], dtype=torch.float64) for W in Ws]
    zeros = [torch.zeros(W.shape[0], dtype=torch.float64) for W in Ws]
    assert lipsdp.lipsdp_verify(Ws, zeros, ones, zeros, last) is None  # t = 0 cannot make M ⪯ 0
    L, _, info = lipsdp.lipsdp(ops)
    assert info["verified_rho"] >= info["solver_rho"] * (1 - 1e-6)
    assert L == pytest.approx(math.sqrt(info["verified_rho"]))


# --------------------------------------------------------------------------- relaxations and the input domain


@settings(max_examples=60, deadline=None, derandomize=True)
@given(act=st.sampled_from(["relu", "sigmoid", "tanh", "leaky"]), l=st.floats(-12, 12), w=st.floats(0, 15))
def test_relaxation_lines_bound_the_activation_on_the_interval(act, l, w):
    f = ACTS[act]()
    lo = torch.tensor([[l]], dtype=torch.float64)
    hi = lo + w
    aL, bL, aU, bU = relaxations.relax(f, lo, hi)
    z = torch.linspace(l, l + w, 2001, dtype=torch.float64).view(1, -1)
    fz = f(z)
    assert bool((aL * z + bL <= fz + 1e-12).all())
    assert bool((aU * z + bU >= fz - 1e-12).all())


@settings(max_examples=25, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), d=st.integers(1, 12), eps=st.floats(0.01, 2.0), norm=st.sampled_from(["L2", "Linf"]))
def test_concretized_lower_bound_is_below_sampled_points_of_the_ball_in_the_box(seed, d, eps, norm):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(1, 3, d, generator=g, dtype=torch.float64)
    c = torch.randn(1, 3, generator=g, dtype=torch.float64)
    x0 = (torch.rand(1, d, generator=g, dtype=torch.float64) * 1.4 - 0.2).clamp(0, 1)  # some pixels at 0 or 1
    low = relaxations.concretize_lower(A, c, x0, eps, norm)
    u = torch.randn(4000, d, generator=g, dtype=torch.float64)
    if norm == "L2":
        u = u / u.norm(dim=1, keepdim=True) * eps * torch.rand(4000, 1, generator=g, dtype=torch.float64) ** (1 / d)
    else:
        u = (torch.rand(4000, d, generator=g, dtype=torch.float64) * 2 - 1) * eps
    pts = (x0 + u).clamp(0, 1)  # clipping keeps a point in the ball (each coordinate moves toward x0)
    vals = pts @ A[0].T + c[0]
    assert bool((low[0] <= vals.min(0).values + 1e-9).all())
    if norm == "L2":  # never looser than the plain ball bound
        ball = (A[0] @ x0[0] + c[0]) - eps * A[0].norm(dim=1)
        assert bool((low[0] >= ball - 1e-9).all())


@settings(max_examples=20, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), d=st.integers(1, 12), eps=st.floats(0.01, 2.0), norm=st.sampled_from(["L2", "Linf"]))
def test_fast_first_layer_bounds_contain_every_sampled_point(seed, d, eps, norm):
    g = torch.Generator().manual_seed(seed)
    aff = structure.Affine(torch.randn(5, d, generator=g, dtype=torch.float64),
                           torch.randn(5, generator=g, dtype=torch.float64))
    x0 = (torch.rand(1, d, generator=g, dtype=torch.float64) * 1.4 - 0.2).clamp(0, 1)
    lo, hi = certify._first_layer_bounds(aff, x0, eps, norm)
    u = torch.randn(3000, d, generator=g, dtype=torch.float64)
    if norm == "L2":
        u = u / u.norm(dim=1, keepdim=True) * eps * torch.rand(3000, 1, generator=g, dtype=torch.float64) ** (1 / d)
    else:
        u = (torch.rand(3000, d, generator=g, dtype=torch.float64) * 2 - 1) * eps
    z = (x0 + u).clamp(0, 1) @ aff.W.T + aff.b
    assert bool((z >= lo - 1e-9).all()) and bool((z <= hi + 1e-9).all())
    assert bool((lo <= hi).all())


# --------------------------------------------------------------------------- certificates on exhaustive grids


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh", "leaky"])
@pytest.mark.parametrize("norm", ["L2", "Linf"])
def test_certified_points_have_no_grid_point_of_another_class_in_their_ball(act, norm):
    net = tiny_net(act, 3)
    g = grid(201)
    with torch.no_grad():
        out = net(g).double()
    cls = out.argmax(1)
    centres = torch.rand(60, 2, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        y = net(centres).argmax(1)
    certified = 0
    for eps in (0.02, 0.05, 0.1):
        m = certify.crown_margins(net, centres, y, eps, norm)
        ok = (m > certify.MARGIN_TOL).all(1)
        for i in range(centres.shape[0]):
            diff = g - centres[i]
            dist = diff.norm(dim=1) if norm == "L2" else diff.abs().max(dim=1).values
            inside = dist <= eps
            # the margin bounds hold at every grid point of the ball
            gap = out[inside, y[i]].unsqueeze(1) - out[inside]
            for j in range(3):
                if j != int(y[i]):
                    assert float(m[i, j]) <= float(gap[:, j].min()) + 1e-6, (i, j, eps)
            if bool(ok[i]):
                certified += 1
                assert bool((cls[inside] == y[i]).all()), f"certified point {i} at {norm} ε={eps} has a flip"
    assert certified > 20, "the check should not be vacuous"
    # the Lipschitz certificate is sound too
    ups, _ = upper.upper_bounds(net, (2,))
    res = certify.certify(net, centres, y, [(norm, 0.05)], methods=("lipschitz",), uppers=ups)
    r = 0.05 if norm == "L2" else 0.05 * math.sqrt(2)
    for i in res.per_method["lipschitz"][(norm, 0.05)].nonzero().flatten().tolist():
        inside = (g - centres[i]).norm(dim=1) <= r
        assert bool((cls[inside] == y[i]).all())


def test_certified_radius_is_below_the_distance_to_any_grid_point_of_another_class():
    net = tiny_net("sigmoid", 5)
    g = grid(201)
    with torch.no_grad():
        cls = net(g).argmax(1)
    centres = torch.rand(8, 2, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        y = net(centres).argmax(1)
    for norm in ("L2", "Linf"):
        rad = certify.certified_radius(net, centres, y, norm, hi=1.0, steps=8)
        assert bool((rad > 0).any())
        for i in range(centres.shape[0]):
            diff = g[cls != y[i]] - centres[i]
            if diff.numel():
                dist = diff.norm(dim=1) if norm == "L2" else diff.abs().max(dim=1).values
                assert float(rad[i]) <= float(dist.min()) + 1e-9, (norm, i)


def test_conv_net_certificates_hold_against_an_attack():
    torch.manual_seed(0)
    net = nn.Sequential(models.Normalize(0.5, 0.5), nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(3, 4, 3, stride=1, padding=1), nn.Tanh(), nn.Flatten(),
                        nn.Linear(4 * 4 * 4, 3)).eval()
    x = torch.rand(30, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = net(x).argmax(1)
    m = certify.crown_margins(net, x, y, 0.3, "L2")
    # PGD on each margin: the attained margin is never below the certified lower bound
    for j in range(3):
        d = torch.zeros_like(x, requires_grad=True)
        for _ in range(50):
            out = net((x + d).clamp(0, 1))
            gap = out.gather(1, y.view(-1, 1)).squeeze(1) - out[:, j]
            (gr,) = torch.autograd.grad(gap.sum(), d)
            with torch.no_grad():
                d -= 0.03 * gr / gr.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                d *= (0.3 / d.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1).view(-1, 1, 1, 1)
        with torch.no_grad():
            out = net((x + d).clamp(0, 1)).double()
            gap = out.gather(1, y.view(-1, 1)).squeeze(1) - out[:, j]
        keep = y != j
        assert bool((m[keep, j] <= gap[keep] + 1e-5).all())
    assert bool(torch.isfinite(m[m < math.inf]).all())


def test_certify_rejects_bad_input():
    net = tiny_net("relu", 0)
    x = torch.rand(4, 2)
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(RobustclipError, match="norm"):
        certify.crown_margins(net, x, y, 0.1, "L1")
    with pytest.raises(RobustclipError, match="ε"):
        certify.crown_margins(net, x, y, float("nan"), "L2")
    with pytest.raises(RobustclipError, match="\\[0,1\\]"):
        certify.crown_margins(net, x + 2, y, 0.1, "L2")
    with pytest.raises(RobustclipError, match="method"):
        certify.certify(net, x, y, [("L2", 0.1)], methods=("magic",))


# --------------------------------------------------------------------------- MNIST: certified ≤ attacked, per sample


@pytest.fixture(scope="module")
def mnist_model(data_dir):
    from robustclip.data import datasets as data
    from robustclip.training.config import TrainConfig
    from robustclip.training.trainer import train

    full = data.load("mnist", "train", data_dir=data_dir)
    val = data.Split(full.x[-300:], full.y[-300:], "mnist", "train", "test-slice")
    cfg = TrainConfig(dataset="mnist", reg="none", epochs=1, model={"arch": "fc", "sizes": [784, 32, 10],
                      "activation": "sigmoid"}, optimizer="adam", lr=0.003, batch_size=64, lip_probe_pairs=0)
    model = train(cfg, progress=False, splits=(full.subset(2000), val)).model.eval()
    test = data.load("mnist", "test", data_dir=data_dir).subset(60)
    return model, test.x, test.y


CERT_SUITE = {
    "name": "cert-test", "batch_size": 60, "seed": 0, "certify": True,
    "eps": {"L2": [0.1, 0.25, 0.5, 1.0], "Linf": [0.01, 0.03]},
    "attack": [{"type": "clean"}, {"type": "pgd", "norm": "L2", "steps": 30},
               {"type": "apgd", "norm": "L2", "steps": 30}, {"type": "pgd", "norm": "Linf", "steps": 30}],
}


def test_no_certified_sample_is_broken_by_any_attack_of_the_suite(mnist_model):
    model, x, y = mnist_model
    s = parse_suite(CERT_SUITE)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate(model, x, y, suite=s, progress=False, sanity=False)  # raises InvariantError if broken
    f = res.frame
    methods = {a for a in f.attack if a.startswith("certified")}
    assert methods == {"certified", "certified-lipschitz", "certified-crown"}
    clean = res.correct[("clean", None, None)]
    for (norm, eps) in s.grid():
        worst = res.accuracy("worst_case", norm, eps)
        best = res.accuracy("certified", norm, eps)
        per = [res.accuracy(f"certified-{m}", norm, eps) for m in ("lipschitz", "crown")]
        assert max(per) <= best <= worst <= res.accuracy("clean"), (norm, eps)
    assert not bool((res.correct[("pgd", "L2", 1.0)] & ~clean).any())
    assert res.accuracy("certified", "L2", 0.1) > 0.3, "certificates should not be vacuous"
    assert res.accuracy("certified-crown", "L2", 0.25) >= res.accuracy("certified-lipschitz", "L2", 0.25)


def test_certified_samples_are_checked_per_sample_against_attacks(mnist_model):
    model, x, y = mnist_model
    cells = [("L2", 0.5), ("Linf", 0.03)]
    res = certify.certify(model, x, y, cells)
    s = parse_suite(CERT_SUITE)
    from robustclip.evaluation.attacking import run_attack

    for norm, eps in cells:
        for spec in s.grid()[(norm, eps)]:
            ok, _ = run_attack(model, spec, x, y, n_classes=10, seed=3, batch_size=60)
            assert not bool((res.best[(norm, eps)] & ~ok).any()), (spec.label, norm, eps)
    assert bool(res.best[("L2", 0.5)].any())


def test_a_wrong_bound_breaks_the_invariant_and_raises(mnist_model):
    model, x, y = mnist_model
    s = parse_suite({"eps": {"L2": [1.0]}, "attack": [{"type": "clean"}, {"type": "pgd", "norm": "L2", "steps": 20}]})
    with pytest.raises(InvariantError, match="certified by lipschitz"):
        evaluate(model, x, y, suite=s, progress=False, sanity=False, lip_upper=1e-6)


def test_certify_argument_and_suite_key_choose_the_rows(mnist_model):
    model, x, y = mnist_model
    base = {"eps": {"L2": [0.1]}, "attack": [{"type": "clean"}, {"type": "pgd", "norm": "L2", "steps": 3}]}
    off = evaluate(model, x[:20], y[:20], suite=parse_suite({**base, "certify": False}), progress=False, sanity=False)
    assert not any(a.startswith("certified") for a in off.frame.attack)
    default = evaluate(model, x[:20], y[:20], suite=parse_suite(base), progress=False, sanity=False)
    assert set(a for a in default.frame.attack if a.startswith("certified")) == {"certified"}
    crown = evaluate(model, x[:20], y[:20], suite=parse_suite(base), progress=False, sanity=False, certify=("crown",))
    assert set(a for a in crown.frame.attack if a.startswith("certified")) == {"certified", "certified-crown"}


def test_an_attack_that_skips_certified_samples_counts_them_robust_and_keeps_every_certificate(mnist_model):
    model, x, y = mnist_model
    raw = {**CERT_SUITE, "cascade": True, "eps": {"L2": [0.1, 0.5, 1.0]},
           "attack": [{"type": "clean"}, {"type": "pgd", "norm": "L2", "steps": 10},
                      {"type": "apgd", "norm": "L2", "steps": 10}, {"type": "pgd", "label": "pgd-late", "norm": "L2",
                                                                   "steps": 10}]}
    skipping = parse_suite({**raw, "certify": {"methods": ["lipschitz", "crown"], "skip_certified": ["apgd-ce"]}})
    assert skipping.skip_certified == ("apgd-ce",)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        skip = evaluate(model, x, y, suite=skipping, progress=False, sanity=False)
        full = evaluate(model, x, y, suite=skipping, progress=False, sanity=False, attack_certified=True)
    assert skip.meta["skip_certified"] == ["apgd-ce"] and full.meta["skip_certified"] == []
    assert "apgd-ce skipped samples a certificate proves robust" in skip.meta["cascade_note"]
    skipped_any = False
    for eps in (0.1, 0.5, 1.0):
        key = ("apgd-ce", "L2", eps)
        log, log_full = (r.meta["attack_batches"][f"apgd-ce|L2|{eps}"] for r in (skip, full))
        cert = skip.samples.query("norm == 'L2' and eps == @eps").sort_values("sample").certified.to_numpy()
        cert = torch.tensor(cert)
        pgd_ok = skip.correct[("pgd", "L2", eps)]
        # the samples left out are the certified ones PGD left robust; they count as robust in the row
        assert log["certified_skipped"] == int((cert & pgd_ok).sum())
        assert log["samples"] + log["certified_skipped"] == log_full["samples"]
        assert not bool((cert & pgd_ok & ~skip.correct[key]).any())
        skipped_any |= log["certified_skipped"] > 0
        # the certificates are the same either way, and no attack broke a certified sample in the full run
        assert skip.accuracy("certified", "L2", eps) == full.accuracy("certified", "L2", eps), eps
        assert not bool((cert & ~full.correct[key]).any())
        # an attack listed after the skipping one attacks every survivor again
        assert "certified_skipped" not in skip.meta["attack_batches"][f"pgd-late|L2|{eps}"]
    assert skipped_any, "the test model should certify some samples"
    assert "certified_skipped" not in full.meta["attack_batches"]["apgd-ce|L2|0.1"]


# --------------------------------------------------------------------------- suite key and figure


@pytest.mark.parametrize("value,methods,sdp", [
    (True, ("lipschitz", "crown"), False),
    (False, (), False),
    ({"methods": ["crown"]}, ("crown",), False),
    ({"methods": ["lipschitz"], "sdp": True}, ("lipschitz",), True),
])
def test_suite_certify_key_parses(value, methods, sdp):
    s = parse_suite({"eps": {"L2": [0.5]}, "certify": value, "attack": [{"type": "pgd", "norm": "L2"}]})
    assert s.certify == methods and s.certify_sdp == sdp
    assert parse_suite({"eps": {"L2": [0.5]}, "attack": [{"type": "pgd", "norm": "L2"}]}).certify is None


@pytest.mark.parametrize("value,match", [
    ("yes", "certify must be"),
    ({"methods": ["crown", "magic"]}, "unknown certification method 'magic'"),
    ({"method": ["crown"]}, "unknown key 'method'"),
    ({"methods": "crown"}, "list of names"),
    ({"methods": ["crown", "crown"]}, "twice"),
    ({"methods": ["crown"], "sdp": True}, "needs the lipschitz"),
    ({"sdp": "yes"}, "true or false"),
    ({"skip_certified": "pgd"}, "list of attack labels"),
    ({"skip_certified": ["apgdt"]}, "names 'apgdt', not a bounded attack"),
    ({"skip_certified": ["pgd", "pgd"]}, "twice"),
    ({"methods": [], "skip_certified": ["pgd"]}, "needs a certification method"),
])
def test_suite_certify_key_rejects_bad_values(value, match):
    with pytest.raises(SuiteError, match=match) as info:
        parse_suite({"eps": {"L2": [0.5]}, "certify": value, "attack": [{"type": "pgd", "norm": "L2"}]})
    assert info.value.fix


def test_certify_l2_suite_file_loads():
    from robustclip.attacks.suites import load_suite

    s = load_suite("attacks/certify-l2.toml")
    assert s.certify == ("lipschitz", "crown")
    assert sorted({e for (_, e) in s.grid()}) == [0.1, 0.25, 0.5, 1.0, 1.5, 1.58, 2.0]  # 1.58: GloRo's MNIST radius
    assert s.cascade and s.skip_certified == ("apgdt",)
    assert {a.type for a in s.attacks} == {"clean", "pgd", "apgd", "apgdt"}
    assert all(a.params.get("steps") == 100 for a in s.attacks if a.type != "clean")


def test_sandwich_figure_is_written(tmp_path):
    import pandas as pd

    from robustclip.reports.figures import fig_sandwich

    rows = []
    for model, shift in (("a", 0.0), ("b", 0.1)):
        for eps in (0.1, 0.5, 1.0):
            for attack, acc in (("worst_case", 0.9 - eps / 2 - shift), ("certified", 0.6 - eps / 2 - shift)):
                rows.append({"model": model, "dataset": "mnist", "attack": attack, "norm": "L2", "eps": eps,
                             "accuracy": max(acc, 0), "n": 100, "ci_low": max(acc - 0.05, 0), "ci_high": acc + 0.05})
    df = pd.DataFrame(rows)
    figs = fig_sandwich(df, tmp_path)
    assert len(figs) == 1 and (tmp_path / figs[0].file).stat().st_size > 1000 and figs[0].caption
    # a model's clean accuracy is the point at ε = 0 of both its lines; one legend entry per model, then the styles
    clean = pd.DataFrame([{"model": "a", "dataset": "mnist", "attack": "clean", "norm": "none", "eps": 0.0,
                           "accuracy": 0.95, "n": 100, "ci_low": 0.89, "ci_high": 0.98}])
    (fig,) = fig_sandwich(pd.concat([clean, df]), tmp_path)
    ax = fig.axes[0]
    starts = sorted((float(ln.get_xdata()[0]), float(ln.get_ydata()[0])) for ln in ax.get_lines())
    assert starts[:2] == [(0.0, 95.0), (0.0, 95.0)] and starts[-1][0] == 0.1  # model b has no clean row
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b", "attacked (worst case)", "certified"]
    assert "±6.0 points" in fig.caption  # the widest Wilson half-width shown: 0.95 - 0.89
    with pytest.raises(RobustclipError, match="certified"):
        fig_sandwich(df[df.attack == "worst_case"], tmp_path)


def test_certify_ascending_tries_a_sample_only_while_it_holds_and_never_what_an_attack_broke():
    from robustclip.bounds.crown.radii import certify_ascending

    # sample i is "certifiable" up to radius limit[i]; sample 3 is misclassified, sample 4 broken by an attack at 0.5
    limit = torch.tensor([0.0, 0.3, 2.0, 2.0, 2.0])
    calls: list[tuple[float, list[int]]] = []

    def run(idx: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
        calls.append((eps, idx.tolist()))
        return limit[idx] >= eps

    correct = torch.tensor([True, True, True, False, True])
    known = {("L2", 0.5): torch.tensor([False, False, False, False, True])}
    done = {("L2", 1.0): torch.tensor([False, False, True, False, False])}  # another method certified sample 2 at 1
    x, y = torch.zeros(5, 2), torch.zeros(5, dtype=torch.long)
    got = certify_ascending([("L2", 1.0), ("L2", 0.25), ("L2", 0.5)], correct, done, run, x=x, y=y,
                            known_broken=known, batch_size=2)
    assert [e for e, _ in calls] == [0.25, 0.25, 0.5]  # batches of 2 at 0.25; nothing left to try at 1.0
    assert sorted(i for e, idx in calls if e == 0.25 for i in idx) == [0, 1, 2, 4]
    assert [idx for e, idx in calls if e == 0.5] == [[1, 2]]  # 0 failed at 0.25, 4 was broken, 3 is wrong
    assert got[("L2", 0.25)].tolist() == [False, True, True, False, True]
    assert got[("L2", 0.5)].tolist() == [False, False, True, False, False]
    assert got[("L2", 1.0)].tolist() == [False, False, True, False, False]  # from `done`, not tried again
