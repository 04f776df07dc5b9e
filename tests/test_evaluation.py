"""evaluate(): the tidy frame, the per-sample worst case, certification, Wilson
intervals, seeding and the gradient-masking sanity flags.

One small plain MNIST net (1 epoch on 3,000 images) is evaluated on 100 test
images under a suite with few attack steps; every structural claim of the
evaluation module is checked against its per-sample results.
"""

from __future__ import annotations

import math
import warnings

import pandas as pd
import pytest
import torch
from pandas.testing import assert_frame_equal
from torch import nn

from robustclip.attacks.suites import parse_suite
from robustclip.errors import RobustclipError
from robustclip.evaluation.apichecks import check_outputs
from robustclip.evaluation.masking import sanity_flags
from robustclip.evaluation.runner import EvalResult, evaluate
from robustclip.evaluation.summary import COLUMNS
from robustclip.models import specs as models
from robustclip.stats import wilson

EXPECTED_COLUMNS = ["model", "dataset", "attack", "norm", "eps", "accuracy", "n", "ci_low", "ci_high"]
N = 100

SUITE = parse_suite({
    "name": "eval-test", "batch_size": 64, "seed": 0,  # batch 64 < N: two batches, seeded separately
    "eps": {"L2": [0.1, 0.5, 1.0, 2.0], "Linf": [0.02, 0.1]},
    "attack": [
        {"type": "clean"},
        {"type": "noise", "sigma": 0.4},
        {"type": "noise", "norm": "L2"},
        {"type": "noise", "norm": "Linf"},
        {"type": "fgsm", "norm": "L2"},
        {"type": "fgsm", "norm": "Linf"},
        {"type": "pgd", "norm": "L2", "steps": 5},
        {"type": "pgd", "norm": "Linf", "steps": 5},
        {"type": "apgd", "norm": "L2", "steps": 5, "eps": [1.0]},
    ],
}, where="<eval-test>")
RANDOM_ATTACKS = {"noise", "pgd", "apgd-ce"}


@pytest.fixture(scope="module")
def mnist_small(data_dir):
    from robustclip.data import datasets as data
    from robustclip.training.config import TrainConfig
    from robustclip.training.trainer import train

    full = data.load("mnist", "train", data_dir=data_dir)
    val = data.Split(full.x[-500:], full.y[-500:], "mnist", "train", "test-slice")
    cfg = TrainConfig(dataset="mnist", reg="none", epochs=1, model={"arch": "fc", "sizes": [784, 64, 10],
                      "activation": "relu"}, optimizer="adam", lr=0.003, batch_size=64, lip_probe_pairs=0)
    model = train(cfg, progress=False, splits=(full.subset(3000), val)).model
    test = data.load("mnist", "test", data_dir=data_dir).subset(N)
    return model, test.x, test.y


@pytest.fixture(scope="module")
def results(mnist_small):
    model, x, y = mnist_small
    model.train()  # evaluate must switch to eval mode and back
    runs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flags are checked from EvalResult.flags
        for key, seed in (("a", 0), ("b", 0), ("c", 1)):
            runs[key] = evaluate(model, x, y, suite=SUITE, model_name="small", dataset="mnist", n_classes=10,
                                 seed=seed, progress=False)
    assert model.training, "evaluate() must restore the training mode"
    model.eval()
    return runs


def _rows(frame: pd.DataFrame, attack: str) -> pd.DataFrame:
    return frame[frame.attack == attack]


def _cells(res: EvalResult):
    return sorted({(nm, e) for (lab, nm, e) in res.correct if nm is not None})


# --------------------------------------------------------------------------- frame


def test_frame_columns_are_exactly_the_documented_ones(results):
    res = results["a"]
    assert list(res.frame.columns) == EXPECTED_COLUMNS
    assert COLUMNS == EXPECTED_COLUMNS
    f = res.frame
    assert set(f.model) == {"small"} and set(f.dataset) == {"mnist"} and set(f.n) == {N}
    assert set(f.norm) == {"none", "L2", "Linf"}
    # one row per (attack, norm, eps): clean, noise(sigma), each attack per eps, worst_case and certified per cell
    assert not f.duplicated(["attack", "norm", "eps"]).any()
    grid = SUITE.grid()
    assert len(_rows(f, "worst_case")) == len(grid)
    assert len(_rows(f, "certified")) == len(grid)
    assert len(f) == 1 + len(SUITE.attacks) - 1 + 2 * len(grid)
    noise_sigma = f[(f.attack == "noise") & (f.norm == "none")]
    assert len(noise_sigma) == 1 and noise_sigma.eps.iloc[0] == pytest.approx(0.4)


