"""Qwen3: `enable_thinking` goes to the chat template; reasoning is the text up to the first `</think>`.

With thinking on, Qwen3 opens its answer with `<think>` (Qwen3-*-Thinking-2507 templates put `<think>` in the
prompt instead); with thinking off, the template closes an empty think block in the prompt and the completion
is the answer. A completion that never closes its think block has no answer: it is truncated, and its reasoning
is never scored.
"""

from __future__ import annotations

from typing import Any

from lowbit.chat.base import ChatFormat, completion_from
from lowbit.records import Completion, Generation

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


class Qwen3Chat(ChatFormat):
    name = "qwen3"

    def template_kwargs(self, sampling: Any) -> dict[str, Any]:
        return {"enable_thinking": bool(sampling.enable_thinking)}

    def split(self, prompt: str, generation: Generation) -> Completion:
        text = generation.text
        opened_in_prompt = prompt.rstrip().endswith(THINK_OPEN)
        stripped = text.lstrip()
        if THINK_CLOSE in text:
            reasoning, _, answer = text.partition(THINK_CLOSE)
            reasoning = reasoning.lstrip().removeprefix(THINK_OPEN)
            return completion_from(generation, answer=answer.strip(), reasoning=reasoning.strip())
        if opened_in_prompt or stripped.startswith(THINK_OPEN):
            reasoning = stripped.removeprefix(THINK_OPEN).strip()
            return completion_from(generation, answer="", reasoning=reasoning, ended_in_reasoning=True)
        return completion_from(generation, answer=text.strip(), reasoning=None)
