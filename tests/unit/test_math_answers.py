"""Boxed-answer extraction, integer reading, and the time-limited math-verify worker."""

import threading
import time

import pytest

from lowbit.metrics.math_answers import MathVerifier, boxed_answer, integer_answer, normalize_for_checking

# An expression SymPy tries to evaluate in full: 9^(9^387420489) never finishes.
PATHOLOGICAL = "9^{9^{9^{9}}}"


@pytest.mark.parametrize("text,expected", [
    ("The answer is $\\boxed{5}$.", "5"),
    ("$\\boxed{\\frac{1}{2}}$", "\\frac{1}{2}"),  # nested braces
    ("$\\boxed{\\left\\{1, 2\\right\\}}$", "\\left\\{1, 2\\right\\}"),  # escaped braces do not close the box
    ("$\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}$", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("first $\\boxed{3}$ then, after checking, $\\boxed{4}$", "4"),  # the last box wins
    ("$\\boxed{0}, \\boxed{1}$", "0, 1"),  # back-to-back boxes list one answer
    ("$\\boxed{0}$, $\\boxed{1}$ and $\\boxed{2}$", "0, 1, 2"),
    ("$x = \\boxed{2}$ or $x = \\boxed{3}$", "2, 3"),  # a variable's values
    ("I first got $\\boxed{2}$, but the check fails, so $\\boxed{3}$", "3"),  # words between boxes: the last
    ("\\fbox{7}", "7"),
    ("so $\\boxed 12$.", "12"),  # no braces: one token
    ("The answer is \\boxed 8.", "8"),
    ("$\\boxed {9}$", "9"),
    ("\\boxed{}", None),  # empty
    ("$\\boxed{\\frac{1}{2}$", None),  # never closed: cut off
    ("no box here, the answer is 5", None),
    ("", None),
    ("\\boxedfoo{5}", None),  # another command
])
def test_boxed_answer(text, expected):
    assert boxed_answer(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("50\\%", "50"), ("50%", "50"), ("45°", "45^\\circ"), ("45\\degree", "45^\\circ"),
    ("90^\\circ", "90^\\circ"),  # math-verify reads degree marks itself
    ("10\\,080", "10080"), ("10\\!080", "10080"), ("10{,}080", "10080"), ("10,\\!080", "10080"),
    ("(1,\\, 2)", "(1,\\, 2)"), ("1\\,2345", "1\\,2345"),  # not a thousands separator
])
def test_normalize_for_checking(text, expected):
    assert normalize_for_checking(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("70", 70), ("070", 70), ("0", 0), ("1{,}000", 1000), ("1,000", 1000), ("\\text{70}", 70),
    ("\\mathbf{70}", 70), ("70 \\text{ degrees}", 70), ("70 dollars", 70), ("3n", None), ("70^\\circ", 70),
    ("70^{\\circ}", 70), ("m+n = 70", 70), ("70.0", 70),
    ("\\$70", 70), ("-3", -3),
    ("\\frac{1}{2}", None), ("2^5", None), ("70.5", None), ("x", None), ("", None), ("12, 13", None),
    ("1,2", None), ("7" * 5000, None),
])
def test_integer_answer(text, expected):
    assert integer_answer(text) == expected


def test_time_limit_must_be_positive():
    with pytest.raises(ValueError):
        MathVerifier(time_limit=0)


def test_a_pathological_answer_times_out_and_the_next_item_is_checked_normally():
    with MathVerifier(time_limit=1.0) as verifier:
        assert verifier.check("\\frac{2}{4}", "0.5").correct
        clock = time.monotonic()
        verdict = verifier.check(PATHOLOGICAL, "5")
        assert verdict.failure == "timeout" and not verdict.correct
        assert time.monotonic() - clock < 5
        assert verifier.check("3", "3") == verifier.check("3", "3.0")  # a fresh worker took over
        assert verifier.check("3", "3").correct


def test_the_time_limit_holds_off_the_main_thread():
    verdicts = []
    with MathVerifier(time_limit=1.0) as verifier:
        worker = threading.Thread(target=lambda: verdicts.extend(
            [verifier.check(PATHOLOGICAL, "5"), verifier.check("x+1", "1+x")]))
        worker.start()
        worker.join(timeout=60)
    assert not worker.is_alive()
    assert verdicts[0].failure == "timeout" and verdicts[1].correct and verdicts[1].failure is None
