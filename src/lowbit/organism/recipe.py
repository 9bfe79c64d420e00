"""The organism's training recipe: what `python -m lowbit.organism.train` runs by default.

`RECIPE` is the recipe of the shipped organism (lowbit/organism/model/manifest.json records it; a test compares
the two): random weights trained on the two tasks, one batch of each per step.
"""

from __future__ import annotations

from dataclasses import dataclass

from lowbit.organism import arithmetic, facts

TASKS = {module.NAME: module for module in (arithmetic, facts)}


@dataclass(frozen=True)
class Recipe:
    seed: int  # seeds the initial weights and every batch stream
    steps: int  # optimizer steps, one batch per task each
    lr: float  # peak learning rate: linear warmup, then cosine decay to 5% of it
    warmup: int  # steps of linear warmup
    batches: dict[str, tuple[int, int]]  # per task: (examples per step at scale 1, tokens per row)

    def batch_shapes(self, scale: float) -> dict[str, tuple[int, int]]:
        """Per task: (examples per step, tokens per row) with every batch size multiplied by `scale`."""
        return {name: (max(1, round(examples * scale)), length) for name, (examples, length) in self.batches.items()}


RECIPE = Recipe(seed=0, steps=5000, lr=2e-3, warmup=150, batches={"arithmetic": (256, 288), "facts": (256, 160)})
