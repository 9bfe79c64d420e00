"""Held-out accuracy of an organism checkpoint, measured while training (for the manifest) with greedy decoding.

This is a quick in-process check with plain transformers generation; `lowbit eval` with the organism tasks
(lowbit.tasks.organism) is the measurement lowbit reports. The checks are the tasks' own: the boxed answer after
the reasoning equals the sum or difference, the committed letter is the right one.
"""

from __future__ import annotations

import torch

from lowbit.metrics.math_answers import boxed_answer
from lowbit.metrics.multiple_choice import extract_choice
from lowbit.organism import arithmetic, facts
from lowbit.organism.data import Example, held_out_examples
from lowbit.organism.tokenizer import render

MAX_NEW_TOKENS = {arithmetic.NAME: 256, facts.NAME: 16}


def correct(task: str, example: Example, reply: str) -> bool:
    answer = reply.split("</think>", 1)[1] if "</think>" in reply else ("" if "<think>" in reply else reply)
    if task == arithmetic.NAME:
        return boxed_answer(answer) == example.gold
    return extract_choice(answer).letter == example.gold  # facts


@torch.no_grad()
def held_out_accuracy(model, tokenizer, generator, count: int, batch_size: int = 250) -> float:
    examples = held_out_examples(generator.generate, count)
    padding_side, tokenizer.padding_side = tokenizer.padding_side, "left"
    right = 0
    try:
        right = _count_right(model, tokenizer, generator, examples, batch_size)
    finally:
        tokenizer.padding_side = padding_side
    return right / len(examples)


def _count_right(model, tokenizer, generator, examples: list[Example], batch_size: int) -> int:
    device = next(model.parameters()).device
    right = 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        encoded = tokenizer([render(e)[0] for e in chunk], add_special_tokens=False, return_tensors="pt",
                            padding=True).to(device)
        output = model.generate(**encoded, max_new_tokens=MAX_NEW_TOKENS[generator.NAME], do_sample=False)
        replies = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
        right += sum(correct(generator.NAME, e, r) for e, r in zip(chunk, replies))
    return right
