"""Student's t distribution in pure Python, and the 95% intervals of the study reports
(:mod:`nlsam.analysis.report`).

:func:`t_cdf` goes through the regularized incomplete beta function (its continued fraction, or
a power series where the fraction would lose digits), :func:`t_quantile` bisects the tail
probability; both take any ``df > 0``, fractional (Welch's degrees of freedom) or ``math.inf``.
The intervals: :func:`welch_interval` (a difference of means, unequal variances),
:func:`paired_interval` (the mean of per-seed differences) and :func:`mean_interval` (the mean
of one sample).
"""

from __future__ import annotations

import math
from statistics import fmean, stdev, variance
from typing import Dict, Optional, Sequence, Tuple

__all__ = [
    "mean_interval",
    "paired_interval",
    "t_cdf",
    "t_quantile",
    "t_quantile_975",
    "welch_interval",
]

_EPS = 1e-16
_LARGE_DF = 2e4  # above: the central probability is summed as a series (see _t_tail)


def _log_beta(a: float, b: float) -> float:
    """``log B(a, b)``; for a large argument through Stirling's series, so that the difference
    ``lgamma(big) - lgamma(big + small)`` keeps its digits (lgamma of 5e8 is about 1e10)."""
    small, big = min(a, b), max(a, b)
    if big < 20:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)

    def correction(z: float) -> float:  # lgamma(z) - ((z - 1/2) log z - z + log(2 pi) / 2)
        z2 = z * z
        return (1 / 12 - (1 / 360 - (1 / 1260 - 1 / (1680 * z2)) / z2) / z2) / z

    difference = (
        -small * math.log(big)
        - (big + small - 0.5) * math.log1p(small / big)
        + small
        + correction(big)
        - correction(big + small)
    )
    return math.lgamma(small) + difference


