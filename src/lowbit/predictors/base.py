"""The predictor interface and its registry (the `predictor=` choice names one; its options: options.py)."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lowbit.errors import UsageError
from lowbit.records import Generation
from lowbit.registry import Registry
from lowbit.sampling import Sampling


@dataclass
class GenerationStats:
    """Totals a predictor accumulates for run.json."""

    prompts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    prompts_over_limit: int = 0  # prompts with no room for a completion: skipped, or left-truncated
    prompt_tokens_truncated: int = 0  # tokens cut from the left of over-long prompts (prompt_overflow=left_truncate)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        def per_second(tokens: int) -> float | None:
            return round(tokens / self.seconds, 2) if self.seconds else None

        return {
            "prompts": self.prompts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "generate_seconds": round(self.seconds, 3),
            "prompt_tokens_per_second": per_second(self.prompt_tokens),
            "completion_tokens_per_second": per_second(self.completion_tokens),
            "prompts_over_limit": self.prompts_over_limit,
            "prompt_tokens_truncated": self.prompt_tokens_truncated,
            **self.extra,
        }


class Predictor(ABC):
    """Turns chat prompts into completions.

    `render` applies the model's chat template; `generate` yields chunks of `(prompt index, generations)` as soon
    as they are done (in any prompt order), so the caller can stream them to disk chunk by chunk.
    """

    name: str

    def __init__(self) -> None:
        self.stats = GenerationStats()

    @abstractmethod
    def render(self, messages: list[dict[str, str]], template_kwargs: dict[str, Any]) -> str:
        """The prompt text the model sees for `messages`."""

    @abstractmethod
    def generate(
        self, prompts: list[str], sampling: Sampling, *, seed: int, keep_special_tokens: bool = False
    ) -> Iterator[list[tuple[int, list[Generation]]]]:
        """`sampling.num_return_sequences` generations per prompt, each within max_sequence_length tokens."""

    def describe(self) -> dict[str, Any]:
        """What run.json records about the backend (device, dtype, versions)."""
        return {"name": self.name}

    def count_tokens(self, text: str) -> int | None:
        """Tokens of `text` in the model's tokenizer, or None when the backend has no local tokenizer."""
        return None

    def check_sampling(self, sampling: Sampling) -> None:
        """Refuse, with a UsageError naming the fix, sampling this backend cannot honour (called before a run
        directory is written)."""

    def close(self) -> None:
        """Release the model."""


class LocalTokenizerPredictor(Predictor):
    """A predictor that holds the model's Hugging Face tokenizer (`self.tokenizer`) and renders prompts itself."""

    tokenizer: Any

    def render(self, messages: list[dict[str, str]], template_kwargs: dict[str, Any]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise UsageError("the tokenizer has no chat template: use an instruct/chat checkpoint "
                             "(or one whose tokenizer_config.json carries chat_template)")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  **template_kwargs)

    def encode(self, prompt: str) -> list[int]:
        # The chat template already placed every special token the model expects.
        return self.tokenizer.encode(prompt, add_special_tokens=False)

    def count_tokens(self, text: str) -> int:
        return len(self.encode(text))


PROMPT_OVERFLOW_POLICIES = ("skip", "left_truncate")


@dataclass
class BudgetedPrompt:
    """A prompt's token ids as they will be sent, and how many new tokens it may generate (0: skipped)."""

    token_ids: list[int]
    budget: int


def budget_prompts(
    encoded: list[list[int]], max_sequence_length: int, *, overflow: str, reserve: int, stats: GenerationStats
) -> list[BudgetedPrompt]:
    """Give each prompt `max_sequence_length - prompt_tokens` new tokens. A prompt that leaves no room is either
    skipped (`skip`: an empty completion with finish_reason "length") or cut from the left to leave `reserve`
    new tokens (`left_truncate`); either way it is counted in `stats`, never silent."""
    if overflow not in PROMPT_OVERFLOW_POLICIES:
        raise UsageError(f"prompt_overflow must be one of {', '.join(PROMPT_OVERFLOW_POLICIES)}, got '{overflow}'")
    if overflow == "left_truncate" and not 0 < reserve < max_sequence_length:
        raise UsageError(f"overflow_reserve_tokens must be between 1 and max_sequence_length - 1, got {reserve}")
    planned = []
    for ids in encoded:
        budget = max_sequence_length - len(ids)
        if budget > 0:
            planned.append(BudgetedPrompt(ids, budget))
            continue
        stats.prompts_over_limit += 1
        if overflow == "skip":
            planned.append(BudgetedPrompt(ids, 0))
        else:
            keep = max_sequence_length - reserve
            stats.prompt_tokens_truncated += len(ids) - keep
            planned.append(BudgetedPrompt(ids[len(ids) - keep:], reserve))
    return planned


def request_seed(seed: int, token_ids: list[int] | list[list[int]]) -> int:
    """A sampling seed from the run seed and the prompt(s) it is for: independent of order, batching and resume."""
    digest = hashlib.sha256(repr((seed, token_ids)).encode()).digest()
    return int.from_bytes(digest[:4], "little") & (2**31 - 1)


def progress_bar(total: int, enabled: bool):
    """The prompts-done progress bar every predictor shows."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="generate", unit="prompt", disable=not enabled, dynamic_ncols=True)


PREDICTORS = Registry("predictor", {
    "vllm": "lowbit.predictors.vllm:VLLMPredictor",
    "transformers": "lowbit.predictors.transformers:TransformersPredictor",
    "openai": "lowbit.predictors.openai:OpenAIPredictor",
})


def predictor_names() -> list[str]:
    return PREDICTORS.names()


def make_predictor(model_name: str, options: dict[str, Any]) -> Predictor:
    """The predictor named by options["name"], built with the other options (its defaults:
    conf/predictor/<name>.yaml, read by the constructor)."""
    options = dict(options)
    return PREDICTORS.get(options.pop("name", None))(model_name, **options)
