"""Statistics, one implementation each: the Wilson interval, Student-t quantiles, the exact McNemar test and the
prediction interval of one new draw.

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
