import math
import random

import pytest

from lowbit.metrics.stats import mean_estimate, wilson_interval, z_value


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), Statistics in Medicine 17:857, table I: 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605
    low, high = wilson_interval(81, 263, z_value(0.95))
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    low, high = wilson_interval(15, 148, z_value(0.95))
    assert (round(low, 4), round(high, 4)) == (0.0624, 0.1605)


def test_perfect_accuracy_still_has_uncertainty():
    estimate = mean_estimate([1.0] * 50)
    assert estimate.value == 1.0 and estimate.method == "wilson"
    assert estimate.ci_high == 1.0 and 0.92 < estimate.ci_low < 0.94


def test_all_or_none_right_puts_one_end_exactly_on_the_point():
    """Exactly 1 and 0 (the plain formula misses them by a rounding error for 186 of these n)."""
    for n in range(1, 600):
        assert wilson_interval(n, n, z_value(0.95))[1] == 1.0 and wilson_interval(0, n, z_value(0.95))[0] == 0.0


def test_partial_scores_use_the_normal_interval():
    values = [0.0, 0.25, 0.5, 0.75, 1.0] * 20
    estimate = mean_estimate(values)
    assert estimate.method == "normal" and estimate.n == 100
    sd = math.sqrt(sum((v - 0.5) ** 2 for v in values) / 99)
    assert estimate.stderr == pytest.approx(sd / 10)
    assert estimate.ci_low == pytest.approx(0.5 - 1.959964 * sd / 10, abs=1e-6)


def test_empty_input_has_no_value():
    assert mean_estimate([]).value is None


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_wilson_intervals_cover_at_about_the_nominal_rate(p):
    rng = random.Random(1234)
    trials, n, covered = 2000, 200, 0
    for _ in range(trials):
        estimate = mean_estimate([float(rng.random() < p) for _ in range(n)])
        covered += estimate.ci_low <= p <= estimate.ci_high
    assert 0.93 <= covered / trials <= 0.97
