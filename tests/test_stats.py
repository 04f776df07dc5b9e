"""robustclip.stats against published values: Newcombe's Wilson intervals, Student-t tables, exact binomial tails
and the coverage of the prediction interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robustclip import stats

# Newcombe, R. G. (1998). Two-sided confidence intervals for the single proportion: comparison of seven methods.
# Statistics in Medicine 17, 857-872, Table I, method 3 (Wilson score, no continuity correction).
NEWCOMBE = [((81, 263), (0.2553, 0.3662)), ((15, 148), (0.0624, 0.1605)), ((0, 20), (0.0, 0.1611)),
            ((1, 29), (0.0061, 0.1718))]


@pytest.mark.parametrize("kn,published", NEWCOMBE)
def test_wilson_matches_newcombe(kn, published):
    assert stats.wilson(*kn) == pytest.approx(published, abs=1e-4)


def test_wilson_edges_and_symmetry():
    assert stats.wilson(0, 0) == (0.0, 1.0)
    assert stats.wilson(3, 10)[0] == pytest.approx(1 - stats.wilson(7, 10)[1])
    lo, hi = stats.wilson(50, 50)
    assert hi == 1.0 and lo == pytest.approx(50 / (50 + stats.Z95**2), rel=1e-12)
    # a larger z widens the interval
    assert stats.wilson(40, 100, z=2.576)[0] < stats.wilson(40, 100)[0]


# Student's t quantiles, from the standard printed table (e.g. NIST/SEMATECH e-Handbook, 1.3.6.7.2), 3 decimals.
T_TABLE = [(0.975, 1, 12.706), (0.975, 2, 4.303), (0.975, 4, 2.776), (0.975, 10, 2.228), (0.975, 30, 2.042),
           (0.975, 60, 2.000), (0.975, 120, 1.980), (0.95, 7, 1.895), (0.99, 30, 2.457), (0.995, 5, 4.032),
           (0.90, 3, 1.638)]


@pytest.mark.parametrize("p,df,published", T_TABLE)
def test_t_quantile_matches_the_published_table(p, df, published):
    assert stats.t_quantile(p, df) == pytest.approx(published, abs=6e-4)


def test_t_quantile_refuses_nonsense():
    for p, df in ((0.975, 0), (1.0, 4), (0.0, 4)):
        with pytest.raises(ValueError):
            stats.t_quantile(p, df)


def test_z_quantile():
    assert stats.z_quantile(0.025) == pytest.approx(1.959964, abs=1e-6)
    assert stats.z_quantile(0.05) == pytest.approx(1.644854, abs=1e-6)


def test_exact_mcnemar_is_the_binomial_tail():
    assert stats.mcnemar_p(5, 0) == pytest.approx(1 / 32)
    assert stats.mcnemar_p(10, 2) == pytest.approx((1 + 12 + 66) / 4096)  # P(X >= 10), X ~ Bin(12, 1/2)
    assert stats.mcnemar_p(0, 0) == 1.0 and stats.mcnemar_p(0, 7) == 1.0
    for k, n in ((3, 9), (17, 30), (250, 480)):
        brute = sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n
        assert stats.binom_tail_half(k, n) == pytest.approx(brute, rel=1e-12)
    with pytest.raises(ValueError):
        stats.mcnemar_p(-1, 3)


def test_prediction_interval_formula_and_coverage():
    v = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert stats.prediction_halfwidth(v, 0.05) == pytest.approx(2.1318 * math.sqrt(2.5) * math.sqrt(1.2), abs=1e-3)
    assert stats.prediction_halfwidth([3.0], 0.05) == 0.0
    # one new draw falls below mean - half in about alpha of the repetitions (normal data, K = 5)
    rng = np.random.default_rng(0)
    trials, below = 4000, 0
    for _ in range(trials):
        x = rng.normal(size=6)
        below += x[5] < x[:5].mean() - stats.prediction_halfwidth(list(x[:5]), 0.1)
    assert abs(below / trials - 0.1) < 0.02


def test_mean_halfwidth_is_the_t_interval():
    assert stats.mean_halfwidth(1.0, 5) == pytest.approx(2.776 / math.sqrt(5), abs=1e-3)
    with pytest.raises(ValueError):
        stats.mean_halfwidth(1.0, 1)
