"""Reading and checking final answers to math problems.

Extraction (`boxed_answer`) is plain Python: the final answer is the content of the *last* `\\boxed{…}` (or
`\\fbox{…}`, or `\\boxed x` without braces) in the answer text, with braces balanced, so
`\\boxed{\\frac{1}{2}}` gives `\\frac{1}{2}`. Boxes written back to back, separated only by commas, "and",
"or", spacing or a variable's "x =" ("$\\boxed{0}$, $\\boxed{1}$", "$x=\\boxed{0}$ or $x=\\boxed{1}$"), are one
answer listing several values and are joined: "0, 1". A box whose braces never close (a completion cut off
mid-answer) does not count.

Checking (`MathVerifier`) compares an extracted answer with the gold answer using Hugging Face's math-verify
(SymPy-based: equivalent forms such as 0.5 and \\frac{1}{2}, sets in any order, intervals, matrices,
`x = 5` against `5`, `\\text{}` wrappers, unit words and degree marks: `90^\\circ` is 90). Before that, both sides
drop percent signs (`50\\%` and `50` are the same answer; math-verify would keep `50\\%` as unparsed text).

SymPy can take arbitrarily long on a pathological expression, in C code that no signal interrupts, and
math-verify's own timeout relies on SIGALRM, which only works on the main thread. So checking runs in a
worker process that is killed when one item exceeds its time limit; the item counts as a scoring failure and a
fresh worker serves the next one. This works from any thread, and the parent never imports SymPy.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lowbit.errors import UsageError

# ------------------------------------------------------------------------------------------------ extraction

_BOX_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
# What may stand between two boxes that together state one answer: spacing, commas, "and"/"or", math
# delimiters, and a one-letter variable being assigned ("$x = \\boxed{1}$ or $x = \\boxed{2}$").
_BOX_SEPARATOR = re.compile(
    r"(?:\s|[,;$]|\\[,;:! ]|\\q?quad|\\text\{\s*(?:and|or|,)?\s*\}|\b(?:and|or)\b|\b[A-Za-z]\s*="
    r"|\\\(|\\\)|\\\[|\\\])*")


@dataclass(frozen=True)
class _Box:
    start: int  # index of the backslash of \boxed
    end: int  # index just past the box
    content: str


def _boxes(text: str) -> list[_Box]:
    """Every complete box in the text, in order."""
    boxes = []
    for match in _BOX_COMMAND.finditer(text):
        position = match.end()
        while position < len(text) and text[position] in " \t":
            position += 1
        if position < len(text) and text[position] == "{":
            closing = _matching_brace(text, position)
            if closing is None:
                continue  # never closed: a cut-off answer
            content, end = text[position + 1:closing], closing + 1
        else:
            # `\boxed 5` boxes one token; take the run of non-space characters, without sentence punctuation
            token = re.match(r"[^\s$]*", text[position:]).group(0)
            content = token.rstrip(".,;:")
            end = position + len(token)
        if content.strip():
            boxes.append(_Box(match.start(), end, content.strip()))
    return boxes


def _matching_brace(text: str, opening: int) -> int | None:
    """Index of the brace closing the one at `opening`; escaped braces (\\{ \\}) do not count."""
    depth, position = 0, opening
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return position
        position += 1
    return None


def boxed_answer(text: str) -> str | None:
    """The content of the last box, joined with the boxes directly before it that list further values; None
    when the text has no complete box."""
    boxes = _boxes(text or "")
    if not boxes:
        return None
    group = [boxes[-1]]
    for previous in reversed(boxes[:-1]):
        between = text[previous.end:group[0].start]
        if _BOX_SEPARATOR.fullmatch(between) is None:
            break
        group.insert(0, previous)
    return ", ".join(box.content for box in group)


_PERCENT = re.compile(r"\\?%")
_DEGREE_SIGN = re.compile(r"\\degree\b|°")
# A LaTeX-spaced thousands separator ("10\\,080", "10\\!080", "10{,}080", "10,\\!080"): only before exactly
# three digits, so "(1,\\, 2)" keeps its comma.
_SPACED_THOUSANDS = re.compile(r"(?<=\d)(?:\{,\}|,?\\[,!])(?=\d{3}(?!\d))")


def normalize_for_checking(answer: str) -> str:
    """What math-verify needs done first: percent signs dropped (it would keep "50\\%" as unparsed text),
    degree signs written as `^\\circ` (which it drops), LaTeX-spaced thousands separators removed."""
    text = _PERCENT.sub("", answer)
    text = _DEGREE_SIGN.sub(lambda _: "^\\circ", text)  # a function: "\\c" is no escape for re.sub
    return _SPACED_THOUSANDS.sub("", text).strip()


_DEGREE_MARK = re.compile(r"\^\s*\{?\s*\\circ\s*\}?")
_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_THOUSANDS = re.compile(r"(?<=\d)(?:,|\{,\}|\\!|\\,|\s)+(?=\d{3}(?!\d))")
_SPACING = re.compile(r"\\[,;:! $]|\\q?quad|\\(?:left|right)\b|[$\s]")  # spacing, math delimiters, dollars
_INTEGER = re.compile(r"[+-]?\d{1,50}(?:\.0*)?")  # longer runs of digits are no answer (and int() refuses >4300)
_UNIT_WORDS = re.compile(r"(?<=\d)[A-Za-z]{2,}[A-Za-z ]*$")  # "70 dollars"; not "3n"


def integer_answer(answer: str) -> int | None:
    """An extracted answer read as an integer (AIME answers are 0-999), or None when it is not one.

    Forgives what a grader forgives: leading zeros ("070"), thousands separators ("1{,}000"), wrappers
    (`\\text{70}`, `\\mathbf{70}`), a dollar sign, a unit or degree mark ("70 \\text{ degrees}", "70^\\circ",
    "70\\%"), a leading "m + n =", and a trailing ".0". Anything else, e.g. "\\frac{1}{2}" or "2^5", is not an
    integer."""
    text = _TEXT_WRAPPER.sub(r"\1", _DEGREE_MARK.sub("", normalize_for_checking(answer)))
    text = text.rsplit("=", 1)[-1]
    text = _THOUSANDS.sub("", text.strip())
    text = _SPACING.sub("", text)
    text = _UNIT_WORDS.sub("", text)
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1]
    if not _INTEGER.fullmatch(text):
        return None
    return int(text.split(".")[0])


# ------------------------------------------------------------------------------------------------- checking

DEFAULT_TIME_LIMIT = 5.0  # seconds per item; realistic answers take milliseconds
_WORKER_START_LIMIT = 300.0  # seconds for a fresh worker to import SymPy and math-verify


@dataclass(frozen=True)
class Verdict:
    correct: bool
    failure: str | None = None  # None, or why the item could not be checked: "timeout" / "error: ..."


class MathVerifier:
    """Checks answers against gold answers in a worker process, with a time limit per item.

    One instance serves one caller at a time (calls are serialised by a lock) and may be used from any thread.
    The worker starts on the first `check` and ends with `close()`, the interpreter, or a timeout."""

    def __init__(self, time_limit: float = DEFAULT_TIME_LIMIT):
        if not time_limit > 0:
            raise ValueError(f"time_limit must be a positive number of seconds, got {time_limit}")
        self.time_limit = float(time_limit)
        self._lock = threading.Lock()
        self._worker: subprocess.Popen | None = None

    def check(self, answer: str, gold: str) -> Verdict:
        """Whether `answer` (an extracted final answer, LaTeX without $) equals `gold`."""
        request = json.dumps({"answer": normalize_for_checking(answer), "gold": normalize_for_checking(gold)})
        with self._lock:
            worker = self._running_worker()
            try:
                worker.stdin.write(request + "\n")
                worker.stdin.flush()
                line = _read_line(worker, self.time_limit)
            except (BrokenPipeError, OSError) as e:
                self._stop_worker()
                return Verdict(False, f"error: worker pipe failed ({type(e).__name__})")
            if line is None:
                self._stop_worker()
                return Verdict(False, "timeout")
            if not line:
                self._stop_worker()
                return Verdict(False, "error: worker exited")
        reply = json.loads(line)
        return Verdict(bool(reply["correct"]), reply.get("error"))

    def close(self) -> None:
        with self._lock:
            self._stop_worker()

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "_worker", None) is not None:  # a verifier nobody closed: still reap its worker
            self._stop_worker()

    def _running_worker(self) -> subprocess.Popen:
        if self._worker is not None and self._worker.poll() is None:
            return self._worker
        # The worker imports lowbit from where this interpreter found it, installed or not.
        package_root = str(Path(__file__).resolve().parents[2])
        search_path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
        self._worker = subprocess.Popen(
            [sys.executable, "-c", "from lowbit.metrics.math_answers import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, encoding="utf-8", bufsize=1,
            env={**os.environ, "PYTHONPATH": search_path},
        )
        if _read_line(self._worker, _WORKER_START_LIMIT) != "ready\n":
            self._stop_worker()
            raise UsageError(f"the math-verify worker did not start (see its error above): install math-verify "
                             f"into {sys.executable}'s environment (pip install 'math-verify[antlr4_9_3]')")
        return self._worker

    def _stop_worker(self) -> None:
        if self._worker is None:
            return
        if self._worker.poll() is None:
            self._worker.kill()
        self._worker.wait()
        for stream in (self._worker.stdin, self._worker.stdout):
            try:
                stream.close()
            except OSError:
                pass  # a pipe to a killed process may refuse a flush
        self._worker = None


def _read_line(worker: subprocess.Popen, limit: float) -> str | None:
    """The worker's next line; None when none arrives within `limit` seconds, "" when the worker exited.
    The protocol is strictly request/response, so at most one line is ever pending."""
    deadline = time.monotonic() + limit
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        readable, _, _ = select.select([worker.stdout], [], [], remaining)
        if readable:
            return worker.stdout.readline()


# --------------------------------------------------------------------------------------------------- worker


def serve() -> None:
    """The worker's loop: one JSON request per stdin line, one JSON reply per line on the original stdout."""
    import logging

    replies = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    compare = _make_comparator()
    replies.write("ready\n")
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply = {"correct": compare(request["answer"], request["gold"]), "error": None}
        except Exception as e:  # math-verify catches its own; anything else is a scoring failure, not a crash
            reply = {"correct": False, "error": f"error: {type(e).__name__}: {str(e)[:200]}"}
        replies.write(json.dumps(reply) + "\n")


def _make_comparator():
    """compare(answer, gold) -> bool with math-verify, timeouts off (the parent enforces them)."""
    from functools import lru_cache

    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig(boxed_match_priority=0)]

    @lru_cache(maxsize=4096)
    def parsed(latex: str):
        return parse(f"$\\boxed{{{latex}}}$", extraction_config=config, parsing_timeout=None)

    def compare(answer: str, gold: str) -> bool:
        gold_parsed, answer_parsed = parsed(gold), parsed(answer)
        if not gold_parsed or not answer_parsed:
            return False
        return bool(verify(gold_parsed, answer_parsed, allow_set_relation_comp=True, timeout_seconds=None))

    return compare
