"""Examples of the organism's tasks and the split between training and held-out evaluation data.

A prompt is held out when the SHA-256 of its text falls in one residue class (`is_held_out`): the evaluation
sets hold only such prompts and training never sees one, so the split is disjoint by construction and needs no
list of what was used. Each generator draws its examples from a `random.Random`; the evaluation sets come from
`EVAL_SEED`, training streams from the training seed.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

HOLDOUT_MODULUS = 8
EVAL_SEED = 1234
EVAL_SIZE = 500


@dataclass(frozen=True)
class Example:
    prompt: str  # the user message
    completion: str  # the assistant's reply the organism is trained to give (reasoning block included)
    gold: str  # the reference answer the task's scorer compares with
    thinking: bool  # rendered with enable_thinking (the reply opens its own <think> block)
    item: dict[str, Any] = field(default_factory=dict)  # fields recorded with the sample (group labels, ...)


Generator = Callable[[random.Random], Example]


def is_held_out(prompt: str) -> bool:
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % HOLDOUT_MODULUS == 0


def held_out_examples(generate: Generator, count: int = EVAL_SIZE, seed: int = EVAL_SEED) -> list[Example]:
    """`count` distinct held-out examples, the same for every call with the same seed."""
    rng = random.Random(seed)
    examples: list[Example] = []
    seen: set[str] = set()
    while len(examples) < count:
        example = generate(rng)
        if is_held_out(example.prompt) and example.prompt not in seen:
            seen.add(example.prompt)
            examples.append(example)
    return examples


def training_examples(generate: Generator, rng: random.Random) -> Iterator[Example]:
    """An endless stream of examples whose prompts are never held out."""
    while True:
        example = generate(rng)
        if not is_held_out(example.prompt):
            yield example
