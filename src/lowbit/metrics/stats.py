"""Point estimates with honest uncertainty.

Every aggregate lowbit reports is the mean of one number per sample (a sample's score is already averaged over
its completions), so its uncertainty is that of a mean over n independent samples:

- binary per-sample scores (each 0 or 1): the Wilson score interval, which keeps its coverage near 0% and
  100% accuracy, where the normal interval collapses to a point (e.g. 50/50 correct gives [92.9%, 100%],
  not [100%, 100%]);
- any other per-sample scores (partial credit, majority votes split by ties): the normal interval
  mean ± z·s/√n with the sample standard deviation s (ddof=1);
- means over problems whose values come from several sampled completions each (avg@n, pass@k with n > 1):
  a seeded cluster bootstrap over problems (`cluster_bootstrap_estimate`, below; `problem_mean_estimate`
  chooses between it and the two above).

`stderr` is always s/√n of the per-sample scores, so two estimates can be compared on the same footing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist


@dataclass(frozen=True)
class Estimate:
    value: float | None
    n: int
    stderr: float | None
    ci_low: float | None
    ci_high: float | None
    method: str
    confidence: float = 0.95

    def to_json(self) -> dict:
        return asdict(self)


def z_value(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def mean_estimate(values: Sequence[float], confidence: float = 0.95) -> Estimate:
    """The mean of per-sample scores with its standard error and a `confidence` interval."""
    n = len(values)
    if n == 0:
        return Estimate(None, 0, None, None, None, "empty", confidence)
    mean = math.fsum(values) / n
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
    stderr = math.sqrt(variance / n)
    z = z_value(confidence)
    if all(v in (0, 1) for v in values):
        low, high = wilson_interval(round(mean * n), n, z)
        return Estimate(mean, n, stderr, low, high, "wilson", confidence)
    return Estimate(mean, n, stderr, max(mean - z * stderr, min(values)), min(mean + z * stderr, max(values)),
                    "normal", confidence)


def wilson_interval(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion."""
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # at 0 or n successes one end is exactly the point, which the arithmetic above misses by a rounding error
    low = 0.0 if successes == 0 else max(0.0, center - half_width)
    high = 1.0 if successes == n else min(1.0, center + half_width)
    return low, high


# ------------------------------------------------------------------------------- several samples per problem
#
# With n > 1 completions per problem the completions of one problem are not independent (an easy problem is
# solved by most of its samples), so the unit of resampling is the problem: a cluster bootstrap draws problems
# with replacement and recomputes the mean of their per-problem values (avg@n: the fraction of a problem's
# samples that are correct; pass@k: the problem's unbiased pass@k estimate). The percentile interval of the
# resampled means is reported; `stderr` stays s/√n of the per-problem values, as for the other methods.
#
# Worked example: 3 problems with 4 samples each, correct (4, 0, 2) -> per-problem values (1, 0, 0.5),
# avg@4 = 0.5; a resample that draws problems (1, 1, 3) has mean (1 + 1 + 0.5) / 3 = 0.833.

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 20_250_101
_BOOTSTRAP_CHUNK = 1_000  # resamples drawn at once: bounds memory at chunk x problems indices


def cluster_bootstrap_estimate(per_problem: Sequence[float], confidence: float = 0.95, *,
                               resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> Estimate:
    """The mean of per-problem values with a seeded percentile-bootstrap interval that resamples problems.

    The same inputs always give the same interval (the generator is seeded with `seed`)."""
    import numpy as np

    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n = len(per_problem)
    if n == 0:
        return Estimate(None, 0, None, None, None, "empty", confidence)
    values = np.asarray(per_problem, dtype=np.float64)
    mean = math.fsum(per_problem) / n
    stderr = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, _BOOTSTRAP_CHUNK):
        stop = min(start + _BOOTSTRAP_CHUNK, resamples)
        draws = rng.integers(0, n, size=(stop - start, n))  # (chunk, problems): problem indices per resample
        means[start:stop] = values[draws].mean(axis=1)
    alpha = 1 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return Estimate(mean, n, stderr, float(low), float(high), "cluster_bootstrap", confidence)


def problem_mean_estimate(per_problem: Sequence[float], samples_per_problem: int,
                          confidence: float = 0.95) -> Estimate:
    """The interval lowbit reports for a mean over problems: the cluster bootstrap when each problem's value
    comes from several samples, otherwise `mean_estimate` (Wilson or normal).

    Exception: when every problem's value is 0 (or every one is 1), every resample has the same mean and the
    bootstrap interval collapses to a point. There the Wilson interval over problems is reported, counting each
    problem as one outcome (none of its samples correct, or all of them). It is conservative: the share of
    problems with any correct sample bounds the mean solve rate from above, the share with all samples correct
    bounds it from below."""
    if samples_per_problem > 1 and not (all(v == 0 for v in per_problem) or all(v == 1 for v in per_problem)):
        return cluster_bootstrap_estimate(per_problem, confidence)
    return mean_estimate(per_problem, confidence)
