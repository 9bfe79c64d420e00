"""Frequent words extraction: a text of random six-letter "coded" words whose frequencies follow a Zipf law
(the word of rank k appears floor(N * k^-2 / zeta(2)) times); rank 1 is the noise word "...", and the model
names the three most frequent coded words (ranks 2-4). The vocabulary has max_seq_length // 50 words; N grows
until the prompt fills its budget.
"""

from __future__ import annotations

import math
import random
import string
from typing import Any

from lowbit.tasks.ruler.templates import (
    FWE_ALPHA, FWE_ANSWER_PREFIX, FWE_NOISE_WORD, FWE_NUM_ANSWERS, FWE_TEMPLATE, FWE_TOKENS_PER_VOCAB_WORD,
    FWE_TOKENS_TO_GENERATE, FWE_WORD_LETTERS,
)
from lowbit.tasks.ruler.tokens import PromptTokens, fit_units, largest_within

ZETA_OF_ALPHA = math.pi ** 2 / 6  # zeta(2), the normalizer of FWE_ALPHA = 2
if FWE_ALPHA != 2.0:
    raise ValueError("ZETA_OF_ALPHA is zeta(2): recompute it when FWE_ALPHA changes")
MIN_VOCABULARY = 2 * (FWE_NUM_ANSWERS + 1)


def zipf_counts(num_words: int, vocabulary_size: int) -> list[int]:
    return [int(num_words * k ** -FWE_ALPHA / ZETA_OF_ALPHA) for k in range(1, vocabulary_size + 1)]


class FrequentWordsGenerator:
    tokens_to_generate = FWE_TOKENS_TO_GENERATE

    def __init__(self, task: str, tokens: PromptTokens, max_seq_length: int, seed: int, essay: object = None):
        self.task, self.tokens, self.seed = task, tokens, seed
        self.budget = max_seq_length - self.tokens_to_generate
        self.vocabulary_size = max(MIN_VOCABULARY, max_seq_length // FWE_TOKENS_PER_VOCAB_WORD)

    def sample(self, index: int) -> dict[str, Any]:
        rng = random.Random(f"ruler/{self.task}/{self.seed}/{index}")
        words: set[str] = set()
        while len(words) < self.vocabulary_size:
            words.add("".join(rng.choices(string.ascii_lowercase, k=FWE_WORD_LETTERS)))
        vocabulary = sorted(words)
        rng.shuffle(vocabulary)
        vocabulary[0] = FWE_NOISE_WORD
        costs = self.tokens.costs([" " + word for word in vocabulary])
        shuffle_seed = rng.getrandbits(64)

        def user_text(context: str) -> str:
            return FWE_TEMPLATE.format(context=context) + FWE_ANSWER_PREFIX

        overhead = self.tokens.prompt_length(user_text(""))

        def estimate(n: int) -> int:
            return overhead + sum(c * w for c, w in zip(zipf_counts(n, len(vocabulary)), costs))

        def build(n: int) -> str:
            text = [word for word, count in zip(vocabulary, zipf_counts(n, len(vocabulary))) for _ in range(count)]
            random.Random(shuffle_seed).shuffle(text)
            return user_text(" ".join(text))

        most = 1
        while estimate(most) <= self.budget:
            most *= 2
        fitted = fit_units(build, estimate, lambda b: largest_within(estimate, 0, most, b), most, self.budget,
                           self.tokens, self.task)
        counts = zipf_counts(fitted.units, len(vocabulary))
        answers = vocabulary[1:1 + FWE_NUM_ANSWERS]
        return {"input": fitted.text, "outputs": answers, "length": fitted.length,
                "meta": {"haystack_units": fitted.units, "answer_counts": counts[1:1 + FWE_NUM_ANSWERS],
                         "next_count": counts[1 + FWE_NUM_ANSWERS], "noise_count": counts[0]}}