def test_accuracy_matches_per_sample_results_and_lies_in_its_wilson_interval(results):
    res = results["a"]
    for (label, norm, eps), ok in res.correct.items():
        assert ok.dtype == torch.bool and ok.shape == (N,)
        assert res.accuracy(label, norm, eps) == int(ok.sum()) / N
    for r in res.frame.itertuples():
        assert 0.0 <= r.ci_low <= r.accuracy <= r.ci_high <= 1.0
        k = round(r.accuracy * r.n)
        assert (r.ci_low, r.ci_high) == pytest.approx(wilson(k, r.n))


def test_wilson_against_hand_computed_values():
    # 8 of 10: p = 0.8, z = 1.959964 -> centre 0.71674, half-width 0.22658
    z = 1.959964
    lo, hi = wilson(8, 10)
    d = 1 + z * z / 10
    c = (0.8 + z * z / 20) / d
    h = z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400) / d
    assert (lo, hi) == pytest.approx((c - h, c + h), abs=1e-12)
    assert (lo, hi) == pytest.approx((0.490162, 0.943318), abs=1e-5)  # textbook value for 8/10
    assert wilson(0, 0) == (0.0, 1.0)
    lo0, hi0 = wilson(0, 50)
    assert lo0 == pytest.approx(0.0, abs=1e-12) and hi0 == pytest.approx(z * z / (50 + z * z), rel=1e-9)
    lo1, hi1 = wilson(50, 50)
    assert hi1 == pytest.approx(1.0, abs=1e-12) and lo1 == pytest.approx(50 / (50 + z * z), rel=1e-9)
    # symmetric and narrower with more samples
    assert wilson(3, 10)[0] == pytest.approx(1 - wilson(7, 10)[1])
    assert wilson(800, 1000)[1] - wilson(800, 1000)[0] < hi - lo


def test_wilson_interval_always_contains_the_observed_accuracy():
    # ci_low <= k/n <= ci_high must hold exactly, also at k = 0 and k = n (all wrong / all right),
    # where rounding in c - h and c + h can push the bound past the point estimate
    bad = [(k, n) for n in range(1, 201) for k in range(n + 1)
           if not wilson(k, n)[0] <= k / n <= wilson(k, n)[1]]
    assert not bad, f"{len(bad)} (k, n) with k/n outside its interval, e.g. {bad[:4]}: wilson(4, 4) = {wilson(4, 4)}"


# --------------------------------------------------------------------------- worst case and certificates


def test_worst_case_is_at_most_every_attack_at_the_same_cell(results):
    res = results["a"]
    f = res.frame
    for (norm, eps), specs in SUITE.grid().items():
        worst = res.accuracy("worst_case", norm, eps)
        for a in specs:
            assert worst <= res.accuracy(a.label, norm, eps) + 1e-12, (a.label, norm, eps)
    # the Gaussian (sigma) noise row is not norm-bounded and stays out of the worst case
    assert ("noise", None, 0.4) in res.correct
    assert len(f[(f.attack == "worst_case") & (f.norm == "none")]) == 0


def test_worst_case_is_monotone_non_increasing_in_eps(results):
    f = _rows(results["a"].frame, "worst_case")
    for norm in ("L2", "Linf"):
        accs = f[f.norm == norm].sort_values("eps").accuracy.tolist()
        assert len(accs) >= 2
        assert all(b <= a + 1e-12 for a, b in zip(accs, accs[1:])), (norm, accs)


def test_certified_le_worst_case_le_clean(results):
    res = results["a"]
    clean = res.accuracy("clean")
    assert clean > 0.7
    for norm, eps in _cells(res):
        cert, worst = res.accuracy("certified", norm, eps), res.accuracy("worst_case", norm, eps)
        assert cert <= worst <= clean, (norm, eps, cert, worst, clean)
    # the bound is finite and small radii certify something, so the check is not vacuous
    assert math.isfinite(res.lipschitz["upper"]) and res.lipschitz["upper"] > 0
    assert res.accuracy("certified", "L2", 0.1) > 0
    assert not any("INVARIANT" in fl for fl in res.flags)


