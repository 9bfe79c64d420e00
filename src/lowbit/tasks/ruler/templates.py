"""The RULER task configurations: prompt templates, answer prefixes, answer budgets and haystack texts.

Facts from NVIDIA RULER (Hsieh et al., arXiv:2404.06654; github.com/NVIDIA/RULER, `scripts/synthetic.yaml`,
`scripts/data/synthetic/constants.py` and the generators in `scripts/data/synthetic/`). Texts are reproduced
verbatim, including the upstream spelling "assgined" in the variable-tracking answer prefix.

A prompt is one user message: the task template with its context, followed by the answer prefix (upstream
appends the prefix after the model's chat template, as the start of the answer; a chat model gets it at the end
of the question instead, as the prebuilt `lighteval/RULER-*` datasets do).
"""

from __future__ import annotations

from dataclasses import dataclass

# -- needle in a haystack -------------------------------------------------------------------------------------

NIAH_TOKENS_TO_GENERATE = 128
# Plural form (several values are asked for) and singular form (exactly one value): upstream derives the singular
# by word replacements on the plural template; both are spelled out here.
NIAH_TEMPLATE = (
    "Some special magic {type_needle_v} are hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What are all the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
NIAH_ANSWER_PREFIX = " The special magic {type_needle_v} for {query} mentioned in the provided text are"
NIAH_TEMPLATE_SINGLE = (
    "A special magic {type_needle_v} is hidden within the following text. Make sure to memorize it. "
    "I will quiz you about the {type_needle_v} afterwards.\n{context}\n"
    "What is the special magic {type_needle_v} for {query} mentioned in the provided text?"
)
NIAH_ANSWER_PREFIX_SINGLE = " The special magic {type_needle_v} for {query} mentioned in the provided text is"
# The needle always names the value kind in the plural ("One of the special magic numbers for ...").
NEEDLE = "One of the special magic {type_needle_v} for {key} is: {value}."
# The "repeat" haystack (niah_single_1) and the noise of variable tracking.
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
NUMBER_DIGITS = 7
# Needle depths (percent of the essay's sentences): 40 evenly spaced values from 0 to 100, rounded.
DEPTHS = tuple(round(100 * i / 39) for i in range(40))


@dataclass(frozen=True)
class NiahConfig:
    haystack: str  # "repeat" (noise sentences) | "essay" (Paul Graham essays) | "needle" (distractor needles)
    key_kind: str  # "words" | "numbers" | "uuids"
    value_kind: str
    num_keys: int  # needles with distinct keys (at least num_queries)
    num_values: int  # values per key
    num_queries: int  # keys asked for

    @property
    def single_answer(self) -> bool:
        return self.num_queries * self.num_values == 1


NIAH_CONFIGS = {
    "niah_single_1": NiahConfig("repeat", "words", "numbers", 1, 1, 1),
    "niah_single_2": NiahConfig("essay", "words", "numbers", 1, 1, 1),
    "niah_single_3": NiahConfig("essay", "words", "uuids", 1, 1, 1),
    "niah_multikey_1": NiahConfig("essay", "words", "numbers", 4, 1, 1),
    "niah_multikey_2": NiahConfig("needle", "words", "numbers", 1, 1, 1),
    "niah_multikey_3": NiahConfig("needle", "uuids", "uuids", 1, 1, 1),
    "niah_multivalue": NiahConfig("essay", "words", "numbers", 1, 4, 1),
    "niah_multiquery": NiahConfig("essay", "words", "numbers", 4, 1, 4),
}

# -- variable tracking ----------------------------------------------------------------------------------------

VT_TOKENS_TO_GENERATE = 30
VT_TEMPLATE = (
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n{context}\n"
    "Question: Find all variables that are assigned the value {query} in the text above."
)
VT_ANSWER_PREFIX = (
    " Answer: According to the chain(s) of variable assignment in the text above, {num_v} variables are "
    "assgined the value {query}, they are: "
)
VT_NUM_CHAINS = 1
VT_NUM_HOPS = 4
VT_NAME_LETTERS = 5  # variable names: 5 random capital letters (3 in the one-shot example)
VT_EXAMPLE_NAME_LETTERS = 3
VT_VALUE_RANGE = (10000, 99999)  # the chain's starting value, inclusive ends

# -- common words extraction ----------------------------------------------------------------------------------

CWE_TOKENS_TO_GENERATE = 120
CWE_TEMPLATE = (
    "Below is a numbered list of words. In these words, some appear more often than others. Memorize the ones "
    "that appear most often.\n{context}\nQuestion: What are the 10 most common words in the above list?"
)
CWE_ANSWER_PREFIX = " Answer: The top 10 words that appear most often in the list are:"
CWE_NUM_COMMON = 10
# (common repeats, uncommon repeats) of the sample and of its one-shot example; below 4096 tokens fewer repeats
CWE_REPEATS = {"long": (30, 3), "short": (6, 1)}
CWE_EXAMPLE = {"long": (40, 10, 3), "short": (20, 3, 1)}  # (words, common repeats, uncommon repeats)
CWE_SHORT_BELOW = 4096

# -- frequent words extraction --------------------------------------------------------------------------------

FWE_TOKENS_TO_GENERATE = 50
FWE_TEMPLATE = (
    "Read the following coded text and track the frequency of each coded word. Find the three most frequently "
    "appeared coded words. {context}\nQuestion: Do not provide any explanation. Please ignore the dots '....'. "
    "What are the three most frequently appeared words in the above coded text?"
)
FWE_ANSWER_PREFIX = " Answer: According to the coded text above, the three most frequently appeared words are:"
FWE_ALPHA = 2.0  # Zipf exponent: the word of rank k appears num_words * k^-alpha / zeta(alpha) times
FWE_WORD_LETTERS = 6
FWE_TOKENS_PER_VOCAB_WORD = 50  # vocabulary size = max_seq_length // 50
FWE_NOISE_WORD = "..."  # takes rank 1, so the answers are ranks 2-4
FWE_NUM_ANSWERS = 3

TOKENS_TO_GENERATE = {
    **{name: NIAH_TOKENS_TO_GENERATE for name in NIAH_CONFIGS},
    "vt": VT_TOKENS_TO_GENERATE,
    "cwe": CWE_TOKENS_TO_GENERATE,
    "fwe": FWE_TOKENS_TO_GENERATE,
}
