"""Variable tracking: a chain of assignments (VAR ABCDE = 12345, VAR FGHIJ = VAR ABCDE, ...) hidden among noise
lines; the model names every variable that holds the chain's value. One chain of four hops (five variables), as
in RULER, after a one-shot example built the same way with three-letter names and a short noise context.

Each noise paragraph and each assignment is one line; assignments keep their order at random line positions.
"""

from __future__ import annotations

import random
import string
from typing import Any

from lowbit.tasks.ruler.niah import insert_lines
from lowbit.tasks.ruler.templates import (
    NOISE, VT_ANSWER_PREFIX, VT_EXAMPLE_NAME_LETTERS, VT_NAME_LETTERS, VT_NUM_HOPS, VT_TEMPLATE,
    VT_TOKENS_TO_GENERATE, VT_VALUE_RANGE,
)
from lowbit.tasks.ruler.tokens import PrefixCosts, PromptTokens, fit_units

# Noise lines of the one-shot example: about 450 tokens with the question, as upstream's example (fitted to 500
# tokens less the answer budget).
EXAMPLE_NOISE_LINES = 15


def chain(letters: int, rng: random.Random) -> tuple[list[str], int, list[str]]:
    """(variable names, starting value, assignment lines) of one chain of VT_NUM_HOPS hops."""
    names: list[str] = []
    while len(names) < VT_NUM_HOPS + 1:
        name = "".join(rng.choices(string.ascii_uppercase, k=letters))
        if name not in names:
            names.append(name)
    value = rng.randint(*VT_VALUE_RANGE)
    lines = [f"VAR {names[0]} = {value}"] + [f"VAR {names[j + 1]} = VAR {names[j]}" for j in range(VT_NUM_HOPS)]
    return names, value, lines


def question(context: str, value: int) -> str:
    return (VT_TEMPLATE.format(context=context, query=value)
            + VT_ANSWER_PREFIX.format(num_v=VT_NUM_HOPS + 1, query=value))


class VariableTrackingGenerator:
    tokens_to_generate = VT_TOKENS_TO_GENERATE

    def __init__(self, task: str, tokens: PromptTokens, max_seq_length: int, seed: int, essay: object = None):
        self.task, self.tokens, self.seed = task, tokens, seed
        self.budget = max_seq_length - self.tokens_to_generate
        self.noise_cost = tokens.costs([NOISE + "\n"])[0]

    def sample(self, index: int) -> dict[str, Any]:
        rng = random.Random(f"ruler/{self.task}/{self.seed}/{index}")
        example_names, example_value, example_lines = chain(VT_EXAMPLE_NAME_LETTERS, rng)
        example_fractions = sorted(rng.random() for _ in example_lines)
        example_context = "\n".join(insert_lines([NOISE] * EXAMPLE_NOISE_LINES, example_lines, example_fractions))
        example = question(example_context, example_value) + " ".join(example_names)
        names, value, lines = chain(VT_NAME_LETTERS, rng)
        fractions = sorted(rng.random() for _ in lines)

        def user_text(context: str) -> str:
            return example + "\n\n" + question(context, value)

        fixed = self.tokens.prompt_length(user_text("")) + sum(self.tokens.costs([line + "\n" for line in lines]))
        costs = PrefixCosts([self.noise_cost] * max(0, (self.budget - fixed) // self.noise_cost + 2))

        def build(n: int) -> str:
            return user_text("\n".join(insert_lines([NOISE] * n, lines, fractions)))

        fitted = fit_units(build, lambda n: fixed + costs.first(n), lambda b: costs.most_within(b - fixed),
                           len(costs), self.budget, self.tokens, self.task)
        return {"input": fitted.text, "outputs": names, "length": fitted.length,
                "meta": {"haystack_units": fitted.units, "value": value, "assignments": lines}}
