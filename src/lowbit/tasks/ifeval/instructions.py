"""The 25 IFEval instruction types (instruction id -> checker builder) and how one response is judged against
a prompt's instructions, strictly and loosely.

Strict: the response as given. Loose (the paper's upper bound, section 2.2): an instruction also counts as
followed when it holds for any of eight variants of the response: the response itself, without its first line,
without its last line, without both (each stripped), and each of those four with every "*" removed (markdown
emphasis). A blank response, or a blank variant, follows nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from lowbit.tasks.ifeval import checks_format as fmt
from lowbit.tasks.ifeval import checks_words as words
from lowbit.tasks.ifeval.arguments import Check, InstructionArgs
from lowbit.tasks.ifeval.text import TextAnalyzer

Builder = Callable[[InstructionArgs, TextAnalyzer], Check]

INSTRUCTION_TYPES: dict[str, Builder] = {
    "change_case:capital_word_frequency": words.build_capital_word_frequency,
    "change_case:english_capital": words.build_english_capital,
    "change_case:english_lowercase": words.build_english_lowercase,
    "combination:repeat_prompt": fmt.build_repeat_prompt,
    "combination:two_responses": fmt.build_two_responses,
    "detectable_content:number_placeholders": fmt.build_number_placeholders,
    "detectable_content:postscript": fmt.build_postscript,
    "detectable_format:constrained_response": fmt.build_constrained_response,
    "detectable_format:json_format": fmt.build_json_format,
    "detectable_format:multiple_sections": fmt.build_multiple_sections,
    "detectable_format:number_bullet_lists": fmt.build_number_bullet_lists,
    "detectable_format:number_highlighted_sections": fmt.build_number_highlighted_sections,
    "detectable_format:title": fmt.build_title,
    "keywords:existence": words.build_keywords_existence,
    "keywords:forbidden_words": words.build_forbidden_words,
    "keywords:frequency": words.build_keyword_frequency,
    "keywords:letter_frequency": words.build_letter_frequency,
    "language:response_language": words.build_response_language,
    "length_constraints:nth_paragraph_first_word": words.build_nth_paragraph_first_word,
    "length_constraints:number_paragraphs": words.build_number_paragraphs,
    "length_constraints:number_sentences": words.build_number_sentences,
    "length_constraints:number_words": words.build_number_words,
    "punctuation:no_comma": words.build_no_comma,
    "startend:end_checker": fmt.build_end_checker,
    "startend:quotation": fmt.build_quotation,
}


def build_check(instruction_id: str, kwargs: dict[str, Any] | None, text: TextAnalyzer) -> Check:
    """The check for one instruction; ValueError for an unknown id or bad arguments."""
    if instruction_id not in INSTRUCTION_TYPES:
        raise ValueError(f"unknown IFEval instruction '{instruction_id}'; known: {', '.join(INSTRUCTION_TYPES)}")
    return INSTRUCTION_TYPES[instruction_id](InstructionArgs(instruction_id, kwargs), text)


def build_checks(instruction_ids: Sequence[str], kwargs: Sequence[dict[str, Any] | None],
                 text: TextAnalyzer) -> list[Check]:
    if len(instruction_ids) != len(kwargs):
        raise ValueError(f"{len(instruction_ids)} instruction ids but {len(kwargs)} kwargs entries")
    return [build_check(i, k, text) for i, k in zip(instruction_ids, kwargs)]


def loose_variants(response: str) -> list[str]:
    """The eight readings of a response that loose evaluation accepts (see the module docstring)."""
    lines = response.split("\n")
    without_first = "\n".join(lines[1:]).strip()
    without_last = "\n".join(lines[:-1]).strip()
    without_both = "\n".join(lines[1:-1]).strip()
    trimmed = [response, without_first, without_last, without_both]
    return trimmed + [variant.replace("*", "") for variant in trimmed]


@dataclass(frozen=True)
class Judgement:
    """Per instruction, in the prompt's order: followed under strict and under loose evaluation."""

    strict: list[bool]
    loose: list[bool]


def judge(checks: Sequence[Check], response: str) -> Judgement:
    strict = [bool(response.strip()) and bool(check(response)) for check in checks]
    variants = [v for v in dict.fromkeys(loose_variants(response)) if v.strip()]
    loose = [followed or any(bool(check(v)) for v in variants) for followed, check in zip(strict, checks)]
    return Judgement(strict=strict, loose=loose)
