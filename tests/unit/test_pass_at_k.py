"""pass@k and maj@n against hand-computed values, plus properties that must hold for any input."""

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lowbit.metrics.pass_at_k import majority_vote_score, pass_at_k


@pytest.mark.parametrize("n,c,k,expected", [
    (1, 0, 1, 0.0),
    (1, 1, 1, 1.0),
    (4, 2, 1, 0.5),  # pass@1 is c/n
    (4, 2, 2, 5 / 6),  # 1 - C(2,2)/C(4,2) = 1 - 1/6
    (4, 1, 2, 0.5),  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    (4, 1, 4, 1.0),  # pass@n: any of the n correct
    (4, 0, 4, 0.0),
    (5, 2, 3, 0.9),  # 1 - C(3,3)/C(5,3) = 1 - 1/10
    (8, 3, 2, 1 - 10 / 28),  # 1 - C(5,2)/C(8,2)
    (10, 1, 5, 0.5),  # 1 - C(9,5)/C(10,5) = 1 - 126/252
    (16, 8, 8, 1 - 1 / 12870),  # 1 - C(8,8)/C(16,8)
])
def test_pass_at_k_hand_computed(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, rel=1e-15)


def test_pass_at_k_stays_exact_where_floating_products_lose_digits():
    # C(1000, 500) has 300 digits; the exact value is 1 - C(999, 500)/C(1000, 500) = 1 - 500/1000
    assert pass_at_k(1000, 1, 500) == 0.5
    # a tiny probability keeps its relative precision: 1 - C(9999, 1)/C(10000, 1) = 1e-4
    assert pass_at_k(10_000, 1, 1) == pytest.approx(1e-4, rel=1e-15)


@pytest.mark.parametrize("n,c,k", [(0, 0, 1), (4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)])
def test_pass_at_k_rejects_impossible_input(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


@given(st.integers(1, 60).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_matches_the_definition_and_is_monotone(case):
    n, c, k = case
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12, abs=1e-300)
    assert pass_at_k(n, c, 1) == pytest.approx(c / n)
    if k < n:
        assert pass_at_k(n, c, k) <= pass_at_k(n, c, k + 1)
    if c < n:
        assert pass_at_k(n, c, k) <= pass_at_k(n, c + 1, k)


@pytest.mark.parametrize("answers,correct,expected", [
    ([70, 70, 12, 70], [1, 1, 0, 1], 1.0),  # clear majority, correct
    ([12, 12, 70, 5], [0, 0, 1, 0], 0.0),  # clear majority, wrong, even though one sample is right
    ([7, 7, 9, 9], [0, 0, 1, 1], 0.5),  # two-way tie, one side correct: expected value of a coin flip
    ([1, 2, 3], [0, 1, 0], 1 / 3),  # three-way tie
    ([None, None, 70, None], [0, 0, 1, 0], 1.0),  # completions without an answer do not vote
    ([None, None], [0, 0], 0.0),  # nobody answered
    (["\\frac{1}{2}", "\\frac{1}{2}", 70], [0, 0, 1], 0.0),  # non-integer answers still vote
    ([70], [1], 1.0),
])
def test_majority_vote_hand_computed(answers, correct, expected):
    assert majority_vote_score(answers, [bool(c) for c in correct]) == pytest.approx(expected)


def test_majority_vote_does_not_depend_on_completion_order():
    answers, correct = [9, 7, 9, 7, 3], [True, False, True, False, False]
    for shift in range(len(answers)):
        assert majority_vote_score(answers[shift:] + answers[:shift], correct[shift:] + correct[:shift]) == 0.5


def test_majority_vote_rejects_inconsistent_input():
    with pytest.raises(ValueError):
        majority_vote_score([1, 2], [True])
    with pytest.raises(ValueError):
        majority_vote_score([5, 5], [True, False])
