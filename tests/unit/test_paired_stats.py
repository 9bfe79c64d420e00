"""Paired statistics against values known by hand or by construction, and their calibration by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lowbit.report.paired_intervals import adjusted_interval, tango_interval
from lowbit.report.paired_stats import compare_paired, mcnemar_exact, sign_flip_test


def planted_pairs(n: int, base_correct: int, right_to_wrong: int, wrong_to_right: int, seed: int = 0):
    """0/1 baseline and candidate scores with exactly the given numbers of flips, in a shuffled order."""
    baseline = np.r_[np.ones(base_correct), np.zeros(n - base_correct)]
    candidate = baseline.copy()
    candidate[:right_to_wrong] = 0
    candidate[base_correct:base_correct + wrong_to_right] = 1
    order = np.random.default_rng(seed).permutation(n)
    return baseline[order], candidate[order]


# ------------------------------------------------------------------------------------------- McNemar


@pytest.mark.parametrize(("b", "c", "expected"), [
    (3, 0, 2 * 1 / 8),                       # 2 * P(X <= 0), X ~ Bin(3, 1/2)
    (0, 3, 2 * 1 / 8),
    (5, 1, 2 * (1 + 6) / 64),                # 0.21875
    (10, 2, 2 * (1 + 12 + 66) / 4096),       # 0.0386
    (12, 3, 2 * (1 + 15 + 105 + 455) / 2**15),
    (4, 4, 1.0),                             # 2 * P(X <= 4) > 1 is capped
    (1, 0, 1.0),
    (0, 0, 1.0),                             # no discordant pair: no evidence at all
])
def test_mcnemar_exact_matches_hand_computed_binomial_tails(b, c, expected):
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-12)


def test_mcnemar_exact_is_accurate_far_in_the_tail():
    # 150 vs 50 discordant pairs: the tail sum in log space, term by term, agrees with the exact integers
    log_terms = [math.lgamma(201) - math.lgamma(k + 1) - math.lgamma(201 - k) - 200 * math.log(2) for k in range(51)]
    top = max(log_terms)
    expected = 2 * math.exp(top) * sum(math.exp(t - top) for t in log_terms)
    assert mcnemar_exact(150, 50) == pytest.approx(expected, rel=1e-9)
    assert 1e-13 < mcnemar_exact(150, 50) < 1e-11
    assert mcnemar_exact(3000, 2000) == pytest.approx(0.0, abs=1e-40)  # no overflow for large counts


def test_exact_sign_flip_equals_mcnemar_on_binary_differences():
    # for +-1 differences, flipping signs is exactly the Binomial(b + c, 1/2) null of McNemar's test
    for b, c in [(5, 1), (10, 2), (7, 7), (9, 0)]:
        differences = np.r_[-np.ones(b), np.ones(c), np.zeros(20)]
        assert sign_flip_test(differences) == pytest.approx(mcnemar_exact(b, c), rel=1e-12)


# ------------------------------------------------------------------------------------------- one comparison


def test_planted_five_point_drop_is_significant_and_not_within_one_point():
    baseline, candidate = planted_pairs(2000, 1400, right_to_wrong=150, wrong_to_right=50)
    result = compare_paired(baseline, candidate, margin_points=1.0)
    assert result.difference == pytest.approx(-0.05)
    assert (result.right_to_wrong, result.wrong_to_right) == (150, 50)
    assert result.test == "mcnemar_exact" and result.significant and result.p_value < 1e-11
    # docstring arithmetic: standard error sqrt(0.0975 / 2000) = 0.70 points, interval about [-6.37, -3.63]
    assert result.difference_low == pytest.approx(-0.0637, abs=0.003)
    assert result.difference_high == pytest.approx(-0.0363, abs=0.003)
    assert not result.non_inferior
    assert result.recovery == pytest.approx(1300 / 1400)
    assert result.recovery_low < result.recovery < result.recovery_high


def test_noise_only_is_not_flagged_and_within_one_point():
    baseline, candidate = planted_pairs(2000, 1400, right_to_wrong=30, wrong_to_right=30)
    result = compare_paired(baseline, candidate, margin_points=1.0)
    assert result.difference == 0 and result.p_value == 1.0 and not result.significant
    assert result.difference_low < 0 < result.difference_high
    assert result.non_inferior  # half-width 1.96 * sqrt(0.03 / 2000) = 0.76 points < 1


def test_identical_runs_and_determinism():
    baseline, _ = planted_pairs(500, 300, 0, 0)
    same = compare_paired(baseline, baseline, margin_points=1.0)
    # no pair differs: Tango's interval is +-z^2 / (n + z^2) = +-0.76 points, not a point at 0
    assert same.p_value == 1.0 and same.difference == 0.0
    assert same.difference_low == pytest.approx(-3.8415 / 503.8415, abs=1e-4) == -same.difference_high
    assert same.non_inferior and same.recovery == 1.0
    assert not compare_paired(baseline, baseline, margin_points=0.5).non_inferior  # 500 answers cannot show 0.5
    scores = np.random.default_rng(3).integers(0, 5, size=(2, 300)) / 4  # avg@4: fractional scores
    first, second = compare_paired(*scores, margin_points=1.0), compare_paired(*scores, margin_points=1.0)
    assert first == second and first.test == "sign_flip_permutation"


def test_fractional_scores_use_the_sign_flip_test_and_detect_a_drop():
    rng = np.random.default_rng(11)
    difficulty = rng.uniform(0.2, 0.9, size=400)
    baseline = rng.binomial(4, difficulty) / 4
    candidate = rng.binomial(4, np.clip(difficulty - 0.08, 0, 1)) / 4
    result = compare_paired(baseline, candidate, margin_points=1.0)
    assert result.test == "sign_flip_permutation"
    assert result.significant and result.difference_high < 0 and not result.non_inferior


# ------------------------------------------------------------------------------------------- calibration


def test_eight_agreeing_pairs_give_a_wide_interval_and_no_equivalence_claim():
    # every pair agrees: the interval is +-z^2 / (n + z^2) = +-32.4 points, far from "within 1 point"
    baseline = np.array([1, 0, 1, 1, 0, 0, 1, 0], dtype=float)
    result = compare_paired(baseline, baseline.copy(), margin_points=1.0)
    assert result.interval == "tango_score"
    assert result.difference_low == pytest.approx(-0.3244, abs=1e-3) and result.difference_high == pytest.approx(0.3244, abs=1e-3)
    assert not result.non_inferior and not result.significant
    fractional = compare_paired(baseline / 4 + 0.25, baseline / 4 + 0.25, margin_points=1.0)
    assert fractional.interval == "adjusted_normal" and fractional.difference_low < -0.1 < 0.1 < fractional.difference_high


def test_tango_interval_matches_its_closed_form_and_brute_force_constrained_likelihood():
    for n in (8, 20, 50):  # no discordant pair: the bounds solve z^2 = n |d| / (1 - |d|)
        low, high = tango_interval(n, 0, 0, 0.95)
        assert high == pytest.approx(1.959964**2 / (n + 1.959964**2), rel=1e-5) and low == -high
    low, high = tango_interval(8, 1, 0, 0.95)  # one right->wrong flip out of 8: asymmetric, contains 0
    assert low < -1 / 8 < 0 < high < -low
    assert tango_interval(8, 0, 1, 0.95) == pytest.approx((-high, -low))


def _simulated_coverage(n: int, base_rate: float, right_to_wrong: float, wrong_to_right: float,
                        simulations: int, seed: int) -> float:
    """Share of simulated runs whose Tango interval holds the true difference of the flip probabilities."""
    rng = np.random.default_rng(seed)
    truth = (1 - base_rate) * wrong_to_right - base_rate * right_to_wrong
    base = rng.random((simulations, n)) < base_rate
    flips = rng.random((simulations, n)) < np.where(base, right_to_wrong, wrong_to_right)
    covered = 0
    for b, c in zip((base & flips).sum(axis=1), (~base & flips).sum(axis=1)):
        low, high = tango_interval(n, int(b), int(c), 0.95)
        covered += low - 1e-12 <= truth <= high + 1e-12
    return covered / simulations


@pytest.mark.parametrize("n", [8, 20, 50, 500])
@pytest.mark.parametrize(("base_rate", "right_to_wrong", "wrong_to_right"), [
    (0.7, 0.0, 0.0),     # the two runs always agree
    (0.7, 0.02, 0.02),   # rare flips: most small runs have none or one
    (0.7, 0.10, 0.15),   # true difference -0.025
    (0.9, 0.02, 0.0),    # a one-sided drop
])
def test_tango_interval_covers_the_true_difference_at_least_near_the_nominal_rate(n, base_rate, right_to_wrong,
                                                                                 wrong_to_right):
    # 400 simulated runs: the standard error of a coverage rate near 0.95 is 0.011
    assert _simulated_coverage(n, base_rate, right_to_wrong, wrong_to_right, 400, seed=n) >= 0.92


@pytest.mark.parametrize("n", [8, 20, 50, 300])
@pytest.mark.parametrize("shift", [0.0, -0.05, -0.2])
def test_adjusted_interval_coverage_with_partial_credit_scores(n, shift):
    # avg@4 scores, per-problem solve rates shifted by `shift` for the candidate
    rng = np.random.default_rng(7 + n)
    simulations = 400
    rates = rng.uniform(0.1, 0.95, size=(simulations, n))
    shifted = np.clip(rates + shift, 0, 1)
    truth = (shifted - rates).mean(axis=1)  # the population is these problems; scores are resampled
    differences = (rng.binomial(4, shifted) - rng.binomial(4, rates)) / 4
    covered = 0
    for index in range(simulations):
        low, high = adjusted_interval(differences[index], 0.95)
        covered += low <= truth[index] <= high
    assert 0.92 <= covered / simulations <= 1.0


def test_both_runs_at_chance_have_no_verdict():
    baseline, candidate = planted_pairs(100, 24, right_to_wrong=4, wrong_to_right=3)
    floor = compare_paired(baseline, candidate, margin_points=1.0, chance=0.25)
    assert floor.at_floor and floor.chance == 0.25
    assert not compare_paired(baseline, candidate, margin_points=1.0, chance=0.0).at_floor


def test_sign_flip_test_rejects_at_about_five_percent_under_the_null():
    rng = np.random.default_rng(99)
    rates = rng.uniform(0.1, 0.9, size=(300, 200))
    differences = (rng.binomial(4, rates) - rng.binomial(4, rates)) / 4  # exchangeable: the null holds
    p_values = np.array([sign_flip_test(d, resamples=1000, seed=i) for i, d in enumerate(differences)])
    assert 0.02 <= (p_values < 0.05).mean() <= 0.09
