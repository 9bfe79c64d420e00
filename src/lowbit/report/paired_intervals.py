"""Confidence intervals for a paired difference that keep their coverage at small n and when no pair differs.

A percentile bootstrap of paired differences collapses to a point when every pair agrees (8 identical answers
give "+0.00 [+0.00, +0.00]") and undercovers at small n. lowbit uses instead:

- **0/1 scores: Tango's score interval** for the difference of paired proportions (Tango, Statistics in Medicine
  1998). With n pairs, b right->wrong and c wrong->right, the difference is delta = (c - b) / n. For a candidate
  value d the score statistic is

      Z(d) = (c - b - n d) / sqrt(n (2 p~ + d - d^2))

  where p~ is the maximum-likelihood probability of a right->wrong pair under the constraint delta = d (the
  positive root of 2n p^2 - B p - b d (1 - d) = 0 with B = (b + c)(1 - d) - 2 d (n - c)). The 95% interval is
  every d with |Z(d)| <= 1.96, found by bisection (Z decreases in d). When no pair differs it is
  +-z^2 / (n + z^2): +-32.4 points at n = 8, +-0.76 points at n = 500; it never shrinks to a point.
- **Other scores (avg@n, partial credit): an adjusted normal interval.** Differences lie in [-1, 1]; two
  pseudo-pairs at -1 and +1, each of weight 1/2, are added before the mean and its standard error are computed
  (the idea of Agresti and Min's adjusted interval for paired proportions). The point estimate shrinks towards 0
  by n / (n + 1), the variance never vanishes, and the adjustment fades as n grows: at n = 8 with all pairs equal the
  interval is +-23 points, at n = 500 +-0.39 points.

`tests/unit/test_paired_stats.py` checks coverage by simulation at n = 8, 20, 50 and 500, including runs where
every pair agrees and runs with a single flip.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from statistics import NormalDist

import numpy as np

_BISECTION_STEPS = 60  # halves [-1, 1] down to ~1e-18


def z_value(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def tango_interval(n: int, right_to_wrong: int, wrong_to_right: int, confidence: float) -> tuple[float, float]:
    """Tango's score interval for (wrong_to_right - right_to_wrong) / n, as fractions."""
    b, c = right_to_wrong, wrong_to_right
    if n <= 0 or b < 0 or c < 0 or b + c > n:
        raise ValueError(f"need 0 <= b + c <= n with n > 0, got n={n}, b={b}, c={c}")
    z = z_value(confidence)
    estimate = (c - b) / n
    low = _bisect(lambda d: _tango_score(n, b, c, d) <= z, -1.0, estimate)
    high = _bisect(lambda d: _tango_score(n, b, c, d) < -z, estimate, 1.0)
    return low, high


def _tango_score(n: int, b: int, c: int, d: float) -> float:
    """Z(d); +-inf where the constrained variance vanishes (d = +-1 or a degenerate table)."""
    if d <= -1.0 or d >= 1.0:
        return -math.inf if d >= 1.0 else math.inf
    big_b = (b + c) * (1 - d) - 2 * d * (n - c)
    p = (big_b + math.sqrt(max(big_b * big_b + 8 * n * b * d * (1 - d), 0.0))) / (4 * n)
    p = min(max(p, max(0.0, -d)), (1 - d) / 2)  # the feasible range of the right->wrong probability
    variance = n * (2 * p + d - d * d)
    numerator = c - b - n * d
    if variance <= 0:
        return 0.0 if numerator == 0 else math.copysign(math.inf, numerator)
    return numerator / math.sqrt(variance)


def _bisect(turned: Callable[[float], bool], left: float, right: float) -> float:
    """The point in [left, right] where a monotone predicate turns from False to True."""
    if turned(left):
        return left
    for _ in range(_BISECTION_STEPS):
        middle = (left + right) / 2
        if turned(middle):
            right = middle
        else:
            left = middle
    return (left + right) / 2


def adjusted_interval(differences: np.ndarray, confidence: float) -> tuple[float, float]:
    """Normal interval of mean(differences) with pseudo-pairs -1 and +1 of weight 1/2 each (differences in [-1, 1])."""
    differences = np.asarray(differences, dtype=np.float64)
    n, weight = differences.size, 0.5
    total = n + 2 * weight
    mean = float(differences.sum()) / total
    squares = float(((differences - mean) ** 2).sum()) + weight * ((1 - mean) ** 2 + (1 + mean) ** 2)
    half = z_value(confidence) * math.sqrt(squares / (total - 1) / total)
    return max(-1.0, mean - half), min(1.0, mean + half)
