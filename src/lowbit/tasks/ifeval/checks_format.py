"""Checkers about the shape of a response: the detectable_content:*, detectable_format:*, combination:* and
startend:* instruction types of IFEval (Zhou et al. 2023, arXiv:2311.07911, Table 1).

Each `build_*` function validates the instruction's arguments once and returns a `Check` (response -> followed?).
The definitions follow the reference implementation's behaviour; the less obvious ones:

- detectable_content:postscript finds the marker anywhere in the response, case-insensitively: "P.S." also as
  "p. s.", "P.P.S" also as "p. p. s" (the reference's pattern is not anchored to a line start); any other
  marker is looked for as literal text.
- detectable_format:number_bullet_lists counts lines that start (after whitespace) with "*" followed by a
  character other than "*", plus lines that start with "-"; the count must be exact. As in the reference,
  leading whitespace may include blank lines, and a lone "*" at a line end pairs with the line break.
- detectable_format:number_highlighted_sections counts `*text*` spans and, separately, `**text**` spans on one
  line with non-blank text, so a bold span counts once and an italic one once.
- detectable_format:multiple_sections counts "<splitter> <number>" markers (e.g. "SECTION 2"), at least n.
- detectable_format:json_format strips whitespace and one ```json / ```Json / ```JSON / ``` fence, then needs
  the rest to parse as JSON.
- detectable_format:constrained_response needs one of the three fixed answers somewhere in the response.
- combination:two_responses splits on "******": exactly two non-blank, different parts, and no blank part
  between two separators.
- combination:repeat_prompt needs the response to start with the request to repeat (case-insensitive, both
  stripped); startend:end_checker needs it to end with the phrase (case-insensitive, after stripping whitespace
  and then double quotes); startend:quotation needs it to start and end with '"' after stripping whitespace.
"""

from __future__ import annotations

import json
import re

from lowbit.tasks.ifeval.arguments import Check, InstructionArgs
from lowbit.tasks.ifeval.text import TextAnalyzer

PLACEHOLDER = re.compile(r"\[.*?\]")
# A bullet line: optional leading whitespace, then "*" and one non-"*" character, or "-".
STAR_BULLET = re.compile(r"^\s*\*[^*].*$", re.MULTILINE)
DASH_BULLET = re.compile(r"^\s*-.*$", re.MULTILINE)
ITALIC_SPAN = re.compile(r"\*[^\n*]*\*")
BOLD_SPAN = re.compile(r"\*\*[^\n*]*\*\*")
TITLE = re.compile(r"<<[^\n]+>>")
JSON_FENCES = ("```json", "```Json", "```JSON", "```")
CONSTRAINED_RESPONSES = ("My answer is yes.", "My answer is no.", "My answer is maybe.")
RESPONSE_SEPARATOR = "******"
POSTSCRIPT_PATTERNS = {"P.S.": r"p\.\s?s\.", "P.P.S": r"p\.\s?p\.\s?s"}


# -- detectable_content:* ----------------------------------------------------------------------------------


def build_number_placeholders(args: InstructionArgs, text: TextAnalyzer) -> Check:
    minimum = args.integer("num_placeholders")
    return lambda response: len(PLACEHOLDER.findall(response)) >= minimum


def build_postscript(args: InstructionArgs, text: TextAnalyzer) -> Check:
    marker = args.text("postscript_marker").strip()
    pattern = re.compile(POSTSCRIPT_PATTERNS.get(marker, re.escape(marker.lower())))
    return lambda response: pattern.search(response.lower()) is not None


# -- detectable_format:* -----------------------------------------------------------------------------------


def build_constrained_response(args: InstructionArgs, text: TextAnalyzer) -> Check:
    return lambda response: any(option in response for option in CONSTRAINED_RESPONSES)


def build_json_format(args: InstructionArgs, text: TextAnalyzer) -> Check:
    def check(response: str) -> bool:
        body = response.strip()
        for fence in JSON_FENCES:
            body = body.removeprefix(fence)
        try:
            json.loads(body.removesuffix("```").strip())
        except ValueError:
            return False
        return True

    return check


def build_multiple_sections(args: InstructionArgs, text: TextAnalyzer) -> Check:
    splitter = args.text("section_spliter").strip()
    marker = re.compile(rf"\s?{re.escape(splitter)}\s?\d+\s?")
    minimum = args.integer("num_sections")
    return lambda response: len(marker.findall(response)) >= minimum


def build_number_bullet_lists(args: InstructionArgs, text: TextAnalyzer) -> Check:
    expected = args.integer("num_bullets")
    return lambda response: len(STAR_BULLET.findall(response)) + len(DASH_BULLET.findall(response)) == expected


def build_number_highlighted_sections(args: InstructionArgs, text: TextAnalyzer) -> Check:
    minimum = args.integer("num_highlights")

    def check(response: str) -> bool:
        italic = sum(1 for span in ITALIC_SPAN.findall(response) if span.strip("*").strip())
        bold = sum(1 for span in BOLD_SPAN.findall(response) if span[2:-2].strip())
        return italic + bold >= minimum

    return check


def build_title(args: InstructionArgs, text: TextAnalyzer) -> Check:
    return lambda response: any(t.lstrip("<").rstrip(">").strip() for t in TITLE.findall(response))


# -- combination:* -----------------------------------------------------------------------------------------


def build_two_responses(args: InstructionArgs, text: TextAnalyzer) -> Check:
    def check(response: str) -> bool:
        parts = response.split(RESPONSE_SEPARATOR)
        answers = []
        for index, part in enumerate(parts):
            if part.strip():
                answers.append(part.strip())
            elif 0 < index < len(parts) - 1:
                return False
        return len(answers) == 2 and answers[0] != answers[1]

    return check


def build_repeat_prompt(args: InstructionArgs, text: TextAnalyzer) -> Check:
    request = args.text("prompt_to_repeat").strip().lower()
    return lambda response: response.strip().lower().startswith(request)


# -- startend:* --------------------------------------------------------------------------------------------


def build_end_checker(args: InstructionArgs, text: TextAnalyzer) -> Check:
    phrase = args.text("end_phrase").strip().lower()
    return lambda response: response.strip().strip('"').lower().endswith(phrase)


def build_quotation(args: InstructionArgs, text: TextAnalyzer) -> Check:
    def check(response: str) -> bool:
        body = response.strip()
        return len(body) > 1 and body.startswith('"') and body.endswith('"')

    return check
