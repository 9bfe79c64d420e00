"""Training batches: for each task, an endless stream of fixed-shape batches of tokenized examples.

A row is the chat-rendered prompt followed by the reply, right-padded to the task's length; the loss mask marks
the positions whose next token belongs to the reply (the end-of-turn token included), so the organism learns to
answer, not to predict prompts. Each task's stream is generated in DataLoader workers from a seed derived from
the training seed, the task and the worker, so a seed fixes every batch.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lowbit.organism.data import Example, training_examples
from lowbit.organism.tokenizer import render


@dataclass(frozen=True)
class TaskBatches:
    task: str  # the task's name (part of its streams' seeds)
    generate: Callable[[random.Random], Example]  # draws one training example
    batch_size: int
    length: int  # tokens per row (prompt + reply + padding)


class _Stream(IterableDataset):
    def __init__(self, spec: TaskBatches, tokenizer, seed: int):
        self.spec, self.tokenizer, self.seed = spec, tokenizer, seed

    def __iter__(self):
        info = get_worker_info()
        worker = info.id if info is not None else 0
        rng = random.Random(f"{self.seed}/{self.spec.task}/{worker}")
        examples = training_examples(self.spec.generate, rng)
        pad = self.tokenizer.pad_token_id
        while True:
            rendered = [render(next(examples)) for _ in range(self.spec.batch_size)]
            prompts = self.tokenizer([p for p, _ in rendered], add_special_tokens=False)["input_ids"]
            replies = self.tokenizer([c for _, c in rendered], add_special_tokens=False)["input_ids"]
            ids = torch.full((self.spec.batch_size, self.spec.length), pad, dtype=torch.long)
            mask = torch.zeros((self.spec.batch_size, self.spec.length), dtype=torch.bool)
            for row, (prompt, reply) in enumerate(zip(prompts, replies)):
                total = len(prompt) + len(reply)
                if total > self.spec.length:
                    raise ValueError(f"a {self.spec.task} example has {total} tokens, more than the "
                                     f"batch length {self.spec.length}")
                ids[row, :total] = torch.tensor(prompt + reply)
                mask[row, len(prompt) - 1:total - 1] = True
            yield ids, mask


def batch_stream(spec: TaskBatches, tokenizer, seed: int, workers: int):
    """An iterator of (input_ids, loss_mask) batches for one task."""
    loader = DataLoader(_Stream(spec, tokenizer, seed), batch_size=None, num_workers=workers,
                        prefetch_factor=4 if workers else None, persistent_workers=bool(workers),
                        pin_memory=torch.cuda.is_available())
    return iter(loader)
