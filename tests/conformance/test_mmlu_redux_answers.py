"""Realistic model answers to MMLU-Redux questions, read the way a careful human grader would read them.

Each case is a full completion as a model wrote it (thinking-mode ones with their <think> block), the prompt
mode it was written in, and the letter a grader would record (None: no committed answer).
"""

import pytest

from lowbit.chat import get_chat_format
from lowbit.metrics.multiple_choice import extract_choice
from lowbit.records import Generation

NON_THINKING = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
THINKING = "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n"

CASES = [
    # --- the requested format, and its common decorations
    ("ANSWER: C", "C"),
    ("ANSWER: B\n", "B"),
    ("The hormone is produced by the pituitary.\n\nANSWER: D", "D"),
    ("**ANSWER: A**", "A"),
    ("**Answer:** B", "B"),
    ("Answer: (C)", "C"),
    ("ANSWER: [D]", "D"),
    ("ANSWER: C) Narcolepsy", "C"),
    ("ANSWER: $C$", "C"),
    ("ANSWER：B", "B"),
    ("answer: C", "C"),
    ("Final Answer: D", "D"),
    ("Final answer: **(B)**", "B"),
    ("### Final Answer\nANSWER: A", "A"),
    ("ANSWER: `B`", "B"),
    # --- prose commitments
    ("The answer is (C).", "C"),
    ("The correct answer is B.", "B"),
    ("Therefore, the correct answer is **D. Hydrocephalus**.", "D"),
    ("So the answer must be A.", "A"),
    ("The best option is C, since the others contradict the premise.", "C"),
    ("Option B is correct because the bundle is the only connection.", "B"),
    ("I'd go with D.", "D"),
    ("I choose A.", "A"),
    ("The correct choice is (B).", "B"),
    ("Correct option: C", "C"),
    # --- LaTeX
    ("\\boxed{C}", "C"),
    ("Thus the answer is $\\boxed{B}$.", "B"),
    ("$\\boxed{\\text{A}}$", "A"),
    ("\\boxed{(D)}", "D"),
    ("Final Answer: The final answer is $\\boxed{C}$. I hope it is correct.", "C"),
    ("The answer is $\\textbf{(A)}$", "A"),
    # --- bare letters on the last line
    ("C", "C"),
    ("(B)", "B"),
    ("D.", "D"),
    ("Let me look at each option.\nA is too broad, B is too narrow.\nC", "C"),
    ("Considering everything above:\n\nB) It is formed of Purkinje fibres", "B"),
    # --- the last committed answer wins
    ("ANSWER: B\n\nWait, I misread the question. The stem asks for the exception.\n\nANSWER: D", "D"),
    ("At first glance the answer is A, but A ignores inflation. The correct answer is C.", "C"),
    ("The answer is C, not B.", "C"),
    # --- letters that are not answers
    ("Based on the description, this is narcolepsy.", None),
    ("A is wrong because it describes epilepsy. B is wrong too.", None),
    ("I cannot determine the answer without more context.", None),
    ("The answer is not A.", None),
    ("Answer: a mitochondrion produces ATP.", None),
    ("", None),
    ("The answer choices all seem plausible.", None),
]

THINKING_CASES = [
    # (completion, finish_reason, expected letter): the reasoning is never scored
    ("<think>\nOption A? No. ANSWER: A would be wrong.\n</think>\n\nANSWER: B", "stop", "B"),
    ("<think>\nThe pituitary... so C.\n</think>\n\nThe correct answer is **C**.", "stop", "C"),
    ("<think>\nLet me compare A and D. ANSWER: D\n</think>\n\n\\boxed{D}", "stop", "D"),
    ("<think>\nHmm, it could be A. Actually ANSWER: A", "length", None),  # truncated in reasoning: no answer
    ("<think>\nShort thought.\n</think>\n\nD", "stop", "D"),
    ("<think>\nThinking.\n</think>\n\nANSWER: A\n\nWait, no: ANSWER: B", "stop", "B"),
]


@pytest.mark.parametrize("text, expected", CASES)
def test_non_thinking_answers(text, expected):
    completion = get_chat_format("qwen3").split(NON_THINKING, Generation(text, "stop", 100, 20))
    assert extract_choice(completion.answer).letter == expected


@pytest.mark.parametrize("text, finish, expected", THINKING_CASES)
def test_thinking_answers(text, finish, expected):
    completion = get_chat_format("qwen3").split(THINKING, Generation(text, finish, 100, 20))
    assert extract_choice(completion.answer).letter == expected
    assert completion.ended_in_reasoning == (expected is None)


def test_there_are_at_least_forty_styles():
    assert len(CASES) + len(THINKING_CASES) >= 40