def test_per_sample_worst_case_is_the_and_over_attacks(results):
    res = results["a"]
    clean = res.correct[("clean", None, None)]
    for norm in ("L2", "Linf"):
        cells = sorted(e for (nm, e) in SUITE.grid() if nm == norm)
        running = clean.clone()
        for eps in cells:
            here = clean.clone()
            for a in SUITE.grid()[(norm, eps)]:
                here &= res.correct[(a.label, norm, eps)]
            running &= here
            # the worst case at eps is the AND over every attack at this and every smaller eps
            assert res.accuracy("worst_case", norm, eps) == int(running.sum()) / N
            # so it never exceeds the AND at this eps alone
            assert res.accuracy("worst_case", norm, eps) <= int(here.sum()) / N
    # attacked samples are a subset of the clean-correct ones
    for key, ok in res.correct.items():
        assert not bool((ok & ~clean).any()), key


def test_perturbations_reported_in_meta_are_within_eps(results):
    res = results["a"]
    sizes = res.meta["max_perturbation"]
    assert len(sizes) == len(SUITE.attacks) - 1
    for key, size in sizes.items():
        label, norm, eps = key.split("|")
        if norm == "None":
            continue
        assert 0.0 < size <= float(eps) * (1 + 1e-4) + 1e-6, key
    assert res.meta["seed"] == 0 and res.meta["n"] == N and res.meta["batch_size"] == 64


# --------------------------------------------------------------------------- seeding


def test_same_seed_gives_identical_frame(results):
    assert_frame_equal(results["a"].frame, results["b"].frame)
    for key in results["a"].correct:
        assert torch.equal(results["a"].correct[key], results["b"].correct[key]), key


def test_different_seed_changes_random_attacks_only(results):
    a, c = results["a"], results["c"]
    assert c.meta["seed"] == 1
    differs = [k for k in a.correct if not torch.equal(a.correct[k], c.correct[k])]
    assert differs, "a different seed should change some random attack's per-sample results"
    assert all(k[0] in RANDOM_ATTACKS for k in differs), differs
    # deterministic rows are unaffected
    for key in a.correct:
        if key[0] in ("clean", "fgsm"):
            assert torch.equal(a.correct[key], c.correct[key]), key


def test_repeated_attack_label_at_same_cell_is_rejected():
    # refused where the suite is parsed, before any model or data is touched
    with pytest.raises(RobustclipError, match="twice"):
        parse_suite({"eps": {"L2": [0.5]}, "attack": [{"type": "fgsm", "norm": "L2"}, {"type": "fgsm", "norm": "L2"}]})


# --------------------------------------------------------------------------- input checks


def test_wrong_number_of_classes_and_bad_inputs_are_user_errors(mnist_small):
    _, x, y = mnist_small
    three = models.build({"arch": "fc", "sizes": [784, 16, 3], "activation": "relu"})
    with pytest.raises(RobustclipError, match="3 outputs"):
        check_outputs(three, x, 10)
    assert check_outputs(three, x, None) == 3
    with pytest.raises(RobustclipError, match="classes"):
        evaluate(three, x[:8], y[:8], suite=SUITE, n_classes=10, progress=False)
    flat = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Flatten(0))
    with pytest.raises(RobustclipError, match="shape"):
        check_outputs(flat, x, 10)
    with pytest.raises(RobustclipError, match=r"\[0,1\]"):
        evaluate(three, x[:8] * 2 - 0.5, y[:8], suite=SUITE, progress=False)


# --------------------------------------------------------------------------- sanity flags


