"""Needle in a haystack: key-value needles ("One of the special magic numbers for <key> is: <value>.") hidden in
repeated noise sentences, in the essays, or among distractor needles; the model is asked for the values of one or
more keys (RULER's eight NIAH variants, configured in templates.NIAH_CONFIGS).

Placement: in the essays, needles go between sentences at depths drawn from 40 evenly spaced percentages
(RULER's DEPTHS); in the noise and distractor haystacks, at uniformly random line positions. Every sample uses the
same essay prefix (as upstream); the keys, values, depths and distractors are the sample's own.
"""

from __future__ import annotations

import random
import uuid
from typing import Any

from lowbit.tasks.ruler.haystacks import Essay, adjectives, nouns
from lowbit.tasks.ruler.templates import (
    DEPTHS, NEEDLE, NIAH_ANSWER_PREFIX, NIAH_ANSWER_PREFIX_SINGLE, NIAH_CONFIGS, NIAH_TEMPLATE, NIAH_TEMPLATE_SINGLE,
    NIAH_TOKENS_TO_GENERATE, NOISE, NUMBER_DIGITS,
)
from lowbit.tasks.ruler.tokens import PrefixCosts, PromptTokens, fit_units

ESSAY_COST_CHUNK = 20_000  # essay words counted per batch, as far as the longest prompt needs
DISTRACTOR_CHUNK = 256  # distractor needles drawn and counted per batch


def random_value(kind: str, rng: random.Random) -> str:
    if kind == "numbers":
        return str(rng.randint(10 ** (NUMBER_DIGITS - 1), 10 ** NUMBER_DIGITS - 1))
    if kind == "words":
        return f"{rng.choice(adjectives())}-{rng.choice(nouns())}"
    if kind == "uuids":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    raise ValueError(f"unknown needle kind {kind!r}")


def distinct_values(kind: str, count: int, rng: random.Random, avoid: set[str] = frozenset()) -> list[str]:
    values: list[str] = []
    while len(values) < count:
        value = random_value(kind, rng)
        if value not in avoid and value not in values:
            values.append(value)
    return values


def essay_costs(essay: Essay, tokens: PromptTokens, budget: int) -> PrefixCosts:
    """Token costs of the essay's words (each with its leading space), counted once per tokenizer as far as
    `budget` tokens need."""
    costs = essay.costs.setdefault(tokens.fingerprint, PrefixCosts())
    while costs.first(len(costs)) < budget and len(costs) < len(essay.words):
        chunk = essay.words[len(costs):len(costs) + ESSAY_COST_CHUNK]
        costs.extend(tokens.costs([" " + word for word in chunk]))
    return costs


def insert_lines(lines: list[str], inserts: list[str], fractions: list[float]) -> list[str]:
    """`lines` with inserts[i] placed before line floor(fractions[i] * (len(lines) + 1)), in order
    (fractions sorted ascending)."""
    n = len(lines)
    positions = [min(n, int(f * (n + 1))) for f in fractions]
    out, start = [], 0
    for position, line in zip(positions, inserts):
        out.extend(lines[start:position])
        out.append(line)
        start = position
    out.extend(lines[start:])
    return out


