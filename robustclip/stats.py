"""Statistics, one implementation each: the Wilson interval, Student-t quantiles, the exact McNemar test, the
prediction interval of one new draw, and the comparison of two models (Newcombe's paired and unpaired intervals of a
difference, Fisher's exact test, Welch's t over seeds, Holm's correction).

Every figure robustclip reports with an interval, every gate verdict and every seed table comes from here, so two
parts of the toolkit can never disagree about a quantile. The distributions are scipy's (``scipy.stats``); this
module holds the formulas around them and the edge cases (k = 0, k = n, one seed).

Accuracies are fractions in [0, 1]; ``alpha`` is a one-sided error rate in (0, 1).

>>> lo, hi = wilson(81, 263)            # Newcombe (1998), Table I, method 3
>>> round(lo, 4), round(hi, 4)
(0.2553, 0.3662)
>>> round(t_quantile(0.975, 4), 3)      # any table of Student's t
2.776
>>> mcnemar_p(10, 2) == (1 + 12 + 66) / 4096   # P(X >= 10), X ~ Bin(12, 1/2)
True
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from scipy import stats as _sps

Z95 = 1.959964
"""The two-sided 95% normal quantile ``z(0.975)``, to the six decimals robustclip has always used."""


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval ``(lo, hi)`` for ``k`` successes out of ``n`` trials (fractions in [0, 1]).

    ``z`` is the normal quantile of the interval (1.96: two-sided 95%). With ``n = 0`` nothing is known:
    ``(0, 1)``. The ends are exact at ``k = 0`` and ``k = n``, and the interval always contains ``k / n``.

    >>> wilson(0, 0)
    (0.0, 1.0)
    >>> [round(v, 4) for v in wilson(15, 148)]   # Newcombe (1998), Table I
    [0.0624, 0.1605]
    """
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    lo = 0.0 if k == 0 else min(p, max(0.0, c - h))  # exact ends; rounding must not exclude p
    hi = 1.0 if k == n else max(p, min(1.0, c + h))
    return (lo, hi)


