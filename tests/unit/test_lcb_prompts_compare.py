"""The LiveCodeBench prompt, code extraction, output comparison and metrics."""

from __future__ import annotations

import pytest

from lowbit.tasks import make_task
from lowbit.tasks.livecodebench.compare import return_value_matches, stdout_matches
from lowbit.tasks.livecodebench.prompts import extract_code, prompt_text


def test_prompt_with_and_without_starter_code():
    stdin = prompt_text("Add two numbers.", "")
    assert stdin.startswith("You will be given a question (problem specification) and will generate a correct "
                            "Python program that matches the specification and passes all tests.\n\nQuestion: "
                            "Add two numbers.\n\nRead the inputs from stdin solve the problem")
    assert stdin.endswith("writes output to STDOUT.\n```python\n# YOUR CODE HERE\n```\n\n")
    functional = prompt_text("Sum.", "class Solution:\n    def f(self) -> int:\n        ")
    assert functional.endswith("enclose your code within delimiters.\n```python\nclass Solution:\n"
                               "    def f(self) -> int:\n        \n```\n\n")


@pytest.mark.parametrize("answer,code", [
    ("```python\nprint(1)\n```", "print(1)\n"),
    ("first\n```python\nprint(1)\n```\nthen\n```py\nprint(2)\n```\nbye", "print(2)\n"),
    ("```python\nprint(1)\n```\n```text\nsample output\n```", "print(1)\n"),
    ("```\nx = 1\n```", "x = 1\n"),
    ("````python\ns = '```'\n````", "s = '```'\n"),
    ("no code here", None),
    ("```python\nunterminated", None),
    ("", None),
])
def test_extract_code_takes_the_last_python_block(answer, code):
    assert extract_code(answer) == code


@pytest.mark.parametrize("output,expected,same", [
    ("3\n", "3", True),
    ("  3  \n\n", "3\n", True),
    ("1 2\n3\n", "1 2\n3\n", True),
    ("1.50\n", "1.5\n", True),  # equal as decimals
    ("2\n", "2.000000\n", True),
    ("0.333333\n", "0.3333333\n", False),  # no tolerance beyond exact decimal equality
    ("1 2\n", "1  2\n", True),
    ("YES\n", "yes\n", False),
    ("1\n2\n", "1\n", False),
    ("", "0\n", False),
    ("abc def\n", "abc  def\n", False),  # not numbers: compared as text
])
def test_stdout_comparison_follows_the_official_rules(output, expected, same):
    assert stdout_matches(output, expected) is same


def test_return_value_comparison():
    assert return_value_matches("[1, 2]", "[1, 2]")
    assert return_value_matches("1.0", "1")
    assert return_value_matches("true", "true") and not return_value_matches("false", "true")
    assert not return_value_matches("[2, 1]", "[1, 2]")
    assert not return_value_matches("not json", "1")


def row(outcomes, difficulty="easy", platform="leetcode"):
    scores = [float(o == "passed") for o in outcomes]
    return {"id": "x", "score": sum(scores) / len(scores), "scores": scores, "truncated": [False] * len(scores),
            "excluded": None, "difficulty": difficulty, "platform": platform, "outcomes": outcomes,
            "parse_failed": [o == "no_code" for o in outcomes]}


def test_metrics_pass_at_k_by_group_and_outcome_counts():
    task = make_task("livecode_v5")
    rows = [row(["passed", "wrong_answer"]), row(["time_limit", "no_code"], "hard", "atcoder"),
            row(["passed", "passed"], "hard", "codeforces")]
    result = task.aggregate(rows)
    metrics, groups = result["metrics"], result["groups"]
    assert metrics["pass@1"]["value"] == pytest.approx(0.5) and metrics["pass@2"]["value"] == pytest.approx(2 / 3)
    assert task.headline_metric == "pass@1" and {"value", "n"} <= metrics["pass@1"].keys()
    assert metrics["outcomes"] == {"passed": 3, "wrong_answer": 1, "time_limit": 1, "runtime_error": 0,
                                   "compile_error": 0, "memory_limit": 0, "output_limit": 0, "no_code": 1}
    assert groups["difficulty"]["hard"]["value"] == pytest.approx(0.5)
    assert groups["difficulty_pass@k"]["hard"]["pass@2"]["value"] == pytest.approx(0.5)
    assert groups["platform_pass@k"]["leetcode"]["pass@2"]["value"] == 1.0
