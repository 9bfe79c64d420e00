"""Comparing a program's output with a test's expected output, with the official LiveCodeBench evaluator's rules.

- stdin problems: both texts are stripped, split into lines, and each line stripped; the line counts must agree,
  and each pair of lines must be equal, or, failing that, both must be whitespace-separated numbers that are equal
  as decimals ("1.50" equals "1.5", "2" equals "2.0"; no tolerance beyond exact decimal equality).
- functional problems: the return value (a tuple counts as a list) must equal the JSON-decoded expected output
  under Python's ==, so 1 == 1.0 and True == 1 as in the official evaluator.
"""

from __future__ import annotations

import json
from decimal import Decimal, InvalidOperation
from typing import Any


def stdout_matches(output: str, expected: str) -> bool:
    got, want = _stripped_lines(output), _stripped_lines(expected)
    if len(got) != len(want):
        return False
    return all(a == b or _same_numbers(a, b) for a, b in zip(got, want))


def _stripped_lines(text: str) -> list[str]:
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line: str) -> list[Decimal] | None:
    try:
        return [Decimal(token) for token in line.split()]
    except (InvalidOperation, ValueError):
        return None


def _same_numbers(a: str, b: str) -> bool:
    left, right = _decimals(a), _decimals(b)
    return left is not None and right is not None and left == right


def return_value_matches(output_json: str, expected_json: str) -> bool:
    """`output_json`: the JSON the harness wrote of the return value; `expected_json`: the test's output field."""
    try:
        got: Any = json.loads(output_json)
        want: Any = json.loads(expected_json)
    except (json.JSONDecodeError, ValueError):
        return False
    return got == want