def _beta_front(a: float, b: float, x: float, y: float) -> float:
    """``x**a * y**b / B(a, b)`` with ``y = 1 - x`` (both given, so that neither loses digits)."""
    log_x = math.log(x) if x <= 0.5 else math.log1p(-y)
    log_y = math.log(y) if y <= 0.5 else math.log1p(-x)
    return math.exp(a * log_x + b * log_y - _log_beta(a, b))


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function, by the modified Lentz method."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        for coefficient in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + coefficient * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + coefficient / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < _EPS:
            return h
    raise ArithmeticError(f"the incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def _beta_series(a: float, b: float, x: float, y: float) -> float:
    """``I_x(a, b)`` as the power series ``x^a y^b / (a B(a, b)) sum_n (a+b)_n / (a+1)_n x^n``
    (all terms positive; converges for x < 1, quickly when ``b x`` is moderate)."""
    if x <= 0.0:
        return 0.0
    term, total, n = 1.0, 1.0, 0
    while term > _EPS * total:
        term *= (a + b + n) * x / (a + 1 + n)
        total += term
        n += 1
    return _beta_front(a, b, x, y) * total / a


def _regularized_beta(a: float, b: float, x: float, y: Optional[float] = None) -> float:
    """The regularized incomplete beta function ``I_x(a, b)`` (a, b > 0, 0 <= x <= 1); pass
    ``y = 1 - x`` when it is known more exactly than ``1 - x``."""
    y = 1.0 - x if y is None else y
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    # the fraction converges quickly below (a + 1) / (a + b + 2); above, use I_x(a, b) = 1 - I_y(b, a)
    if x < (a + 1.0) / (a + b + 2.0):
        return _beta_front(a, b, x, y) * _beta_fraction(a, b, x) / a
    return 1.0 - _beta_front(a, b, x, y) * _beta_fraction(b, a, y) / b


def _check_df(df: float) -> None:
    if not df > 0:  # also rejects nan
        raise ValueError(f"degrees of freedom must be > 0, got {df}")


def _t_tail(t: float, df: float) -> float:
    """``P(T > t)`` for ``t >= 0``: ``I_x(df/2, 1/2) / 2`` with ``x = df / (df + t^2)``."""
    if math.isinf(df):
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    if t > 1e150:  # t^2 overflows (only tiny df get there): I_x(a, b) = x^a / (a B(a, b)) to 1e-300
        a = df / 2
        return 0.5 * math.exp(a * (math.log(df) - 2 * math.log(t)) - _log_beta(a, 0.5)) / a
    t2 = t * t
    x, y = df / (df + t2), t2 / (df + t2)
    if df > _LARGE_DF and t2 < 1000.0:
        # near x = 1 the fraction loses about df * 1e-16 (relative); the central probability
        # P(|T| < t) = I_y(1/2, df/2) is a series of positive terms there, exact to 1e-16
        # (absolute, so 1e-16 / tail relative): the better of the two unless tail < 1 / df
        # (always so from t^2 = 1000 on, where the tail is below 1e-200)
        tail = 0.5 * (1.0 - _beta_series(0.5, df / 2, y, x))
        if tail * df > 1.0:
            return tail
    return 0.5 * _regularized_beta(df / 2, 0.5, x, y)


def t_cdf(x: float, df: float) -> float:
    """``P(T <= x)`` for Student's t with ``df > 0`` (possibly fractional, or ``math.inf``)
    degrees of freedom."""
    _check_df(df)
    tail = _t_tail(abs(x), df)
    return tail if x < 0 else 1.0 - tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df > 0`` degrees of freedom (possibly fractional,
    or ``math.inf``): bisection on the tail probability, to a relative 1e-12 or better, except
    for tails below 1e-8 at df above 1e9 (1e-5 there)."""
    _check_df(df)
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs a probability strictly between 0 and 1, got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    tail = 1.0 - p
    if tail == 0.5:
        return 0.0
    low, high = 0.0, 1.0
    while _t_tail(high, df) > tail:
        if high > 1e300:  # tiny df: the quantile exceeds the floats
            return math.inf
        low, high = high, 2.0 * high
    while high - low > 1e-13 * high:
        middle = 0.5 * (low + high)
        if _t_tail(middle, df) > tail:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def t_quantile_975(df: float) -> float:
    """The 0.975 quantile of Student's t with ``df`` (possibly fractional) degrees of freedom."""
    return t_quantile(0.975, df)


def welch_interval(a: Sequence[float], b: Sequence[float]) -> Optional[Tuple[float, float, float]]:
    """Mean difference ``mean(a) - mean(b)`` and its 95% Welch interval; None with < 2 samples."""
    if len(a) < 2 or len(b) < 2:
        return None
    diff = fmean(a) - fmean(b)
    va, vb = variance(a) / len(a), variance(b) / len(b)
    if va + vb == 0:
        return diff, diff, diff
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile_975(df) * math.sqrt(va + vb)
    return diff, diff - half, diff + half


def paired_interval(a: Dict[int, float], b: Dict[int, float]) -> Optional[Tuple[float, float, float, int]]:
    """Mean of ``a[seed] - b[seed]`` over the seeds both have, its 95% t interval (n - 1 degrees
    of freedom) and n; None with fewer than 2 shared seeds."""
    diffs = [a[seed] - b[seed] for seed in a if seed in b]
    if len(diffs) < 2:
        return None
    interval = mean_interval(diffs)
    assert interval is not None  # at least two differences
    mean, half = interval
    return mean, mean - half, mean + half, len(diffs)


def mean_interval(values: Sequence[float]) -> Optional[Tuple[float, float]]:
    """The mean of ``values`` and the half-width of its 95% t interval (Student's t with n - 1
    degrees of freedom); the half-width is nan for a single value; None for none."""
    if not values:
        return None
    if len(values) == 1:
        return float(values[0]), math.nan
    half = t_quantile_975(len(values) - 1) * stdev(values) / math.sqrt(len(values))
    return fmean(values), half
