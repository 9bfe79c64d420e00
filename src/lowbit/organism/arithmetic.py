"""Multi-digit addition and subtraction, worked column by column inside <think>, answered in \\boxed{}.

The prompt is MATH-500's (the question, then "Please reason step by step, and put your final answer within
\\boxed{}."), so the MATH scorer (lowbit.metrics.math_answers) grades it. Operands have 2 to 5 digits; a
difference is never negative. The reasoning names each column, writes its digit sum (or difference) with the
carry (or borrow), then reads the written digits back from the top.
"""

from __future__ import annotations

import random

from lowbit.organism.data import Example

NAME = "arithmetic"
MATH_PROMPT_SUFFIX = "Please reason step by step, and put your final answer within \\boxed{}."
COLUMNS = ("units", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands")
MIN_DIGITS, MAX_DIGITS = 2, 5


def generate(rng: random.Random) -> Example:
    a, b = (_number(rng), _number(rng))
    operation = rng.choice("+-")
    if operation == "-" and a < b:
        a, b = b, a
    question = f"What is {a} {operation} {b}?"
    lines, result = (_addition(a, b) if operation == "+" else _subtraction(a, b))
    reasoning = "\n".join([f"{a} {operation} {b}", *lines, f"so the answer is {result}"])
    return Example(
        prompt=f"{question}\n{MATH_PROMPT_SUFFIX}",
        completion=f"<think>\n{reasoning}\n</think>\n\n\\boxed{{{result}}}",
        gold=str(result),
        thinking=True,
        item={"operation": "addition" if operation == "+" else "subtraction",
              "digits": max(len(str(a)), len(str(b)))},
    )


def _number(rng: random.Random) -> int:
    digits = rng.randint(MIN_DIGITS, MAX_DIGITS)
    return rng.randint(10 ** (digits - 1), 10 ** digits - 1)


def _digits(n: int, width: int) -> list[int]:
    """Digits of n from the units up, padded with zeros to `width`."""
    return [(n // 10 ** i) % 10 for i in range(width)]


def _addition(a: int, b: int) -> tuple[list[str], int]:
    width = max(len(str(a)), len(str(b)))
    lines, carry = [], 0
    for column, x, y in zip(COLUMNS, _digits(a, width), _digits(b, width)):
        total = x + y + carry
        lines.append(f"{column}: {x} + {y} + {carry} = {total}, write {total % 10}, carry {total // 10}")
        carry = total // 10
    if carry:
        lines.append(f"{COLUMNS[width]}: write {carry}")
    return lines, a + b


def _subtraction(a: int, b: int) -> tuple[list[str], int]:
    width = len(str(a))
    lines, borrow = [], 0
    for column, x, y in zip(COLUMNS, _digits(a, width), _digits(b, width)):
        difference = x - y - borrow
        written = difference % 10
        next_borrow = int(difference < 0)
        lines.append(f"{column}: {x} - {y} - {borrow} = {difference}, write {written}, borrow {next_borrow}")
        borrow = next_borrow
    return lines, a - b
