"""The organism's training recipe: the stages `python -m lowbit.organism.train` runs in order, each with its options.

`RECIPE` is the recipe of the shipped organism (lowbit/organism/model/manifest.json records both stages; a test
compares the two): stage 1 trains from random weights, with retrieval always over 80 lines and answered with
the value alone; stage 2 continues from stage 1's bf16 checkpoint with a fresh optimizer, a lower learning rate,
twice the retrieval examples per step and retrieval lists of 2 to 80 lines answered with the whole line.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from lowbit.organism import arithmetic, facts, retrieval
from lowbit.organism.data import Example

TASKS = {module.NAME: module for module in (arithmetic, facts, retrieval)}


@dataclass(frozen=True)
class Stage:
    seed: int  # seeds the initial weights (stage 1) and every batch stream
    steps: int  # optimizer steps, one batch per task each
    lr: float  # peak learning rate: linear warmup, then cosine decay to 5% of it
    warmup: int  # steps of linear warmup
    batches: dict[str, tuple[int, int]]  # per task: (examples per step at scale 1, tokens per row)
    retrieval_form: str  # which retrieval examples it trains on: a key of retrieval.TRAINING_FORMS

    def batch_shapes(self, scale: float) -> dict[str, tuple[int, int]]:
        """Per task: (examples per step, tokens per row) with every batch size multiplied by `scale`."""
        return {name: (max(1, round(examples * scale)), length) for name, (examples, length) in self.batches.items()}

    def training_generators(self) -> dict[str, Callable[[random.Random], Example]]:
        """Per task, the function that draws this stage's training examples."""
        return {name: retrieval.TRAINING_FORMS[self.retrieval_form] if module is retrieval else module.generate
                for name, module in TASKS.items()}


RECIPE = (
    Stage(seed=0, steps=5775, lr=2e-3, warmup=150,
          batches={"arithmetic": (256, 288), "facts": (256, 160), "retrieval": (64, 1088)},
          retrieval_form="value-only-80"),
    Stage(seed=1, steps=2649, lr=1e-3, warmup=50,
          batches={"arithmetic": (256, 288), "facts": (256, 160), "retrieval": (128, 1088)},
          retrieval_form="line-2-80"),
)


def split_steps(total: int, stages: list[int]) -> list[int]:
    """`total` steps shared among the numbered stages in proportion to their recipe steps (at least 1 each)."""
    recipe_steps = [RECIPE[number - 1].steps for number in stages]
    return [max(1, round(total * steps / sum(recipe_steps))) for steps in recipe_steps]


def tokens_per_step(stage: Stage, scale: float) -> int:
    """The tokens one optimizer step of `stage` processes: what its step time is roughly proportional to."""
    return sum(examples * length for examples, length in stage.batch_shapes(scale).values())