class Saturated(nn.Module):
    """sigmoid(1e4 · logits): right answers, exactly zero input gradients almost everywhere."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(1e4 * self.inner(x))


FLAG_SUITE = parse_suite({"eps": {"L2": [1.0]}, "attack": [{"type": "clean"}, {"type": "fgsm", "norm": "L2"},
                                                           {"type": "pgd", "norm": "L2", "steps": 3}]})


def _flags(model, x, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate(model, x, y, suite=FLAG_SUITE, n_classes=10, lip_upper=1.0e6, progress=False).flags


def test_saturated_model_raises_the_zero_gradient_flag(mnist_small):
    model, x, y = mnist_small
    sat = Saturated(model).eval()
    xs, ys = x[:64], y[:64]
    # the construction really gives zero gradients on most inputs
    xi = xs.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(sat(xi), ys, reduction="sum"), xi)
    assert float((g.flatten(1).abs().amax(1) == 0).float().mean()) > 0.5
    flags = _flags(sat, xs, ys)
    assert any("exactly zero" in f for f in flags), flags


def test_normal_model_does_not_raise_the_zero_gradient_flag(mnist_small):
    model, x, y = mnist_small
    flags = _flags(model, x[:64], y[:64])
    assert not any("exactly zero" in f for f in flags), flags
    assert not any("beats iterative" in f for f in flags), flags


def test_noise_beating_pgd_is_flagged(mnist_small):
    model, x, y = mnist_small
    s = parse_suite({"eps": {"L2": [1.0]}, "attack": [{"type": "noise", "norm": "L2"}, {"type": "pgd", "norm": "L2"}]})
    n = 20
    clean = torch.ones(n, dtype=torch.bool)
    correct = {("clean", None, None): clean,
               ("noise", "L2", 1.0): torch.zeros(n, dtype=torch.bool),  # noise breaks everything ...
               ("pgd", "L2", 1.0): clean.clone()}  # ... while PGD breaks nothing: masking
    flags = sanity_flags(model, s, correct, x[:n], y[:n], pd.DataFrame(), seed=0, batch_size=n)
    assert any("noise" in f and "beats iterative" in f for f in flags), flags
    correct[("noise", "L2", 1.0)] = clean.clone()
    flags = sanity_flags(model, s, correct, x[:n], y[:n], pd.DataFrame(), seed=0, batch_size=n)
    assert not any("beats iterative" in f for f in flags), flags


# --- cascade (AutoAttack's order) and the black-box check ---------------------------------------------------------

def _cascade_suite(cascade: bool):
    return parse_suite({"name": "cascade", "batch_size": 64, "seed": 0, "cascade": cascade,
                        "eps": {"L2": [0.5, 1.0]},
                        "attack": [{"type": "clean"}, {"type": "fgsm", "norm": "L2"},
                                   {"type": "pgd", "norm": "L2", "steps": 5},
                                   {"type": "apgd", "norm": "L2", "steps": 5}]})


def test_cascade_runs_later_attacks_only_on_survivors_and_keeps_the_first_iterative_attack_whole(mnist_small):
    model, x, y = mnist_small
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        full = evaluate(model, x, y, suite=_cascade_suite(False), n_classes=10, progress=False)
        casc = evaluate(model, x, y, suite=_cascade_suite(True), n_classes=10, progress=False)
    assert casc.meta["cascade"] and "apgd-ce" in casc.meta["cascade_note"]
    for eps in (0.5, 1.0):
        # FGSM does not shrink the cascade, so PGD ran on every clean-correct sample with the same seeds
        assert torch.equal(full.correct[("pgd", "L2", eps)], casc.correct[("pgd", "L2", eps)])
        assert torch.equal(full.correct[("fgsm", "L2", eps)], casc.correct[("fgsm", "L2", eps)])
        # APGD's row is cumulative: robust to it and to PGD at this and every smaller ε
        apgd = casc.correct[("apgd-ce", "L2", eps)]
        assert not bool((apgd & ~casc.correct[("pgd", "L2", eps)]).any())
        assert not bool((apgd & ~casc.correct[("pgd", "L2", 0.5)]).any())
    # the worst case is the AND over every row at this and every smaller ε, either way
    for res in (full, casc):
        wc = res.correct[("clean", None, None)].clone()
        for eps in (0.5, 1.0):
            for a in ("fgsm", "pgd", "apgd-ce"):
                wc &= res.correct[(a, "L2", eps)]
            assert res.accuracy("worst_case", "L2", eps) == pytest.approx(float(wc.float().mean()))


def test_cascade_must_be_a_boolean():
    from robustclip.errors import SuiteError

    with pytest.raises(SuiteError, match="cascade must be true or false"):
        parse_suite({"cascade": "yes", "attack": [{"type": "pgd", "norm": "L2", "eps": 1.0}]})


class Quantised(nn.Module):
    """Rounds its input to 4 grey levels before a model: gradients are zero almost everywhere, queries still work."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * 3) / 3)


def test_square_breaking_what_gradient_attacks_missed_is_flagged(mnist_small):
    model, x, y = mnist_small
    q = Quantised(model).eval()
    s = parse_suite({"name": "bb", "batch_size": 64, "seed": 0, "cascade": True, "eps": {"Linf": [0.3]},
                     "attack": [{"type": "clean"}, {"type": "pgd", "norm": "Linf", "steps": 5},
                                {"type": "square", "norm": "Linf", "n_queries": 300}]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = evaluate(q, x[:64], y[:64], suite=s, n_classes=10, progress=False)
    pgd = res.correct[("pgd", "Linf", 0.3)]
    square = res.correct[("square", "Linf", 0.3)]
    assert int((pgd & ~square).sum()) > 1, "the construction must let Square break what PGD cannot"
    assert any("square" in f and "every gradient attack missed" in f for f in res.flags), res.flags