class NiahGenerator:
    tokens_to_generate = NIAH_TOKENS_TO_GENERATE

    def __init__(self, task: str, tokens: PromptTokens, max_seq_length: int, seed: int, essay: Essay | None):
        self.task, self.tokens, self.seed = task, tokens, seed
        self.config = NIAH_CONFIGS[task]
        self.budget = max_seq_length - self.tokens_to_generate
        if self.config.haystack == "essay":
            if essay is None:
                raise ValueError(f"{task} needs the essay haystack")
            self.essay = essay
            self.essay_costs = essay_costs(essay, tokens, self.budget)
        self.noise_cost = tokens.costs([NOISE + "\n"])[0]

    def sample(self, index: int) -> dict[str, Any]:
        config = self.config
        rng = random.Random(f"ruler/{self.task}/{self.seed}/{index}")
        num_keys = max(config.num_keys, config.num_queries)
        keys = distinct_values(config.key_kind, num_keys, rng)
        values = distinct_values(config.value_kind, num_keys * config.num_values, rng)
        values_by_key = [values[i * config.num_values:(i + 1) * config.num_values] for i in range(num_keys)]
        needles = [NEEDLE.format(type_needle_v=config.value_kind, key=key, value=value)
                   for key, key_values in zip(keys, values_by_key) for value in key_values]
        rng.shuffle(needles)
        queried = rng.sample(range(num_keys), config.num_queries)
        query_keys = [keys[i] for i in queried]
        query = ", ".join(query_keys[:-1]) + ", and " + query_keys[-1] if len(query_keys) > 1 else query_keys[0]
        outputs = [value for i in queried for value in values_by_key[i]]

        template, prefix, kind = NIAH_TEMPLATE, NIAH_ANSWER_PREFIX, config.value_kind
        if config.single_answer:
            template, prefix, kind = NIAH_TEMPLATE_SINGLE, NIAH_ANSWER_PREFIX_SINGLE, kind.removesuffix("s")

        def user_text(context: str) -> str:
            return (template.format(type_needle_v=kind, context=context, query=query)
                    + prefix.format(type_needle_v=kind, query=query))

        overhead = self.tokens.prompt_length(user_text(""))
        if config.haystack == "essay":
            depths = sorted(rng.sample(DEPTHS, len(needles)))
            fitted, meta = self._fit_essay(user_text, overhead, needles, depths)
        else:
            fractions = sorted(rng.random() for _ in needles)
            fitted, meta = self._fit_lines(user_text, overhead, needles, fractions, rng, set(keys))
        return {"input": fitted.text, "outputs": outputs, "length": fitted.length,
                "meta": {"haystack": config.haystack, "haystack_units": fitted.units, "keys": query_keys, **meta}}

    def _fit_essay(self, user_text, overhead: int, needles: list[str], depths: list[int]):
        essay, costs = self.essay, self.essay_costs
        needle_cost = sum(self.tokens.costs([" " + needle for needle in needles]))
        fixed = overhead + needle_cost

        def build(n: int) -> str:
            starts = [0] + [end + 1 for end in essay.sentence_ends if end < n - 1]  # sentence starts in n words
            cuts = [starts[int(len(starts) * depth / 100)] if depth < 100 else n for depth in depths]
            parts, start = [], 0
            for cut, needle in zip(cuts, needles):
                if cut > start:
                    parts.append(" ".join(essay.words[start:cut]))
                parts.append(needle)
                start = cut
            if n > start:
                parts.append(" ".join(essay.words[start:n]))
            return user_text(" ".join(parts))

        fitted = fit_units(build, lambda n: fixed + costs.first(n), lambda b: costs.most_within(b - fixed),
                           len(costs), self.budget, self.tokens, self.task)
        return fitted, {"depths": depths}

    def _fit_lines(self, user_text, overhead: int, needles: list[str], fractions: list[float], rng: random.Random,
                   keys: set[str]):
        needle_cost = sum(self.tokens.costs([needle + "\n" for needle in needles]))
        fixed = overhead + needle_cost
        if self.config.haystack == "repeat":
            def line(i: int) -> str:
                return NOISE

            costs = PrefixCosts()
            costs.extend([self.noise_cost] * max(0, (self.budget - fixed) // self.noise_cost + 2))
        else:  # distractor needles with other keys, drawn in batches as far as the budget needs
            lines: list[str] = []
            costs = PrefixCosts()
            while costs.first(len(costs)) <= self.budget - fixed:
                batch = [NEEDLE.format(type_needle_v=self.config.value_kind,
                                       key=distinct_values(self.config.key_kind, 1, rng, keys)[0],
                                       value=random_value(self.config.value_kind, rng))
                         for _ in range(DISTRACTOR_CHUNK)]
                lines.extend(batch)
                costs.extend(self.tokens.costs([text + "\n" for text in batch]))

            def line(i: int) -> str:
                return lines[i]

        def build(n: int) -> str:
            return user_text("\n".join(insert_lines([line(i) for i in range(n)], needles, fractions)))

        fitted = fit_units(build, lambda n: fixed + costs.first(n), lambda b: costs.most_within(b - fixed),
                           len(costs), self.budget, self.tokens, self.task)
        return fitted, {"positions": [min(fitted.units, int(f * (fitted.units + 1))) for f in fractions]}
