"""The chat-format interface and its registry (the `template` key of a sampling block names one)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from lowbit.records import Completion, Generation
from lowbit.registry import Registry


class ChatFormat(ABC):
    """How one model family is prompted and how its completions are read back."""

    name: str
    # Decode completions with special tokens kept, when the reasoning/answer markers are special tokens.
    keep_special_tokens: bool = False

    @abstractmethod
    def template_kwargs(self, sampling: Any) -> dict[str, Any]:
        """Extra arguments for the tokenizer's chat template (e.g. enable_thinking) from a sampling config."""

    @abstractmethod
    def split(self, prompt: str, generation: Generation) -> Completion:
        """Separate reasoning from the answer. A completion that ends inside its reasoning has answer ""."""


CHAT_FORMATS = Registry("chat template", {
    "qwen3": "lowbit.chat.qwen3:Qwen3Chat",
    "gpt_oss": "lowbit.chat.gpt_oss:GptOssChat",
})


def chat_formats() -> list[str]:
    return CHAT_FORMATS.names()


def get_chat_format(name: str) -> ChatFormat:
    return CHAT_FORMATS.get(name)()


def completion_from(generation: Generation, **fields: Any) -> Completion:
    """A Completion that keeps the generation's text, finish reason and token counts."""
    return Completion(
        text=generation.text,
        finish_reason=generation.finish_reason,
        prompt_tokens=generation.prompt_tokens,
        completion_tokens=generation.completion_tokens,
        **fields,
    )


def split_completion(chat: ChatFormat, prompt: str, generation: Generation) -> Completion:
    """The chat format's split, unless the backend already separated the reasoning (then `text` is the answer;
    an empty answer after reasoning that ran out of budget means the completion ended inside its reasoning)."""
    if generation.reasoning is None:
        return chat.split(prompt, generation)
    answer = generation.text.strip()
    ended_in_reasoning = not answer and generation.finish_reason == "length"
    return completion_from(generation, answer=answer, reasoning=generation.reasoning.strip(),
                           ended_in_reasoning=ended_in_reasoning)
