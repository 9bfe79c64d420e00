"""Common words extraction: a numbered list of English words in which ten words appear often (30 times each) and
the rest rarely (3 times each; 6 and 1 below 4096 tokens); the model names the ten common ones. A one-shot
example of the same form (40 words, 10 and 3 repeats; 20 words, 3 and 1 below 4096) comes first, its answer given.

Words come from the `wonderwords` noun, adjective and verb lists; the example's words never occur in the sample's
list. The list grows by uncommon words until the prompt fills its budget.
"""

from __future__ import annotations

import random
from typing import Any

from lowbit.tasks.ruler.haystacks import common_words_vocabulary
from lowbit.tasks.ruler.templates import (
    CWE_ANSWER_PREFIX, CWE_EXAMPLE, CWE_NUM_COMMON, CWE_REPEATS, CWE_SHORT_BELOW, CWE_TEMPLATE, CWE_TOKENS_TO_GENERATE,
)
from lowbit.tasks.ruler.tokens import PrefixCosts, PromptTokens, fit_units, largest_within


def numbered(words: list[str]) -> str:
    """ "1. apple 2. river 3. apple" """
    return " ".join(f"{i + 1}. {word}" for i, word in enumerate(words))


def repeated(common: list[str], uncommon: list[str], common_repeats: int, uncommon_repeats: int,
             shuffle_seed: int) -> list[str]:
    words = common * common_repeats + uncommon * uncommon_repeats
    random.Random(shuffle_seed).shuffle(words)
    return words


class CommonWordsGenerator:
    tokens_to_generate = CWE_TOKENS_TO_GENERATE

    def __init__(self, task: str, tokens: PromptTokens, max_seq_length: int, seed: int, essay: object = None):
        self.task, self.tokens, self.seed = task, tokens, seed
        self.budget = max_seq_length - self.tokens_to_generate
        mode = "short" if max_seq_length < CWE_SHORT_BELOW else "long"
        self.repeats, self.example_shape = CWE_REPEATS[mode], CWE_EXAMPLE[mode]
        self.vocabulary = common_words_vocabulary()
        self.word_cost = dict(zip(self.vocabulary, tokens.costs([" " + w for w in self.vocabulary])))
        # every list entry costs at least 3 tokens (number, dot, word): bounds the numbering costs needed
        self.numbers = PrefixCosts(tokens.costs([f" {i}." for i in range(1, self.budget // 3 + 2)]))

    def sample(self, index: int) -> dict[str, Any]:
        rng = random.Random(f"ruler/{self.task}/{self.seed}/{index}")
        order = rng.sample(self.vocabulary, len(self.vocabulary))
        example_size, example_common, example_uncommon = self.example_shape
        example_words, candidates = order[-example_size:], order[:-example_size]
        example_list = repeated(example_words[:CWE_NUM_COMMON], example_words[CWE_NUM_COMMON:], example_common,
                                example_uncommon, rng.getrandbits(64))
        example = (CWE_TEMPLATE.format(context=numbered(example_list)) + CWE_ANSWER_PREFIX + " "
                   + numbered(example_words[:CWE_NUM_COMMON]))
        common, uncommon = candidates[:CWE_NUM_COMMON], candidates[CWE_NUM_COMMON:]
        common_repeats, uncommon_repeats = self.repeats
        shuffle_seed = rng.getrandbits(64)

        def user_text(context: str) -> str:
            return example + "\n" + CWE_TEMPLATE.format(context=context) + CWE_ANSWER_PREFIX

        overhead = self.tokens.prompt_length(user_text(""))
        common_cost = common_repeats * sum(self.word_cost[w] for w in common)
        uncommon_costs = PrefixCosts([uncommon_repeats * self.word_cost[w] for w in uncommon])
        max_units = min(len(uncommon),
                        max(0, (len(self.numbers) - CWE_NUM_COMMON * common_repeats) // uncommon_repeats))

        def estimate(n: int) -> int:
            entries = CWE_NUM_COMMON * common_repeats + n * uncommon_repeats
            return overhead + self.numbers.first(entries) + common_cost + uncommon_costs.first(n)

        def build(n: int) -> str:
            return user_text(numbered(repeated(common, uncommon[:n], common_repeats, uncommon_repeats, shuffle_seed)))

        fitted = fit_units(build, estimate, lambda b: largest_within(estimate, 0, max_units, b), max_units,
                           self.budget, self.tokens, self.task)
        return {"input": fitted.text, "outputs": common, "length": fitted.length,
                "meta": {"haystack_units": fitted.units, "repeats": [common_repeats, uncommon_repeats]}}
