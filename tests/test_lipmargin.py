"""Certified training (lipschitz-margin): sorting activations, the power-iteration bound, the ⊥ logit, the ramp,
the registry entries, and the evaluation path (sound bounds; LipSDP refuses MinMax with a reason, the graph CROWN
relaxes its pairs)."""

import math

import pytest
import torch
from torch import nn

from robustclip.bounds import certify, upper
from robustclip.errors import RobustclipError
from robustclip.models import specs as models
from robustclip.models.activations import GroupSort, MinMax
from robustclip.training import config
from robustclip.training import trainer as training
from robustclip.training.regularizers import lipmargin
from robustclip.training.regularizers import registry as regularizers
from tests.tiny import one_thread

CNN = {"arch": "cnn", "activation": "minmax"}
FC = {"arch": "fc", "sizes": [784, 16, 10], "activation": "minmax"}


def _small_cnn() -> nn.Sequential:
    """A 2C2F-like MinMax net on (1, 8, 8) inputs: small enough for dense bounds in a test."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 4, stride=2, padding=1), MinMax(), nn.Conv2d(4, 8, 4, stride=2, padding=1),
                         MinMax(), nn.Flatten(), nn.Linear(32, 12), MinMax(), nn.Linear(12, 5))


@pytest.mark.parametrize("act", [MinMax(), GroupSort(2), GroupSort(4)])
def test_sorting_activations_are_1_lipschitz_permutations(act):
    g = torch.Generator().manual_seed(0)
    x, x2 = torch.randn(64, 8, 3, 3, generator=g), torch.randn(64, 8, 3, 3, generator=g)
    y, y2 = act(x), act(x2)
    assert torch.allclose(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)  # a permutation per sample
    q = (y - y2).flatten(1).norm(dim=1) / (x - x2).flatten(1).norm(dim=1)
    assert float(q.max()) <= 1 + 1e-6
    assert float(q.max()) > 0.5


def test_conv_adjoint_matches_autograd():
    conv = nn.Conv2d(3, 5, 4, stride=2, padding=1)
    shape = (3, 9, 9)
    u = torch.randn(1, *shape)
    v = torch.randn_like(lipmargin.BodyBound._fwd(conv, u))
    lhs = (lipmargin.BodyBound._fwd(conv, u) * v).sum()
    rhs = (u * lipmargin.BodyBound._adj(conv, v, shape)).sum()
    assert torch.allclose(lhs, rhs, rtol=1e-4)


def test_power_iteration_approaches_the_sound_product_from_below():
    with one_thread():
        m = _small_cnn()
        b = lipmargin.BodyBound(m, (1, 8, 8))
        est = float(b.body(300, grad=False))
        sound = math.prod(v for _, v in upper.layer_norms(m, (1, 8, 8))[:-1])
    assert est <= sound * (1 + 1e-5)
    assert est >= 0.98 * sound


def test_bound_is_differentiable_in_the_weights():
    torch.manual_seed(0)
    m = models.build({"arch": "fc", "sizes": [784, 20, 10], "activation": "minmax"})
    b = lipmargin.BodyBound(m, (1, 28, 28))
    K = b.pair_constants(3)
    K.sum().backward()
    assert m[1].weight.grad is not None and float(m[1].weight.grad.abs().sum()) > 0
    assert torch.isfinite(m[3].weight.grad).all()  # the row distances have no NaN at the diagonal
    assert torch.all(K.diagonal() == 0)


def test_bot_logit_formula_and_losses():
    logits = torch.tensor([[3.0, 1.0, 0.0]])
    pairs = torch.tensor([[0.0, 2.0, 1.0], [2.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    aug = lipmargin.bot_logits(logits, pairs, 0.5)
    assert aug.shape == (1, 4)
    assert float(aug[0, 3]) == pytest.approx(max(1.0 + 0.5 * 2.0, 0.0 + 0.5 * 1.0))
    y = torch.tensor([0])
    kl = lipmargin.margin_loss(logits, y, pairs, 0.5, loss="trades")
    assert float(kl) >= 0
    assert float(lipmargin.margin_loss(logits, y, pairs * 0, 1e-9, loss="trades")) < 0.2  # ⊥ far below: KL ≈ 0
    ce = float(nn.functional.cross_entropy(logits, y))
    assert float(lipmargin.margin_loss(logits, y, pairs, 0.5, loss="ce")) > ce


def test_eps_ramp_is_geometric_over_the_first_half():
    cfg = lipmargin.MarginConfig(eps=1.58)
    assert lipmargin.ramped_eps(cfg, 0, 100) == pytest.approx(0.01 * 1.58)
    assert lipmargin.ramped_eps(cfg, 25, 100) == pytest.approx(1.58 * math.sqrt(0.01 * 1.1))
    assert lipmargin.ramped_eps(cfg, 50, 100) == pytest.approx(1.1 * 1.58)
    assert lipmargin.ramped_eps(cfg, 99, 100) == pytest.approx(1.1 * 1.58)


@pytest.mark.parametrize("params", [{"loss": "hinge"}, {"eps": -1}, {"eps": float("nan")}, {"ramp": 2},
                                    {"colour": 1}])
def test_bad_settings_are_one_line_errors(params):
    with pytest.raises(RobustclipError):
        regularizers.make("lipschitz-margin", **params)


def test_registry_entries_and_lambda_rules():
    assert "lipschitz-margin" in regularizers.REGISTRY and "clip-lipschitz-margin" in regularizers.REGISTRY
    with pytest.raises(RobustclipError, match="takes no λ"):
        config.TrainConfig(reg="lipschitz-margin", lam=0.5, model=CNN).validate()
    h = regularizers.make("clip-lipschitz-margin", clip={"pairs": 4}, margin={"loss": "ce"})
    assert h.data_weight == 0.0 and h.config()["margin"]["loss"] == "ce"


def _tiny_splits(n=256):
    g = torch.Generator().manual_seed(0)
    from robustclip.data.datasets import Split

    x = torch.rand(n, 1, 28, 28, generator=g)
    y = (x.flatten(1)[:, :392].mean(1) > x.flatten(1)[:, 392:].mean(1)).long()  # a learnable rule
    return (Split(x[: n - 64], y[: n - 64], "mnist", "train", "synthetic"),
            Split(x[n - 64 :], y[n - 64 :], "mnist", "val", "synthetic"))


@pytest.mark.parametrize("reg,extra", [("lipschitz-margin", {}), ("lipschitz-margin", {"loss": "ce"}),
                                       ("clip-lipschitz-margin", {})])
def test_training_runs_records_selection_and_resumes_state(reg, extra):
    splits = _tiny_splits()
    cfg = config.TrainConfig(dataset="mnist", model=FC if reg != "lipschitz-margin" or extra else CNN, reg=reg,
                               epochs=2, batch_size=64,
                               optimizer="adam", lr=1e-3, settings={"margin": {"eps": 0.5, **extra}}, lip_probe_pairs=0,
                               lam=0.01 if reg.startswith("clip") else 0.0, clip={"pairs": 4} if reg.startswith("clip")
                               else {})
    with one_thread():
        tr = training.Trainer(cfg, progress=False, splits=splits)
        tr.run()
    assert len(tr.history) == 2 and all("val_select" in h for h in tr.history)
    state = tr.reg.state_dict()
    margin_state = state["margin"] if "margin" in state else state
    assert margin_state["step"] == 2 * 3  # 192 samples / 64 per batch, two epochs
    assert tr.reg.config()["name"] == reg


def test_minmax_model_certifies_with_sound_pair_constants_only():
    with one_thread():
        m = _small_cnn().eval()
        x = torch.rand(8, 1, 8, 8)
        uppers, why = upper.upper_bounds(m, (1, 8, 8), sdp=True)
        assert why is None
        sdp = [u for u in uppers if u.method == "lipsdp"]
        assert sdp and not math.isfinite(sdp[0].value) and "MinMax" in sdp[0].assumptions
        pairs = upper.best_pairs(uppers)
        assert pairs is not None
        body = math.prod(v for _, v in upper.layer_norms(m, (1, 8, 8))[:-1])
        W = m[-1].weight.detach().double()
        est = lipmargin.BodyBound(m, (1, 8, 8)).pair_constants(300, grad=False).double()
        assert torch.all(pairs >= est * (1 - 1e-5))  # the sound constants are never below the estimate
        assert torch.all(pairs <= body * lipmargin.row_distances(W) * (1 + 1e-6) + 1e-12)
        # and they hold: the gradient of f_y − f_j at random points stays below them
        J = torch.func.vmap(torch.func.jacrev(lambda z: m(z.unsqueeze(0)).squeeze(0)))(torch.rand(32, 1, 8, 8))
        J = J.flatten(2)  # (N, K, d)
        for y in range(5):
            for j in range(5):
                if y != j:
                    assert float((J[:, y] - J[:, j]).norm(dim=1).max()) <= float(pairs[y, j]) * (1 + 1e-5)
        with torch.no_grad():
            y0 = m(x).argmax(1)
        res = certify.certify(m, x, y0, [("L2", 0.01)])
        assert "reason" not in res.info and "crown" in res.per_method  # the graph CROWN relaxes MinMax pairs


def test_cli_margin_flag_belongs_to_certified_training(tmp_path):
    from tests.tiny import assert_one_line_error, run_cli

    rc, _, err = run_cli(["train", "--reg", "clip", "--margin", "eps=1", "--out", tmp_path / "m.safetensors"])
    assert_one_line_error(rc, err, "--margin")
    rc, _, err = run_cli(["train", "--reg", "lipschitz-margin", "--margin", "loss=hinge", "--out",
                          tmp_path / "m.safetensors"])
    assert_one_line_error(rc, err, "hinge")
    assert not (tmp_path / "m.safetensors").exists()


def test_graph_bound_of_a_batchnorm_minmax_net_counts_sorting_as_1():
    """A net the Sequential path does not understand (BatchNorm) is bounded through its traced graph; MinMax and
    GroupSort are leaves there with constant 1, and the bound holds against difference quotients."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), MinMax(), nn.Conv2d(4, 4, 3, stride=2),
                        GroupSort(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 3)).eval()
    with torch.no_grad():
        net[1].running_var.uniform_(0.5, 2.0)
    uppers, reason = upper.upper_bounds(net, (1, 8, 8))
    assert reason is None and [u.method for u in uppers] == ["graph_product"]
    relu = nn.Sequential(*[nn.ReLU() if isinstance(m, (MinMax, GroupSort)) else m for m in net]).eval()
    assert uppers[0].value == pytest.approx(upper.upper_bounds(relu, (1, 8, 8))[0][0].value)  # both count 1
    g = torch.Generator().manual_seed(1)
    x, d = torch.rand(256, 1, 8, 8, generator=g), torch.randn(256, 1, 8, 8, generator=g) * 1e-2
    with torch.no_grad():
        q = (net(x + d) - net(x)).norm(dim=1) / d.flatten(1).norm(dim=1)
    assert 0 < float(q.max()) <= uppers[0].value
