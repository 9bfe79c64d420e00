"""GPT-OSS (harmony format): `reasoning_effort` goes to the chat template; the answer is the `final` channel.

A completion, decoded with its special tokens, reads like
`<|channel|>analysis<|message|>…<|end|><|start|>assistant<|channel|>final<|message|>…<|return|>`.
Reasoning is the analysis channel; the answer is the last final-channel message. A completion with no final
message never reached its answer: it has answer "" and counts as truncated. Text with no harmony markers at
all (a server that already parsed the channels) is taken as the answer.
"""

from __future__ import annotations

import re
from typing import Any

from lowbit.chat.base import ChatFormat, completion_from, register
from lowbit.records import Completion, Generation

_MESSAGE = re.compile(
    r"<\|channel\|>(?P<channel>\w+)[^<]*<\|message\|>(?P<content>.*?)(?=<\|end\|>|<\|return\|>|<\|call\|>|<\|start\|>|\Z)",
    re.DOTALL,
)


@register
class GptOssChat(ChatFormat):
    name = "gpt_oss"
    keep_special_tokens = True

    def template_kwargs(self, sampling: Any) -> dict[str, Any]:
        return {"reasoning_effort": sampling.reasoning_effort or "medium"}

    def split(self, prompt: str, generation: Generation) -> Completion:
        messages = [(m["channel"], m["content"]) for m in _MESSAGE.finditer(generation.text)]
        if not messages and "<|" not in generation.text:
            return completion_from(generation, answer=generation.text.strip(), reasoning=None)
        reasoning = "\n".join(c.strip() for ch, c in messages if ch != "final") or None
        finals = [c for ch, c in messages if ch == "final"]
        if not finals:
            return completion_from(generation, answer="", reasoning=reasoning, ended_in_reasoning=True)
        return completion_from(generation, answer=finals[-1].strip(), reasoning=reasoning)
