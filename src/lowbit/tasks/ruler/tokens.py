"""Token counting for prompt fitting: the model's tokenizer and chat template, exact prompt lengths, and the
token cost of text pieces counted once and summed.

A prompt's length is the number of tokens of the chat-templated messages (the preamble of the prompt profile, e.g.
Qwen3's reference system message, then the user message; `apply_chat_template` with `add_generation_prompt=True`
and the template arguments of the evaluation, e.g. Qwen3's `enable_thinking`), encoded without extra special
tokens: exactly what the predictors send.

Fitting a prompt to a length (`fit_units`) never re-tokenizes the whole prompt in a search loop. The haystack is
made of units (words, sentences, list entries); each unit's tokens are counted once, in isolation and with the
separator that precedes it, and a prompt with n units is estimated as a fixed overhead plus the units' prefix
sum. Byte-level BPE tokenizers (Qwen, GPT-OSS, Llama 3) split text into pre-tokens at spaces and newlines, so
these sums are exact or off by a token or two at the seams; the final prompt is then tokenized once, and the
unit count corrected from the measured difference.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError
from lowbit.tasks.ruler.messages import PromptFrame

MAX_FIT_ROUNDS = 8
# A prompt this close below its budget is kept without trying one more unit: each try tokenizes a whole prompt.
FIT_SLACK = 8


class PromptTokens:
    """A tokenizer with its chat template and template arguments, and the prompt frame (the messages sent before
    each user message) prompts are fitted in."""

    def __init__(self, tokenizer: Any, template_kwargs: dict[str, Any], name: str, frame: PromptFrame):
        if not getattr(tokenizer, "chat_template", None):
            raise UsageError(f"tokenizer '{name}' has no chat template: give an instruct/chat model's tokenizer")
        self.tokenizer = tokenizer
        self.template_kwargs = dict(template_kwargs)
        self.name = name
        self.frame = frame
        self._fingerprint: str | None = None

    @classmethod
    def load(cls, name: str, template_kwargs: dict[str, Any], frame: PromptFrame) -> PromptTokens:
        """From a hub id or a local directory; a UsageError naming the fix when it cannot be loaded."""
        if name.startswith(("/", "./", "../", "~")) and not Path(name).expanduser().is_dir():
            raise UsageError(f"cannot load tokenizer '{name}': no such directory; give a local tokenizer directory "
                             "or a hub id")
        return cls(_load_tokenizer(name), template_kwargs, name, frame)

    def render(self, user_text: str) -> str:
        """The prompt text the model reads: the preamble and `user_text` as the user message, chat-templated."""
        messages = [*self.frame.preamble_messages(), {"role": "user", "content": user_text}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  **self.template_kwargs)

    def prompt_length(self, user_text: str) -> int:
        """Exact tokens of the chat-templated prompt holding `user_text` after the preamble."""
        return len(self.tokenizer.encode(self.render(user_text), add_special_tokens=False))

    def costs(self, pieces: Sequence[str]) -> list[int]:
        """Tokens of each piece counted on its own (batched)."""
        if not pieces:
            return []
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if backend is not None:
            return [len(e.ids) for e in backend.encode_batch(list(pieces), add_special_tokens=False)]
        return [len(ids) for ids in self.tokenizer(list(pieces), add_special_tokens=False)["input_ids"]]

    @property
    def fingerprint(self) -> str:
        """A digest of the vocabulary, merges, chat template and template arguments: equal fingerprints and
        frames give equal prompts and lengths (a quantized checkpoint shares its parent's)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            backend = getattr(self.tokenizer, "backend_tokenizer", None)
            digest.update((backend.to_str() if backend is not None else json.dumps(self.tokenizer.get_vocab(),
                                                                                    sort_keys=True)).encode())
            digest.update(str(self.tokenizer.chat_template).encode())
            digest.update(json.dumps(self.template_kwargs, sort_keys=True).encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint


@functools.lru_cache(maxsize=4)
def _load_tokenizer(name: str) -> Any:
    """Loaded once per process (a tokenizer without tokenizer.json is converted on load, which takes seconds)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except Exception as e:  # missing files, offline hub, unknown id: the user's fix is the same
        raise UsageError(f"cannot load tokenizer '{name}' ({type(e).__name__}): give a local tokenizer directory "
                         "or a hub id reachable from this machine") from e


class PrefixCosts:
    """Token costs of a growing sequence of units, with prefix sums (cost of the first n units in O(1))."""

    def __init__(self, costs: Sequence[int] = ()):
        self.sums = [0, *accumulate(costs)]

    def extend(self, costs: Sequence[int]) -> None:
        total = self.sums[-1]
        for cost in costs:
            total += cost
            self.sums.append(total)

    def __len__(self) -> int:
        return len(self.sums) - 1

    def first(self, n: int) -> int:
        return self.sums[n]

    def most_within(self, budget: int) -> int:
        """The largest n whose first n units cost at most `budget` (0 when even one unit does not fit)."""
        return max(0, bisect.bisect_right(self.sums, budget) - 1)


@dataclass
class Fitted:
    """A prompt fitted to its budget: the user message, its exact length and the haystack units it holds."""

    text: str
    length: int
    units: int


def fit_units(build: Callable[[int], str], estimate: Callable[[int], int], most_units_within: Callable[[int], int],
              max_units: int, budget: int, tokens: PromptTokens, what: str) -> Fitted:
    """The prompt with (nearly) the most haystack units whose exact length is at most `budget`: at most FIT_SLACK
    tokens below it, or one unit short of going over.

    `build(n)` is the user message with n units; `estimate(n)` its estimated length (non-decreasing in n);
    `most_units_within(b)` the largest n with estimate(n) <= b. Each round tokenizes one prompt and moves the
    estimate's budget by the measured error, so a handful of rounds suffice."""
    best: Fitted | None = None
    too_long = max_units + 1  # the smallest unit count measured over budget
    target = budget - FIT_SLACK // 2  # aim inside the slack: estimates tend to miss by a token or two
    for _ in range(MAX_FIT_ROUNDS):
        n = min(most_units_within(target), max_units, too_long - 1)
        if n < 0 or (best is not None and n <= best.units):
            break
        text = build(n)
        length = tokens.prompt_length(text)
        if length <= budget:
            best = Fitted(text, length, n)
            if budget - length <= FIT_SLACK or n == max_units:
                break
        else:
            too_long = n
        target += budget - length  # move the estimate's budget by the measured error
    n = min(most_units_within(target), too_long - 1)
    while best is None and n >= 0:  # the estimates were far off: walk down from the last guess
        text = build(n)
        length = tokens.prompt_length(text)
        if length <= budget:
            best = Fitted(text, length, n)
        n = n - max(1, n // 8) if n > 0 else -1
    if best is None:
        raise UsageError(f"max_seq_length too small for {what}: the prompt needs more than {budget} tokens "
                         "before any haystack is added; choose a longer length")
    return best


def largest_within(estimate: Callable[[int], int], low: int, high: int, budget: int) -> int:
    """The largest n in [low, high] with estimate(n) <= budget for a non-decreasing estimate; low - 1 if none."""
    if estimate(low) > budget:
        return low - 1
    while low < high:
        middle = (low + high + 1) // 2
        if estimate(middle) <= budget:
            low = middle
        else:
            high = middle - 1
    return low
