"""Realistic final answers to MATH-500 problems, graded the way a careful human grader would grade them.

Each case is (gold answer as the dataset writes it, the answer part of a completion, whether it is correct).
Equivalent forms must pass; near misses (a wrong sign, an open end where a closed one belongs, a rounded value,
a missing solution) must fail. Gold answers are copied from shared/data/math500/test.jsonl.
"""

import pytest

from lowbit.metrics.math_answers import MathVerifier, boxed_answer

PASS, FAIL = True, False

CASES = [
    # --- integers, fractions, decimals
    ("10", "The total is $\\boxed{10}$.", PASS),
    ("10", "So there are \\boxed{10} ways.", PASS),
    ("10", "$\\boxed{10.0}$", PASS),
    ("10", "$\\boxed{11}$", FAIL),
    ("\\frac{14}{3}", "$\\boxed{\\dfrac{14}{3}}$", PASS),
    ("\\frac{14}{3}", "$\\boxed{14/3}$", PASS),
    ("\\frac{14}{3}", "$\\boxed{4\\frac{2}{3}}$", PASS),
    ("\\frac{14}{3}", "$\\boxed{4.67}$", FAIL),
    ("\\frac{1}{2}", "$\\boxed{0.5}$", PASS),
    ("\\frac{1}{2}", "$\\boxed{\\frac{2}{4}}$", PASS),
    ("\\frac{1}{2}", "$\\boxed{-\\frac{1}{2}}$", FAIL),
    ("1.36", "The answer is $\\boxed{1.36}$", PASS),
    ("1.36", "$\\boxed{1.4}$", FAIL),
    ("-2", "$\\boxed{-2}$", PASS),
    ("-2", "$\\boxed{2}$", FAIL),
    ("10,\\!080", "$\\boxed{10080}$", PASS),
    ("10,\\!080", "$\\boxed{10{,}080}$", PASS),
    ("10,\\!080", "$\\boxed{10,080}$", PASS),
    ("10,\\!080", "$\\boxed{10\\,080}$", PASS),
    ("10,\\!080", "$\\boxed{1008}$", FAIL),
    ("58,500", "$\\boxed{58{,}500}$", PASS),
    ("58,500", "$\\boxed{58.5}$", FAIL),
    ("11,\\! 111,\\! 111,\\! 100", "$\\boxed{11111111100}$", PASS),
    # --- radicals, pi, symbolic expressions
    ("3\\sqrt{2}", "$\\boxed{\\sqrt{18}}$", PASS),
    ("3\\sqrt{2}", "$\\boxed{3\\sqrt2}$", PASS),
    ("3\\sqrt{2}", "$\\boxed{2\\sqrt{3}}$", FAIL),
    ("\\frac{\\sqrt{3}}{3}", "$\\boxed{\\frac{1}{\\sqrt{3}}}$", PASS),
    ("2\\pi", "$\\boxed{2\\pi}$", PASS),
    ("2\\pi", "$\\boxed{6.28}$", FAIL),
    ("x^2+7x+10", "$\\boxed{(x+2)(x+5)}$", PASS),
    ("x^2+7x+10", "$\\boxed{x^2+7x-10}$", FAIL),
    ("y = 2x + 3", "$\\boxed{y=2x+3}$", PASS),
    ("y = 2x + 3", "$\\boxed{2x+3}$", PASS),
    ("y = 2x + 3", "$\\boxed{y = 3x + 2}$", FAIL),
    ("x=5", "$\\boxed{5}$", PASS),
    ("x=5", "$\\boxed{x = 5}$", PASS),
    ("x=5", "$\\boxed{x = -5}$", FAIL),
    # --- tuples, points, sets and several boxed values
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "$\\boxed{(3, \\frac{\\pi}{2})}$", PASS),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "$\\boxed{\\left(3,\\pi/2\\right)}$", PASS),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "$\\boxed{(\\frac{\\pi}{2}, 3)}$", FAIL),
    ("(6,31,-1)", "$\\boxed{(6, 31, -1)}$", PASS),
    ("(6,31,-1)", "$\\boxed{(6, -31, -1)}$", FAIL),
    ("1,-2", "$\\boxed{-2, 1}$", PASS),
    ("1,-2", "The solutions are $\\boxed{1}$ and $\\boxed{-2}$.", PASS),
    ("1,-2", "$\\boxed{1}, \\boxed{-2}$", PASS),
    ("1,-2", "The solutions are $x = \\boxed{1}$ and $x = \\boxed{-2}$.", PASS),
    ("1,-2", "$\\boxed{x = 1 \\text{ or } x = -2}$", PASS),
    ("1,-2", "$\\boxed{1}$", FAIL),
    ("3, 5, 7", "$\\boxed{3,5,7}$", PASS),
    ("3, 5, 7", "$\\boxed{3}$, $\\boxed{5}$, $\\boxed{7}$", PASS),
    ("3, 5, 7", "$\\boxed{3, 5}$", FAIL),
    ("\\{1\\pm\\sqrt{5},-2\\}", "$\\boxed{1+\\sqrt{5}, 1-\\sqrt{5}, -2}$", PASS),
    ("\\{1\\pm\\sqrt{5},-2\\}", "$\\boxed{1+\\sqrt{5}, -2}$", FAIL),
    # --- intervals
    ("(3,4]", "$\\boxed{(3,4]}$", PASS),
    ("(3,4]", "$\\boxed{(3,4)}$", FAIL),
    ("(-\\infty, 0]", "$\\boxed{(-\\infty,0]}$", PASS),
    ("(-\\infty, 0]", "$\\boxed{x \\le 0}$", PASS),
    ("(-\\infty, 0]", "$\\boxed{(-\\infty,0)}$", FAIL),
    ("x \\in [-2,7]", "$\\boxed{[-2,7]}$", PASS),
    ("x \\in [-2,7]", "$\\boxed{[-2,7)}$", FAIL),
    ("(-\\infty, 2) \\cup (3, \\infty)", "$\\boxed{(-\\infty,2)\\cup(3,\\infty)}$", PASS),
    ("(-\\infty, 2) \\cup (3, \\infty)", "$\\boxed{(2,3)}$", FAIL),
    ("\\left(\\frac{3}{5},\\frac{8}{3}\\right]", "$\\boxed{\\frac{3}{5} < x \\le \\frac{8}{3}}$", PASS),
    ("\\left(\\frac{3}{5},\\frac{8}{3}\\right]", "$\\boxed{\\left[\\frac{3}{5},\\frac{8}{3}\\right]}$", FAIL),
    ("(0,9) \\cup (9,36)", "$\\boxed{(0,36)}$", FAIL),
    # --- matrices and vectors
    ("\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}",
     "$\\boxed{\\begin{pmatrix} -\\frac{1}{3} \\\\ \\frac{2}{3} \\\\ \\frac{5}{3} \\end{pmatrix}}$", PASS),
    ("\\begin{pmatrix} -1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}",
     "$\\boxed{\\begin{pmatrix} 1/3 \\\\ 2/3 \\\\ 5/3 \\end{pmatrix}}$", FAIL),
    ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
     "$\\boxed{\\begin{pmatrix}-1&0\\\\0&-1\\end{pmatrix}}$", PASS),
    ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
     "$\\boxed{\\begin{bmatrix}-1&0\\\\0&-1\\end{bmatrix}}$", PASS),
    ("\\begin{pmatrix} -1 & 0 \\\\ 0 & -1 \\end{pmatrix}",
     "$\\boxed{\\begin{pmatrix}-1&0\\\\0&1\\end{pmatrix}}$", FAIL),
    # --- units, text, percentages, degrees, money
    ("90^\\circ", "$\\boxed{90^\\circ}$", PASS),
    ("90^\\circ", "$\\boxed{90}$", PASS),
    ("90^\\circ", "$\\boxed{90^{\\circ}}$", PASS),
    ("90^\\circ", "$\\boxed{90 \\text{ degrees}}$", PASS),
    ("90^\\circ", "$\\boxed{45^\\circ}$", FAIL),
    ("\\frac{270}7\\text{ degrees}", "$\\boxed{\\frac{270}{7}^\\circ}$", PASS),
    ("\\frac{270}7\\text{ degrees}", "$\\boxed{\\frac{270}{7}}$", PASS),
    ("5.4 \\text{ cents}", "$\\boxed{5.4}$", PASS),
    ("5.4 \\text{ cents}", "$\\boxed{5.4\\text{ cents}}$", PASS),
    ("5.4 \\text{ cents}", "$\\boxed{54}$", FAIL),
    ("\\$32,\\!348", "$\\boxed{\\$32,348}$", PASS),
    ("\\$32,\\!348", "$\\boxed{32348}$", PASS),
    ("\\$32,\\!348", "$\\boxed{32,340}$", FAIL),
    ("25\\%", "$\\boxed{25\\%}$", PASS),
    ("25\\%", "$\\boxed{25}$", PASS),
    ("25\\%", "$\\boxed{20\\%}$", FAIL),
    ("\\text{Evelyn}", "$\\boxed{\\text{Evelyn}}$", PASS),
    ("\\text{Evelyn}", "$\\boxed{\\text{Navin}}$", FAIL),
    ("\\text{(C)}", "$\\boxed{\\text{(C)}}$", PASS),
    ("\\text{(C)}", "$\\boxed{C}$", PASS),
    ("\\text{(C)}", "$\\boxed{(E)}$", FAIL),
    ("\\text{even}", "$\\boxed{\\text{even}}$", PASS),
    ("\\text{even}", "$\\boxed{\\text{odd}}$", FAIL),
    ("\\text{east}", "$\\boxed{\\text{East}}$", PASS),
    ("2+3i", "$\\boxed{3i+2}$", PASS),
    ("2+3i", "$\\boxed{2-3i}$", FAIL),
    ("\\sqrt{2}", "$\\boxed{1.414}$", FAIL),  # a rounded value where the exact one is asked for
    ("y = -2x", "$\\boxed{y = 2x}$", FAIL),
    # --- how the box is written
    ("8", "Therefore $\\fbox{8}$.", PASS),
    ("8", "Therefore the answer is $\\boxed 8$.", PASS),
    ("8", "First I thought $\\boxed{6}$, but I miscounted the corners: $\\boxed{8}$.", PASS),
    ("8", "I get $\\boxed{8}$ at first. Rechecking, the count is $\\boxed{9}$.", FAIL),
    ("8", "The answer is 8.", FAIL),  # no box: a parse failure, never correct
    ("8", "The answer is $\\boxed{8", FAIL),  # cut off inside the box
]


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier() as v:
        yield v


@pytest.mark.parametrize("gold,answer,expected", CASES, ids=[f"{i:02d}" for i in range(len(CASES))])
def test_answer_is_graded_like_a_careful_grader(verifier, gold, answer, expected):
    extracted = boxed_answer(answer)
    verdict = verifier.check(extracted, gold) if extracted is not None else None
    assert (verdict is not None and verdict.correct) == expected, (gold, answer, extracted, verdict)
    assert verdict is None or verdict.failure is None


def test_there_are_enough_cases_of_both_kinds():
    assert sum(expected for *_, expected in CASES) >= 40 and sum(not e for *_, e in CASES) >= 30
