"""Reading the committed letter out of a multiple-choice answer.

Models state their choice in many ways: "ANSWER: C", "**Answer:** (C)", "\\boxed{C}", "The correct answer is
C.", "I'd go with B", or a last line that is just the letter. The extractor looks for explicit commitments
and takes the *last* one, so "Answer: B … on reflection, ANSWER: C" gives C. Only when there is no explicit
commitment does a final line consisting of a letter (optionally with its option text) count. A letter that
merely appears in prose ("Based on…", "A is wrong") is never an answer. Keywords are matched in any case;
choice letters must be capitals, so the article "a" is not read as option A.

`first_match_choice` is the reference quantization study's rule (first match of a fixed pattern list in the
lower-cased text); MMLU-Redux scores with `extract_choice` and reports how often the two read different letters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_LATEX_WRAPPER = re.compile(r"\\(?:textbf|text|mathrm|mathbf|texttt|emph)\s*\{([^{}]*)\}")
_NOISE = re.compile(r"[*_$`]+")


def _commitments(letters: str) -> list[re.Pattern[str]]:
    choice = rf"[\(\[]?\s*([{letters}])\s*[\)\]]?(?![\w'’])"
    verb = r"(?:is|was|would\s+be|should\s+be|must\s+be|will\s+be|=)"
    return [
        # ANSWER: C / Final answer: (C) / The correct answer is C / answer is option C
        re.compile(rf"(?i:\banswer)\s*(?:{verb}\s*)?(?:[:：=\-–]\s*)?(?i:(?:option|choice|letter)\s*)?{choice}"),
        # The best option is B / correct choice: D
        re.compile(rf"(?i:\b(?:correct|right|best|final)\s+(?:option|choice|letter)\s*(?:{verb}\s*)?[:：]?\s*){choice}"),
        # Option C is correct / choice B is the answer
        re.compile(rf"(?i:\b(?:option|choice)\s*)[\(\[]?([{letters}])[\)\]]?(?i:\s+is\s+(?:the\s+)?(?:correct|right|best|answer))"),
        # \boxed{C} / \boxed{(C)} / \boxed{C) text}
        re.compile(rf"\\boxed\s*\{{\s*[\(\[]?\s*([{letters}])(?![A-Za-z])"),
        # I choose B / I'd go with (D)
        re.compile(rf"(?i:\bI(?:'d|’d|\s+would|\s+will|'ll|’ll)?\s+(?:choose|pick|select|go\s+with)\s+(?:option\s+|choice\s+)?){choice}"),
    ]


def _last_line_letter(letters: str) -> re.Pattern[str]:
    # "C", "(C)", "C.", "C) Narcolepsy", "C. Narcolepsy", "C: Narcolepsy"
    return re.compile(rf"^\s*[\(\[]?([{letters}])(?:[\)\]\.:]?\s*$|[\)\]\.:]\s+\S.*$)")


@dataclass(frozen=True)
class Extraction:
    letter: str | None
    how: str  # "commitment", "last_line" or "none"


def extract_choice(text: str, letters: str = "ABCD") -> Extraction:
    """The letter the text commits to, or Extraction(None, "none")."""
    clean = _NOISE.sub("", _LATEX_WRAPPER.sub(r"\1", text))
    found = [(m.end(), m.group(1)) for pattern in _commitments(letters) for m in pattern.finditer(clean)]
    if found:
        return Extraction(max(found)[1], "commitment")
    lines = [line for line in clean.splitlines() if line.strip()]
    if lines:
        match = _last_line_letter(letters).match(lines[-1])
        if match:
            return Extraction(match.group(1), "last_line")
    return Extraction(None, "none")


# The reference quantization study's MMLU-Redux rule, on the lower-cased, stripped answer text: these patterns in
# this order, the first that matches anywhere wins (not the last commitment, as extract_choice).
_FIRST_MATCH_RULES = tuple(re.compile(p, re.MULTILINE) for p in (
    r"^answer:\s*([a-d])\s*$",  # a line that is only "answer: x"
    r"answer:\s*([a-d])",  # its first occurrence anywhere (no word boundary: "answer: because" reads b)
    r"\*\*answer\*\*:\s*([a-d])",
    r"\*\*answer:\*\*\s*([a-d])",
    r"\A([a-d])\Z",  # the whole text is one letter
    r"\\boxed\{([a-d])\}",
    r"\\boxed\{\\text\{([a-d])",
    r"answer:\s*\*\*([a-d])\*\*",
    r"\\text\{answer\}\s*:\s*\\text\{([a-d])\}",  # LaTeX variants
    r"\\text\{answer\}\s*:\s*([a-d])",
    r"\\text\{answer:\}\s*([a-d])",
))


def first_match_choice(text: str | None) -> str | None:
    """The letter (upper case) the reference study's first-match rule reads from an answer, or None."""
    clean = (text or "").lower().strip()
    for pattern in _FIRST_MATCH_RULES:
        match = pattern.search(clean)
        if match:
            return match.group(1).upper()
    return None
