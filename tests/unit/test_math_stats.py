"""The cluster bootstrap for means over problems with several samples each (lowbit.metrics.stats)."""

import random

import numpy as np
import pytest

from lowbit.metrics.stats import cluster_bootstrap_estimate, mean_estimate, problem_mean_estimate


def test_same_input_same_interval_and_the_estimate_shape():
    values = [0.0, 0.25, 1.0, 0.75, 0.5, 1.0, 0.0, 0.25]
    first, second = cluster_bootstrap_estimate(values), cluster_bootstrap_estimate(values)
    assert first == second and first.method == "cluster_bootstrap" and first.n == 8
    assert first.value == pytest.approx(0.46875)
    assert first.ci_low < first.value < first.ci_high
    assert set(first.to_json()) == set(mean_estimate(values).to_json())
    assert cluster_bootstrap_estimate(values, seed=1) != first  # the seed is what makes it reproducible


def test_worked_example_from_the_module_notes():
    # correct (4, 0, 2) of 4 samples: per-problem values (1, 0, 0.5); resamples range from 0 to 1
    estimate = cluster_bootstrap_estimate([1.0, 0.0, 0.5])
    assert estimate.value == 0.5 and 0.0 <= estimate.ci_low < 0.5 < estimate.ci_high <= 1.0


def test_degenerate_inputs():
    assert cluster_bootstrap_estimate([]).value is None
    single = cluster_bootstrap_estimate([0.75])
    assert (single.value, single.ci_low, single.ci_high) == (0.75, 0.75, 0.75)
    with pytest.raises(ValueError):
        cluster_bootstrap_estimate([1.0], resamples=0)
    with pytest.raises(ValueError):
        cluster_bootstrap_estimate([1.0], confidence=1.5)


def test_agrees_with_the_normal_interval_on_a_large_sample():
    rng = random.Random(7)
    values = [sum(rng.random() < p for _ in range(8)) / 8 for p in (rng.random() for _ in range(4000))]
    bootstrap, normal = cluster_bootstrap_estimate(values), mean_estimate(values)
    assert normal.method == "normal" and bootstrap.stderr == pytest.approx(normal.stderr)
    half_width = normal.ci_high - normal.value
    assert bootstrap.ci_low == pytest.approx(normal.ci_low, abs=0.05 * half_width)
    assert bootstrap.ci_high == pytest.approx(normal.ci_high, abs=0.05 * half_width)


def test_covers_the_true_mean_at_about_the_nominal_rate():
    # 60 problems of varying difficulty, 4 samples each; the estimand is the mean solve rate of the population
    rng = np.random.default_rng(2024)
    trials, problems, samples, alpha, beta = 600, 60, 4, 2.0, 3.0
    true_mean, covered = alpha / (alpha + beta), 0
    for trial in range(trials):
        difficulty = rng.beta(alpha, beta, size=problems)
        per_problem = rng.binomial(samples, difficulty) / samples
        estimate = cluster_bootstrap_estimate(per_problem.tolist(), resamples=1000, seed=trial)
        covered += estimate.ci_low <= true_mean <= estimate.ci_high
    assert 0.92 <= covered / trials <= 0.975


def test_problem_mean_estimate_picks_the_method_by_samples_per_problem():
    assert problem_mean_estimate([1.0, 0.0, 1.0], 1).method == "wilson"
    assert problem_mean_estimate([1.0, 0.5, 0.0], 1).method == "normal"
    assert problem_mean_estimate([1.0, 0.5, 0.0], 4).method == "cluster_bootstrap"


def test_all_zero_or_all_one_problems_keep_an_honest_interval():
    # the bootstrap would say [0, 0]: 0 of 30 problems solved by any of their samples still allows ~11%
    for values, bound in (([0.0] * 30, "ci_high"), ([1.0] * 30, "ci_low")):
        estimate = problem_mean_estimate(values, 8)
        assert estimate.method == "wilson" and estimate.ci_low < estimate.ci_high
        assert getattr(estimate, bound) == pytest.approx(0.114 if bound == "ci_high" else 0.886, abs=0.001)
