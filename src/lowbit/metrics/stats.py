"""Point estimates with honest uncertainty.

Every aggregate lowbit reports is the mean of one number per sample (a sample's score is already averaged over
its completions), so its uncertainty is that of a mean over n independent samples:

- binary per-sample scores (each 0 or 1): the Wilson score interval, which keeps its coverage near 0% and
  100% accuracy, where the normal interval collapses to a point (e.g. 50/50 correct gives [92.9%, 100%],
  not [100%, 100%]);
- any other per-sample scores (avg@n over several completions, partial credit): the normal interval
  mean ± z·s/√n with the sample standard deviation s (ddof=1).

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
    return max(0.0, center - half_width), min(1.0, center + half_width)
