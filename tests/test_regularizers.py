"""Difference quotients, pair ascent, the CLIP / weight regularisers and the λ schedule.

Everything here runs on small seeded models and slices of the real MNIST test
set; no test trains for more than a handful of steps.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustclip.bounds import pairs
from robustclip.bounds.pairs import MIN_DIST
from robustclip.errors import RobustclipError
from robustclip.models import specs as models
from robustclip.training.regularizers import base
from robustclip.training.regularizers import registry as regularizers
from robustclip.training.regularizers.clip import ClipConfig, ClipRegularizer
from robustclip.training.regularizers.weight import WeightRegularizer
from robustclip.training.schedule import LambdaSchedule

# --------------------------------------------------------------------------- helpers


def _pair_dist(P: torch.Tensor) -> torch.Tensor:
    a, b = pairs.split_pairs(P)
    return (a - b).flatten(1).norm(dim=1)


def _assert_valid_pairs(P: torch.Tensor, m: int, shape: tuple[int, ...]) -> None:
    P = P.detach()
    assert P.shape == (2 * m, *shape)
    assert torch.isfinite(P).all()
    assert float(P.min()) >= 0.0 and float(P.max()) <= 1.0, "pairs left [0, 1]"
    assert bool((_pair_dist(P) >= MIN_DIST).all()), "some pair has x == x' (closer than MIN_DIST)"


def _small_mlp(seed: int, d_in: int = 10, hidden: int = 16, d_out: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, d_out))


def _small_image_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return models.build({"arch": "fc", "sizes": [784, 24, 10], "activation": "sigmoid"})


@pytest.fixture(scope="module")
def images(mnist_test):
    """400 real MNIST test images (400, 1, 28, 28) in [0, 1] and their labels."""
    split = mnist_test.subset(400)
    return split.x.clone(), split.y.clone()


# --------------------------------------------------------------------------- quotients


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_quotients_match_hand_computation_on_linear_map(seed):
    torch.manual_seed(seed)
    lin = nn.Linear(7, 4, bias=False)
    W = lin.weight.detach().double()
    g = torch.Generator().manual_seed(100 + seed)
    P = torch.rand(2 * 12, 7, generator=g)
    q = pairs.quotients(lin, P).detach()
    assert q.shape == (12,)
    x, xp = P[:12].double(), P[12:].double()
    d = x - xp
    by_hand = (d @ W.T).norm(dim=1) / d.norm(dim=1)
    torch.testing.assert_close(q.double(), by_hand, rtol=1e-5, atol=1e-7)
    sigma = float(torch.linalg.matrix_norm(W, 2))
    assert float(q.max()) <= sigma * (1 + 1e-5)


def test_quotients_from_outputs_matches_quotients():
    model = _small_mlp(3)
    P = torch.rand(2 * 5, 10, generator=torch.Generator().manual_seed(3))
    out = model(P)
    torch.testing.assert_close(pairs.quotients_from_outputs(out, P), pairs.quotients(model, P))
    a, b = pairs.split_pairs(P)
    assert torch.equal(a, P[:5]) and torch.equal(b, P[5:])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_ascent_on_linear_map_approaches_spectral_norm_from_below(seed):
    torch.manual_seed(seed)
    lin = nn.Linear(6, 4, bias=False)
    sigma = float(torch.linalg.matrix_norm(lin.weight.detach().double(), 2))
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(50, 6, generator=g)
    P0 = pairs.init_pairs(x, 8, mode="partial_random", radius=0.3, generator=g)
    q0 = pairs.quotients(lin, P0).detach()
    best_prev = float(q0.max())
    for steps in (5, 20, 100):
        P, q = pairs.pair_ascent(lin, P0, steps=steps)
        best = float(q.max())
        # a quotient of a linear map can never exceed its spectral norm
        assert best <= sigma * (1 + 1e-5), (best, sigma)
        assert best >= best_prev - 1e-7 * sigma
        # the reported quotients are those of the returned pairs
        torch.testing.assert_close(q, pairs.quotients(lin, P).detach())
        best_prev = best
    assert best_prev > float(q0.max()), "ascent did not improve the best quotient"
    assert best_prev >= 0.95 * sigma, f"ascent reached only {best_prev / sigma:.3f} of the spectral norm"


# --------------------------------------------------------------------------- pair ascent


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pair_ascent_never_lowers_a_quotient(seed):
    model = _small_mlp(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(64, 10, generator=g)
    mode = ("plain", "partial_random", "noise", "partial_random")[seed]
    P = pairs.init_pairs(x, 10, mode=mode, radius=0.2, generator=g)
    q = pairs.quotients(model, P).detach()
    q_start = q.clone()
    moved = False
    for _ in range(15):
        P_new, q_new = pairs.pair_ascent(model, P, steps=1, eta=0.05)
        assert bool((q_new >= q * (1 - 1e-6)).all()), "a pair's quotient fell"
        assert float(q_new.max()) >= float(q.max()) * (1 - 1e-6), "the best quotient fell"
        _assert_valid_pairs(P_new, 10, (10,))
        moved |= not torch.equal(P_new, P)
        P, q = P_new, q_new
    assert moved, "pair ascent never moved any pair"
    assert float(q.max()) > float(q_start.max()), "15 ascent steps found nothing steeper"
    # one long call obeys the same rule against its own start
    P_long, q_long = pairs.pair_ascent(model, P, steps=25)
    assert bool((q_long >= q * (1 - 1e-6)).all())
    _assert_valid_pairs(P_long, 10, (10,))


def test_pair_ascent_leaves_model_state_alone():
    model = _small_mlp(5)
    model.train()
    model[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    P = torch.rand(2 * 4, 10, generator=torch.Generator().manual_seed(5))
    pairs.pair_ascent(model, P, steps=5)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == [False] + [True] * 5
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_pair_ascent_on_images_keeps_pairs_valid(images):
    x, _ = images
    model = _small_image_model(0)
    g = torch.Generator().manual_seed(0)
    P0 = pairs.init_pairs(x, 6, mode="partial_random", radius=0.5, generator=g)
    q0 = pairs.quotients(model, P0).detach()
    P, q = pairs.pair_ascent(model, P0, steps=10)
    _assert_valid_pairs(P, 6, (1, 28, 28))
    assert bool((q >= q0 * (1 - 1e-6)).all())
    assert float(q.max()) > float(q0.max())


# --------------------------------------------------------------------------- init_pairs


@pytest.mark.parametrize("mode", ["plain", "partial_random", "noise"])
def test_init_pairs_modes_shape_range_and_distinct(images, mode):
    x, _ = images
    m = 12
    P = pairs.init_pairs(x, m, mode=mode, radius=0.5, generator=torch.Generator().manual_seed(1))
    _assert_valid_pairs(P, m, (1, 28, 28))
    assert P.dtype == x.dtype
    assert not P.requires_grad
    # seeded: the same generator seed gives the same pairs
    P2 = pairs.init_pairs(x, m, mode=mode, radius=0.5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(P, P2)
    flat = x.flatten(1)

    def is_data_row(t: torch.Tensor) -> torch.Tensor:
        return (t.flatten(1)[:, None, :] == flat[None]).all(-1).any(-1)

    a, b = pairs.split_pairs(P)
    if mode == "plain":
        assert bool(is_data_row(a).all()) and bool(is_data_row(b).all())
    elif mode == "partial_random":
        assert bool(is_data_row(a).all())
        # clipping to [0,1] only shortens the move, separation adds at most 10·MIN_DIST
        assert float(_pair_dist(P).max()) <= 0.5 + 10 * MIN_DIST + 1e-5
        assert float(_pair_dist(P).min()) > 0.05
    else:
        assert not bool(is_data_row(a).any())
        # uniform noise over 784 pixels: mean near 1/2
        assert abs(float(P.mean()) - 0.5) < 0.02


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_init_pairs_separates_identical_points_inside_the_box(value):
    x = torch.full((5, 1, 28, 28), value)
    P = pairs.init_pairs(x, 8, mode="plain", generator=torch.Generator().manual_seed(0))
    _assert_valid_pairs(P, 8, (1, 28, 28))


def test_init_pairs_unknown_mode():
    with pytest.raises(ValueError):
        pairs.init_pairs(torch.rand(4, 3), 2, mode="bogus")


# --------------------------------------------------------------------------- CLIP regulariser


def _fused_step(model, opt, reg, xb, yb, step):
    """One training step as the trainer does it (the pairs get their own forward pass)."""
    extra = reg.extra_inputs(xb, step)
    out_b = model(xb)
    out_e = model(extra) if extra is not None else None
    loss = nn.functional.cross_entropy(out_b, yb)
    pen = reg.penalty(model, out_e)
    total = loss + 0.1 * pen if pen is not None else loss
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    reg.after_step()
    return extra, pen


def test_clip_fused_step_penalty_is_max_quotient_and_pairs_stay_valid(images):
    x, y = images
    model = _small_image_model(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    m = 8
    reg = ClipRegularizer(ClipConfig(pairs=m, refresh_every=1000, every=1), seed=0)
    assert reg.estimate() == 0.0
    seen = []
    for step in range(8):
        xb, yb = x[step * 32 : (step + 1) * 32], y[step * 32 : (step + 1) * 32]
        extra = reg.extra_inputs(xb, step)
        assert extra is reg.P and extra.requires_grad
        _assert_valid_pairs(extra, m, (1, 28, 28))
        P_before = extra.detach().clone()
        with torch.no_grad():
            q_ref = pairs.quotients(model, P_before)
        loss = nn.functional.cross_entropy(model(xb), yb)
        pen = reg.penalty(model, model(extra))
        assert pen is not None and pen.requires_grad and pen.dim() == 0
        qmax = float(q_ref.max())
        # the penalty is max q plus the documented 1e-4 tie weight on all quotients
        torch.testing.assert_close(float(pen.detach()), qmax + 1e-4 * float(q_ref.sum()), rtol=1e-5, atol=1e-7)
        assert qmax <= float(pen.detach()) <= qmax * (1 + 1e-4 * m) + 1e-7
        seen.append(qmax)
        opt.zero_grad(set_to_none=True)
        (loss + 0.1 * pen).backward()
        assert extra.grad is not None and float(extra.grad.abs().sum()) > 0
        opt.step()
        reg.after_step()
        _assert_valid_pairs(reg.P, m, (1, 28, 28))
        assert not reg.P.requires_grad
        assert not torch.equal(reg.P, P_before), "after_step did not move the pairs"
    # estimate(): the largest quotient since the last call, then reset
    assert reg.estimate() == pytest.approx(max(seen), rel=1e-5)
    assert reg.estimate() == 0.0


def test_clip_after_step_ascends_the_quotients(images):
    """With the weights frozen (lr 0) the fused moves are ascent moves: the best quotient rises."""
    x, y = images
    model = _small_image_model(2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    reg = ClipRegularizer(ClipConfig(pairs=8, refresh_every=1000, every=1), seed=2)
    xb, yb = x[:32], y[:32]
    extra0, _ = _fused_step(model, opt, reg, xb, yb, 0)
    for step in range(1, 10):
        _fused_step(model, opt, reg, xb, yb, step)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        q0 = float(pairs.quotients(model, extra0.detach()).max())
        q1 = float(pairs.quotients(model, reg.P).max())
    assert q1 > q0


def test_clip_mean_reduction_and_every(images):
    x, y = images
    model = _small_image_model(3)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    reg = ClipRegularizer(ClipConfig(pairs=6, reduce="mean", every=3), seed=0)
    for step in range(7):
        xb, yb = x[step * 16 : (step + 1) * 16], y[step * 16 : (step + 1) * 16]
        extra = reg.extra_inputs(xb, step)
        if step % 3:
            assert extra is None
            assert reg.penalty(model, None) is None
            P_before = reg.P.clone()
            reg.after_step()
            assert torch.equal(reg.P, P_before), "an inactive step moved the pairs"
            continue
        with torch.no_grad():
            q_ref = pairs.quotients(model, extra.detach())
        out_b = model(xb)
        pen = reg.penalty(model, model(extra))
        # mean of the quotients, scaled by `every` so the average strength is λ
        torch.testing.assert_close(float(pen.detach()), 3 * float(q_ref.mean()), rtol=1e-5, atol=1e-7)
        opt.zero_grad(set_to_none=True)
        (nn.functional.cross_entropy(out_b, yb) + 0.1 * pen).backward()
        opt.step()
        reg.after_step()
        _assert_valid_pairs(reg.P, 6, (1, 28, 28))


def test_clip_cap_skips_the_penalty(images):
    x, _ = images
    model = _small_image_model(4)
    xb = x[:32]
    # the same seed draws the same pairs from the same batch
    extra = ClipRegularizer(ClipConfig(pairs=4), seed=0).extra_inputs(xb, 0)
    with torch.no_grad():
        qmax = float(pairs.quotients(model, extra.detach()).max())
    assert qmax > 0
    # a cap above the largest quotient keeps the penalty
    reg = ClipRegularizer(ClipConfig(pairs=4, cap=qmax * 10), seed=0)
    extra = reg.extra_inputs(xb, 0)
    pen = reg.penalty(model, model(extra))
    assert pen is not None and float(pen.detach()) >= qmax * (1 - 1e-5)
    # a cap below it skips the penalty and counts the skip
    reg = ClipRegularizer(ClipConfig(pairs=4, cap=qmax * 0.5), seed=0)
    extra = reg.extra_inputs(xb, 0)
    assert reg.penalty(model, model(extra)) is None
    assert reg._skipped == 1
    # the largest quotient is still reported
    assert reg.estimate() == pytest.approx(qmax, rel=1e-5)


def test_clip_cap_skip_redraws_pairs_in_the_training_step(images):
    """After a step whose penalty the cap skipped, the pairs are redrawn from the next batch
    ("no penalty now, redraw them next step"), not reused."""
    x, y = images
    model = _small_image_model(5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    reg = ClipRegularizer(ClipConfig(pairs=4, cap=1e-9, refresh_every=1000, every=1), seed=0)
    extra0, pen = _fused_step(model, opt, reg, x[:32], y[:32], 0)
    assert pen is None
    first = extra0.detach().clone()
    extra1 = reg.extra_inputs(x[32:64], 1)
    assert extra1 is not None
    _assert_valid_pairs(extra1, 4, (1, 28, 28))
    assert not torch.equal(extra1.detach(), first), "skipped pairs were reused instead of redrawn"
    # the redrawn x are rows of the new batch (partial_random init)
    flat = x[32:64].flatten(1)
    a, _ = pairs.split_pairs(extra1.detach())
    assert bool((a.flatten(1)[:, None, :] == flat[None]).all(-1).any(-1).all())


def test_clip_refresh_every_redraws_pairs_from_current_batch(images):
    x, y = images
    model = _small_image_model(6)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    reg = ClipRegularizer(ClipConfig(pairs=5, refresh_every=3, every=1), seed=0)

    def from_batch(P, xb):
        a, _ = pairs.split_pairs(P.detach())
        return (a.flatten(1)[:, None, :] == xb.flatten(1)[None]).all(-1).any(-1)

    for step in range(7):
        xb, yb = x[step * 20 : (step + 1) * 20], y[step * 20 : (step + 1) * 20]
        P_prev = None if reg.P is None else reg.P.detach().clone()
        extra, _ = _fused_step(model, opt, reg, xb, yb, step)
        if step % 3 == 0:
            assert bool(from_batch(extra, xb).all()), f"step {step}: pairs not redrawn from the batch"
        else:
            assert torch.equal(extra.detach(), P_prev), f"step {step}: pairs redrawn off schedule"
            assert not bool(from_batch(extra, xb).any())


def test_clip_extra_ascent_steps_use_bound_model(images):
    x, y = images
    model = _small_image_model(7)
    reg = ClipRegularizer(ClipConfig(pairs=6, ascent_steps=4, every=1), seed=0)
    reg.bind(model)
    extra = reg.extra_inputs(x[:32], 0)
    fresh = pairs.init_pairs(x[:32], 6, generator=torch.Generator().manual_seed(7919))
    with torch.no_grad():
        q_fresh = pairs.quotients(model, fresh)
        q_extra = pairs.quotients(model, extra.detach())
    _assert_valid_pairs(extra.detach(), 6, (1, 28, 28))
    assert bool((q_extra >= q_fresh * (1 - 1e-6)).all())
    assert float(q_extra.max()) > float(q_fresh.max())


@pytest.mark.parametrize("bad", [
    {"pairs": 0}, {"pairs": -3}, {"init": "gauss"}, {"reduce": "median"}, {"ascent_steps": 0},
    {"refresh_every": 0}, {"every": 0}, {"eta": 0.0}, {"eta": -0.1}, {"radius": 0.0}, {"cap": 0.0},
    {"cap": -1.0},
])
def test_invalid_clip_config_raises(bad):
    with pytest.raises(RobustclipError):
        ClipConfig(**bad).validate()
    with pytest.raises(RobustclipError):
        ClipRegularizer(ClipConfig(**bad))
    with pytest.raises(RobustclipError):
        regularizers.make("clip", **bad)


def test_make_regularizers():
    assert type(regularizers.make("none")) is base.Regularizer
    assert isinstance(regularizers.make("weight"), WeightRegularizer)
    reg = regularizers.make("clip", pairs=3, init="noise")
    assert isinstance(reg, ClipRegularizer) and reg.cfg.pairs == 3 and reg.cfg.init == "noise"
    assert reg.config()["name"] == "clip" and reg.config()["pairs"] == 3
    ClipConfig().validate()  # the defaults are valid
    with pytest.raises(RobustclipError):
        regularizers.make("clip", not_a_field=1)
    with pytest.raises(RobustclipError):
        regularizers.make("lasso")
    plain = regularizers.make("none")
    assert plain.extra_inputs(torch.rand(2, 3), 0) is None
    assert plain.penalty(nn.Linear(3, 1), None) is None
    assert plain.estimate() is None


# --------------------------------------------------------------------------- weight regulariser


def test_weight_penalty_is_sum_of_squared_weights_without_biases():
    torch.manual_seed(0)
    model = models.build({"arch": "cnn", "num_classes": 10, "mean": 0.1307, "std": 0.3081})
    reg = WeightRegularizer()
    convs_linears = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert len(convs_linears) == 4
    by_hand = sum(float(m.weight.detach().double().square().sum()) for m in convs_linears)
    pen = reg.penalty(model, None)
    assert float(pen.detach()) == pytest.approx(by_hand, rel=1e-5)
    # biases do not count
    with torch.no_grad():
        for m in convs_linears:
            m.bias.fill_(5.0)
    assert float(reg.penalty(model, None).detach()) == pytest.approx(by_hand, rel=1e-5)
    # d/dW Σ||W||² = 2W; no gradient reaches the biases
    model.zero_grad(set_to_none=True)
    reg.penalty(model, None).backward()
    for m in convs_linears:
        torch.testing.assert_close(m.weight.grad, 2 * m.weight.detach())
        assert m.bias.grad is None


def test_weight_penalty_fc_model():
    torch.manual_seed(1)
    model = models.build({"arch": "fc", "sizes": [784, 20, 7, 10], "activation": "relu"})
    lins = [m for m in model.modules() if isinstance(m, nn.Linear)]
    expected = sum(float(m.weight.detach().square().sum()) for m in lins)
    assert float(WeightRegularizer().penalty(model, None).detach()) == pytest.approx(expected, rel=1e-5)
    with torch.no_grad():
        lins[0].weight.mul_(2)
    expected2 = expected + 3 * float(lins[0].weight.detach().square().sum()) / 4
    assert float(WeightRegularizer().penalty(model, None).detach()) == pytest.approx(expected2, rel=1e-5)


# --------------------------------------------------------------------------- λ schedule


def _reference_schedule(lam, target, step, every, warmup, accs):
    """The rule, written out: λ per epoch for the given training accuracies."""
    out, cur = [], lam
    for e, acc in enumerate(accs):
        if e < warmup:
            out.append(0.0)
            continue
        out.append(cur)
        if target is not None and (e - warmup + 1) % every == 0:
            cur = cur + step if acc >= target else max(0.0, cur - step)
    return out


def _run_schedule(s: LambdaSchedule, accs):
    used = []
    for e, acc in enumerate(accs):
        used.append(s.value(e))
        s.update(e, acc)
    return used


def test_lambda_schedule_fixed_without_target():
    s = LambdaSchedule(lam=0.3, target=None, step=0.1)
    used = _run_schedule(s, [0.1, 0.99, 0.5, 1.0])
    assert used == [0.3] * 4
    assert s.history == used
    assert s.final == 0.3


def test_lambda_schedule_rises_and_falls_with_accuracy():
    s = LambdaSchedule(lam=0.1, target=0.9, step=0.05)
    accs = [0.95, 0.95, 0.80, 0.90, 0.50, 0.99]
    used = _run_schedule(s, accs)
    assert used == pytest.approx([0.1, 0.15, 0.2, 0.15, 0.2, 0.15])
    assert s.history == pytest.approx(used)
    assert s.final == pytest.approx(0.2)  # after the last epoch's rise


def test_lambda_schedule_never_below_zero():
    s = LambdaSchedule(lam=0.03, target=0.99, step=0.02)
    used = _run_schedule(s, [0.5] * 5 + [1.0])
    assert used == pytest.approx([0.03, 0.01, 0.0, 0.0, 0.0, 0.0])
    assert min(used) >= 0.0
    assert s.final == pytest.approx(0.02)


@pytest.mark.parametrize("warmup,every", [(0, 1), (2, 1), (0, 2), (1, 3), (3, 2)])
def test_lambda_schedule_warmup_and_every_follow_the_rule(warmup, every):
    g = torch.Generator().manual_seed(warmup * 10 + every)
    accs = [round(float(a), 3) for a in torch.rand(12, generator=g) * 0.4 + 0.6]  # in [0.6, 1.0)
    s = LambdaSchedule(lam=0.2, target=0.8, step=0.03, every=every, warmup=warmup)
    used = _run_schedule(s, accs)
    expected = _reference_schedule(0.2, 0.8, 0.03, every, warmup, accs)
    assert used == pytest.approx(expected)
    assert s.history == pytest.approx(expected)
    assert used[:warmup] == [0.0] * warmup
    if warmup < len(accs):
        assert used[warmup] == 0.2
    # λ changes only at the first epoch of an `every`-block after warm-up
    for e in range(warmup + 1, len(accs)):
        if (e - warmup) % every:
            assert used[e] == used[e - 1]


def test_lambda_schedule_value_is_idempotent_per_epoch():
    s = LambdaSchedule(lam=0.5, target=0.9, step=0.1)
    assert s.value(0) == 0.5 and s.value(0) == 0.5
    s.update(0, 0.95)
    assert s.value(1) == pytest.approx(0.6)
    assert s.history == pytest.approx([0.5, 0.6])


@pytest.mark.parametrize("kw", [
    {"target": 0.0}, {"target": 1.5}, {"target": -0.1}, {"target": math.nan},
    {"lam": -0.1}, {"lam": -1e-9}, {"lam": math.inf}, {"lam": math.nan},
    {"step": -0.01}, {"every": 0}, {"warmup": -1},
])
def test_lambda_schedule_rejects_invalid(kw):
    with pytest.raises(RobustclipError):
        LambdaSchedule(**{"lam": 0.1, **kw})


def test_lambda_schedule_accepts_boundaries():
    LambdaSchedule(lam=0.0, target=1.0)
    LambdaSchedule(lam=0.0, target=1e-6, step=0.0)


def test_clip_margin_adds_the_lipschitz_margin_cross_entropy_of_the_batch(images):
    """margin = r: the batch rides along with the pairs, and the penalty is max q (+ tie) plus the cross-entropy of
    the batch's logits with every wrong class raised by √2 · r · max q."""
    x, y = images
    xb, yb = x[:32], y[:32]
    model = _small_image_model(2)
    m, r = 8, 1.58
    plain = ClipRegularizer(ClipConfig(pairs=m, every=1), seed=0)
    margin = ClipRegularizer(ClipConfig(pairs=m, every=1, margin=r), seed=0)
    P = plain.extra_inputs(xb, 0, y=yb)
    extra = margin.extra_inputs(xb, 0, y=yb)
    assert P.shape[0] == 2 * m and extra.shape[0] == 2 * m + 32
    assert torch.equal(extra[: 2 * m].detach(), P.detach()) and torch.equal(extra[2 * m :], xb)
    pen_plain = plain.penalty(model, model(P))
    pen = margin.penalty(model, model(extra))
    with torch.no_grad():
        q = pairs.quotients(model, P.detach())
        z = model(xb)
        wrong = 1 - nn.functional.one_hot(yb, 10).float()
        ce = nn.functional.cross_entropy(z + math.sqrt(2) * r * q.max() * wrong, yb)
    torch.testing.assert_close(float(pen.detach()), float(pen_plain.detach()) + float(ce), rtol=1e-5, atol=1e-6)
    # a margin asks for more than plain cross-entropy: raising the wrong logits raises the loss
    assert float(ce) > float(nn.functional.cross_entropy(z, yb))
    pen.backward()
    grad = margin.P.grad  # the pairs are the leaf; the batch rows carry no gradient to keep
    assert grad is not None and float(grad.abs().sum()) > 0, "the pairs get no ascent direction"
    margin.after_step()
    _assert_valid_pairs(margin.P, m, (1, 28, 28))


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, 1000.0])
def test_clip_margin_must_be_finite_and_in_range(bad):
    with pytest.raises(RobustclipError, match="margin"):
        ClipConfig(margin=bad).validate()