def z_quantile(alpha: float) -> float:
    """The one-sided normal quantile ``z(1 - alpha)``.

    >>> round(z_quantile(0.025), 4)
    1.96
    """
    return statistics.NormalDist().inv_cdf(1.0 - alpha)


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` > 0 degrees of freedom.

    >>> round(t_quantile(0.95, 7), 4)
    1.8946
    """
    if not df > 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie in (0, 1), got {p}")
    return float(_sps.t.ppf(p, df))


def binom_tail_half(k: int, n: int) -> float:
    """``P(X >= k)`` for X ~ Bin(n, 1/2), exact (integer arithmetic), for ``0 <= k``.

    >>> binom_tail_half(8, 10) == 56 / 1024
    True
    """
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    term = math.comb(n, k)
    total = term
    for i in range(k, n):
        term = term * (n - i) // (i + 1)
        total += term
    return total / (1 << n)


def mcnemar_p(losses: int, gains: int) -> float:
    """One-sided exact McNemar p-value of "worse now": ``P(X >= losses)``, X ~ Bin(losses + gains, 1/2).

    ``losses``: samples right before and wrong now; ``gains``: the reverse. Concordant samples carry no information
    about a change and do not enter.

    >>> mcnemar_p(5, 0) == 1 / 32
    True
    """
    if losses < 0 or gains < 0:
        raise ValueError("counts must be >= 0")
    return binom_tail_half(losses, losses + gains)


def prediction_halfwidth(values: Sequence[float], alpha: float) -> float:
    """One-sided ``(1 - alpha)`` prediction half-width for one new draw from the distribution ``values`` sample:
    ``t(1 - alpha, K-1) · sd · sqrt(1 + 1/K)`` with the sample sd (ddof = 1) of the K values; 0 when K < 2.

    >>> round(prediction_halfwidth([1.0, 2.0, 3.0, 4.0, 5.0], 0.05), 4)
    3.6925
    """
    k = len(values)
    if k < 2:
        return 0.0
    sd = statistics.stdev(values)
    return t_quantile(1.0 - alpha, k - 1) * sd * math.sqrt(1.0 + 1.0 / k)


def mean_halfwidth(sd: float, n: int, level: float = 0.95) -> float:
    """Half-width of the two-sided ``level`` Student-t interval of a mean over ``n`` >= 2 values with sample sd ``sd``:
    ``t((1 + level) / 2, n-1) · sd / sqrt(n)``.

    >>> round(mean_halfwidth(1.0, 5), 4)
    1.2417
    """
    if n < 2:
        raise ValueError(f"an interval of a mean needs n >= 2 values, got {n}")
    return t_quantile((1.0 + level) / 2.0, n - 1) * sd / math.sqrt(n)


# --------------------------------------------------------------------------- comparisons of two models


def mcnemar_two_sided(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value of "A and B differ": ``min(1, 2 · P(X >= max(a_only, b_only)))``,
    X ~ Bin(a_only + b_only, 1/2).

    ``a_only``: samples A gets right and B wrong; ``b_only``: the reverse (the discordant pairs; concordant
    samples do not enter). Equal counts (no discordant samples included) give 1.

    >>> mcnemar_two_sided(10, 2) == 2 * mcnemar_p(10, 2)
    True
    >>> mcnemar_two_sided(3, 3), mcnemar_two_sided(0, 0)
    (1.0, 1.0)
    """
    return min(1.0, 2.0 * mcnemar_p(max(a_only, b_only), min(a_only, b_only)))


def newcombe_paired(both: int, a_only: int, b_only: int, neither: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score ("square-and-add") interval ``(lo, hi)`` of the paired difference ``p_A − p_B``
    (fractions in [-1, 1]): method 10 of Newcombe (1998, Stat. Med. 17:2635), as in Fagerland, Lydersen & Laake
    (2017), ch. 8.

    The four counts are the paired 2×2 table over the same n samples: right by both, by A only, by B only, by
    neither. It combines the Wilson intervals of ``p_A`` and ``p_B`` with their estimated correlation φ (shrunk
    towards 0 by ``n/2`` when positive), so it stays inside [-1, 1], is never degenerate at 0 discordant samples
    and has coverage close to nominal at the n of a test set.

    >>> [round(v, 4) for v in newcombe_paired(59, 6, 16, 80)]   # Cavo et al. (2012), Fagerland et al. ch. 8
    [-0.1186, -0.0046]
    """
    n = both + a_only + b_only + neither
    if n == 0:
        return (-1.0, 1.0)
    ka, kb = both + a_only, both + b_only
    pa, pb = ka / n, kb / n
    la, ua = wilson(ka, n, z)
    lb, ub = wilson(kb, n, z)
    margins = ka * (n - ka) * kb * (n - kb)
    phi = 0.0
    if margins > 0:
        det = both * neither - a_only * b_only
        phi = (det - n / 2) / math.sqrt(margins) if det > n / 2 else min(det, 0) / math.sqrt(margins)
    d = pa - pb
    lo = d - math.sqrt(max(0.0, (pa - la) ** 2 + (ub - pb) ** 2 - 2 * phi * (pa - la) * (ub - pb)))
    hi = d + math.sqrt(max(0.0, (pb - lb) ** 2 + (ua - pa) ** 2 - 2 * phi * (pb - lb) * (ua - pa)))
    return (max(-1.0, min(lo, d)), min(1.0, max(hi, d)))


def newcombe_unpaired(ka: int, na: int, kb: int, nb: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's hybrid score interval ``(lo, hi)`` of ``ka/na − kb/nb`` for two independent samples (method 10 of
    Newcombe 1998, Stat. Med. 17:873): the Wilson intervals of each proportion, squared and added.

    >>> [round(v, 4) for v in newcombe_unpaired(7, 34, 1, 34)]   # Perondi et al. (2004), Fagerland et al. ch. 4
    [0.0189, 0.3404]
    """
    if na == 0 or nb == 0:
        return (-1.0, 1.0)
    pa, pb = ka / na, kb / nb
    la, ua = wilson(ka, na, z)
    lb, ub = wilson(kb, nb, z)
    d = pa - pb
    lo = d - math.sqrt((pa - la) ** 2 + (ub - pb) ** 2)
    hi = d + math.sqrt((ua - pa) ** 2 + (pb - lb) ** 2)
    return (max(-1.0, lo), min(1.0, hi))


def fisher_p(ka: int, na: int, kb: int, nb: int) -> float:
    """Two-sided p-value of Fisher's exact test that ``ka`` of ``na`` and ``kb`` of ``nb`` come from one proportion
    (scipy's, which sums the tables no more likely than the one observed).

    >>> round(fisher_p(7, 34, 1, 34), 4)
    0.0544
    """
    if na == 0 or nb == 0:
        return 1.0
    return float(_sps.fisher_exact([[ka, na - ka], [kb, nb - kb]]).pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: reject every hypothesis whose adjusted p is below
    ``alpha`` and the family-wise error rate stays at most ``alpha``, for any dependence between the tests.

    The i-th smallest p (from 1) is multiplied by ``m − i + 1``, capped at 1, and made monotone.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    out = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float, float]:
    """Welch's t comparison of the means of ``a`` and ``b`` (e.g. one accuracy per seed of two settings, fractions):
    ``(mean(a) − mean(b), lo, hi, two-sided p)``, the interval at ``level`` with Welch–Satterthwaite degrees of
    freedom. Each side needs at least 2 values. With no spread on either side, the interval is the point and p is
    0 (a difference) or 1 (none).

    >>> d, lo, hi, p = welch([0.80, 0.82, 0.81], [0.70, 0.74, 0.72])
    >>> round(d, 4), round(lo, 4), round(hi, 4), round(p, 5)   # p as scipy.stats.ttest_ind(equal_var=False)
    (0.09, 0.0484, 0.1316, 0.00646)
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"Welch's t needs at least 2 values per side, got {len(a)} and {len(b)}")
    d = statistics.fmean(a) - statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return (d, d, d, 0.0 if d != 0.0 else 1.0)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile((1.0 + level) / 2.0, df) * se
    p = float(2.0 * _sps.t.sf(abs(d) / se, df))
    return (d, d - half, d + half, min(1.0, p))
