"""GPT-OSS (harmony format): `reasoning_effort` goes to the chat template; the answer is the `final` channel.

The chat template ends the prompt with `<|start|>assistant`, so a completion decoded with its special tokens
starts inside the header of the assistant's first message and reads like

    <|channel|>analysis<|message|>…reasoning…<|end|><|start|>assistant<|channel|>final<|message|>…answer…<|return|>

A message is `<|start|>{role}[ to={recipient}]<|channel|>{channel}[ to={recipient}][ <|constrain|>{type}]
<|message|>{content}` closed by `<|end|>` (more messages follow), `<|return|>` (the turn is over) or `<|call|>`
(a tool call: the caller runs the tool and answers). Channels: `analysis` (chain of thought), `commentary`
(tool calls, and preambles the model writes before them), `final` (the answer shown to the user).

How lowbit reads a completion. The messages are those of openai-harmony's strict completion parser wherever that
accepts the text (tests/unit/test_gpt_oss_harmony.py checks it): inside a message only a closing token ends it
and any other special token there is content; a header runs up to `<|message|>`.
- The answer is the last `final`-channel message. Nothing else is ever scored: analysis, commentary preambles
  and tool calls (`to=functions.…`, `<|constrain|>json`) go to `reasoning`.
- A completion with no final message never reached its answer (it stopped inside its analysis, or after a tool
  call that nobody answers): answer "", `ended_in_reasoning=True`, so it counts as truncated.
- A final message cut off by the length limit (no closing token) is still the answer; the completion is
  truncated by its finish_reason ("length"). Predictors drop the stop token from the text (`<|return|>`,
  `<|call|>` and `<|endoftext|>` end the generation), so the closing token at the end of the text is optional.
- Where openai-harmony differs or gives up: `<|endoftext|>`, a stop token of GPT-OSS checkpoints, closes a
  message like `<|return|>` (openai-harmony keeps it as content); text between messages that is not a header,
  and a header cut off before `<|message|>`, are skipped (openai-harmony raises).
- A completion of a harmony prompt (transformers, vLLM: the prompt ends with `<|start|>assistant`) is read as
  harmony even without any special token: if it never reaches `<|message|>` it has no answer. When the prompt
  is no harmony transcript (a chat request that an OpenAI-compatible server renders, and whose channels it
  parses), text with no harmony special token is the answer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from lowbit.chat.base import ChatFormat, completion_from
from lowbit.records import Completion, Generation

START, CHANNEL, CONSTRAIN, MESSAGE = "<|start|>", "<|channel|>", "<|constrain|>", "<|message|>"
END, RETURN, CALL, END_OF_TEXT = "<|end|>", "<|return|>", "<|call|>", "<|endoftext|>"
CLOSING = (END, RETURN, CALL, END_OF_TEXT)
GENERATION_PROMPT = START + "assistant"
_TOKEN = re.compile("|".join(re.escape(t) for t in (START, CHANNEL, CONSTRAIN, MESSAGE, *CLOSING)))
_CLOSING_TOKEN = re.compile("|".join(re.escape(t) for t in CLOSING))
_RECIPIENT = re.compile(r"(?:^|\s)to=(\S+)")
REASONING_SEPARATOR = "\n\n"


@dataclass
class HarmonyMessage:
    """One message of a completion: its header fields, its content, and the token that closed it (None when the
    text ended inside the message)."""

    role: str
    channel: str | None
    recipient: str | None
    content_type: str | None
    content: str
    closed_by: str | None


def parse_harmony(text: str, opened_by_prompt: str = GENERATION_PROMPT) -> list[HarmonyMessage]:
    """The messages of a harmony completion, in order; never raises. `opened_by_prompt` is the part of the
    prompt that the completion continues: from its last `<|start|>` on when the prompt ends inside a message
    header (the generation prompt `<|start|>assistant`), "" when it does not. A header runs up to `<|message|>`
    whatever comes before it, and one that never reaches it yields no message."""
    text = opened_by_prompt + text
    messages: list[HarmonyMessage] = []
    header = _Header()
    content: list[str] | None = None  # None while reading a header
    position = 0
    for match in _TOKEN.finditer(text):
        piece, token = text[position:match.start()], match.group()
        position = match.end()
        if content is not None:  # inside a message: only a closing token ends it
            content.append(piece)
            if token in CLOSING:
                messages.append(header.message("".join(content), closed_by=token))
                header, content = _Header(), None
            else:
                content.append(token)
        elif token == MESSAGE:
            header.add(piece)
            content = []
        else:
            header.add(piece)
            header.begin(token)
    if content is not None:
        messages.append(header.message("".join(content) + text[position:], closed_by=None))
    return messages


def open_message_of(prompt: str) -> str:
    """The end of a harmony prompt from its last `<|start|>` on, when no closing token follows it (the
    completion continues that message); "" for any other prompt (e.g. a chat request an API server renders)."""
    start = prompt.rfind(START)
    if start < 0 or _CLOSING_TOKEN.search(prompt, start):
        return ""
    return prompt[start:]


class _Header:
    """The header of one message, read field by field as its special tokens announce them: the author after
    `<|start|>`, the channel after `<|channel|>`, the content type after `<|constrain|>`. As in openai-harmony, a
    field announced twice keeps its first value, and text after any other token (text between messages, a stray
    closing token) belongs to no field."""

    def __init__(self):
        self.fields: dict[str, str | None] = {START: None, CHANNEL: None, CONSTRAIN: None}
        self.current: str | None = None
        self.pieces: list[str] = []  # all of the header's text, where the recipient is looked for

    def begin(self, token: str) -> None:
        if token in self.fields and self.fields[token] is None:
            self.fields[token] = ""
            self.current = token
        else:
            self.current = None

    def add(self, text: str) -> None:
        self.pieces.append(text)
        if self.current is not None:
            self.fields[self.current] += text

    def message(self, content: str, closed_by: str | None) -> HarmonyMessage:
        author, channel_text = self.fields[START] or "", self.fields[CHANNEL] or ""
        recipient = _RECIPIENT.search(" ".join(self.pieces))
        channel_words = _RECIPIENT.sub(" ", channel_text).split()
        constrained = (self.fields[CONSTRAIN] or "").strip()
        return HarmonyMessage(
            role=_RECIPIENT.sub(" ", author).strip() or "assistant",
            channel=channel_words[0] if channel_words else None,
            recipient=recipient.group(1) if recipient else None,
            content_type=constrained or " ".join(channel_words[1:]) or None,
            content=content,
            closed_by=closed_by,
        )


class GptOssChat(ChatFormat):
    name = "gpt_oss"
    keep_special_tokens = True

    def template_kwargs(self, sampling: Any) -> dict[str, Any]:
        return {"reasoning_effort": sampling.reasoning_effort or "medium"}

    def split(self, prompt: str, generation: Generation) -> Completion:
        text, opened = generation.text, open_message_of(prompt)
        if not opened and not _TOKEN.search(text):
            return completion_from(generation, answer=text.strip(), reasoning=None)
        messages = parse_harmony(text, opened)
        finals = [m for m in messages if m.channel == "final"]
        others = [m.content.strip() for m in messages if m.channel != "final" and m.content.strip()]
        reasoning = REASONING_SEPARATOR.join(others) or None
        if not finals:
            return completion_from(generation, answer="", reasoning=reasoning, ended_in_reasoning=True)
        return completion_from(generation, answer=finals[-1].content.strip(), reasoning=reasoning)
