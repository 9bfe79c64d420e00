"""Checkers about words, letters, length and language: the keywords:*, language:*, length_constraints:*,
change_case:* and punctuation:* instruction types of IFEval (Zhou et al. 2023, arXiv:2311.07911, Table 1).

Each `build_*` function validates the instruction's arguments once and returns a `Check` (response -> followed?).
Where the paper leaves a detail open, the reference implementation's behaviour is followed and written down here:

- keywords:existence and keywords:frequency match a keyword as a case-insensitive substring, not a whole word
  ("art" is found in "start"); keywords:forbidden_words matches whole words only (`\\b` on both sides). Keywords
  are literal text (the reference hands them to `re` unescaped; no IFEval keyword contains a metacharacter).
- keywords:letter_frequency counts one character case-insensitively, as given. Key 1122 asks for at least 4 of
  the character "#" (hashtags); the reference replaces any non-letter with a random letter, which makes that
  instruction's outcome random. lowbit counts "#" itself, which is what the prompt asks for.
- language:response_language and the change_case:english_* types use `TextAnalyzer.language` (seeded langdetect).
  A response with nothing to detect a language from counts as followed, as in the reference.
- length_constraints:number_paragraphs splits on the markdown divider `***`: an empty first or last part does not
  count, an empty part in between fails the instruction, and the count must be exact.
- length_constraints:nth_paragraph_first_word splits on "\\n\\n": the number of non-blank paragraphs must be
  exact and paragraph n (counted in the raw split, blanks included) must start with the word, compared in
  lower case after leading quotes are dropped and the word is cut at the first . , ? ! ' or ".
"""

from __future__ import annotations

import re

from lowbit.tasks.ifeval.arguments import Check, InstructionArgs, compare
from lowbit.tasks.ifeval.text import TextAnalyzer, count_words

PARAGRAPH_DIVIDER = re.compile(r"\s?\*\*\*\s?")
FIRST_WORD_STOP = frozenset(".,?!'\"")


# -- keywords:* --------------------------------------------------------------------------------------------


def build_keywords_existence(args: InstructionArgs, text: TextAnalyzer) -> Check:
    patterns = [re.compile(re.escape(k), re.IGNORECASE) for k in args.texts("keywords")]
    return lambda response: all(p.search(response) for p in patterns)


def build_keyword_frequency(args: InstructionArgs, text: TextAnalyzer) -> Check:
    pattern = re.compile(re.escape(args.text("keyword").strip()), re.IGNORECASE)
    relation, frequency = args.relation("relation"), args.integer("frequency")
    return lambda response: compare(len(pattern.findall(response)), relation, frequency)


def build_forbidden_words(args: InstructionArgs, text: TextAnalyzer) -> Check:
    patterns = [re.compile(rf"\b{re.escape(w)}\b", re.IGNORECASE) for w in sorted(set(args.texts("forbidden_words")))]
    return lambda response: not any(p.search(response) for p in patterns)


def build_letter_frequency(args: InstructionArgs, text: TextAnalyzer) -> Check:
    letter = args.text("letter").strip().lower()
    if len(letter) != 1:
        raise ValueError(f"{args.instruction_id}: 'letter' must be one character, got {letter!r}")
    relation, frequency = args.relation("let_relation"), args.integer("let_frequency")
    return lambda response: compare(response.lower().count(letter), relation, frequency)


# -- language:* --------------------------------------------------------------------------------------------


def build_response_language(args: InstructionArgs, text: TextAnalyzer) -> Check:
    language = args.text("language")

    def check(response: str) -> bool:
        detected = text.language(response)
        return detected is None or detected == language

    return check


# -- length_constraints:* ----------------------------------------------------------------------------------


def build_number_sentences(args: InstructionArgs, text: TextAnalyzer) -> Check:
    relation, threshold = args.relation("relation"), args.integer("num_sentences")
    return lambda response: compare(text.count_sentences(response), relation, threshold)


def build_number_words(args: InstructionArgs, text: TextAnalyzer) -> Check:
    relation, threshold = args.relation("relation"), args.integer("num_words")
    return lambda response: compare(count_words(response), relation, threshold)


def build_number_paragraphs(args: InstructionArgs, text: TextAnalyzer) -> Check:
    expected = args.integer("num_paragraphs", minimum=1)

    def check(response: str) -> bool:
        parts = PARAGRAPH_DIVIDER.split(response)
        blank = [i for i, part in enumerate(parts) if not part.strip()]
        if any(0 < i < len(parts) - 1 for i in blank):
            return False
        return len(parts) - len(blank) == expected

    return check


def build_nth_paragraph_first_word(args: InstructionArgs, text: TextAnalyzer) -> Check:
    expected_count = args.integer("num_paragraphs", minimum=1)
    nth = args.integer("nth_paragraph", minimum=1)
    first_word = args.text("first_word").lower()

    def check(response: str) -> bool:
        parts = response.split("\n\n")
        count = sum(1 for part in parts if part.strip())
        if nth > count:
            return False
        paragraph = parts[nth - 1].strip()
        return bool(paragraph) and count == expected_count and _first_word(paragraph) == first_word

    return check


def _first_word(paragraph: str) -> str:
    word = paragraph.split()[0].lstrip("'").lstrip('"')
    kept = []
    for character in word:
        if character in FIRST_WORD_STOP:
            break
        kept.append(character)
    return "".join(kept).lower()


# -- change_case:* -----------------------------------------------------------------------------------------


def build_capital_word_frequency(args: InstructionArgs, text: TextAnalyzer) -> Check:
    relation, frequency = args.relation("capital_relation"), args.integer("capital_frequency")

    def check(response: str) -> bool:
        capital_words = sum(1 for token in text.word_tokens(response) if token.isupper())
        return compare(capital_words, relation, frequency)

    return check


def build_english_capital(args: InstructionArgs, text: TextAnalyzer) -> Check:
    return lambda response: response.isupper() and text.language(response) in (None, "en")


def build_english_lowercase(args: InstructionArgs, text: TextAnalyzer) -> Check:
    return lambda response: response.islower() and text.language(response) in (None, "en")


# -- punctuation:* -----------------------------------------------------------------------------------------


def build_no_comma(args: InstructionArgs, text: TextAnalyzer) -> Check:
    return lambda response: "," not in response
