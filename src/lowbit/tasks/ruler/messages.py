"""The chat messages of a RULER sample under each prompt profile, and the frame its prompt is fitted in.

The generated prompt is the user message; the reference profile puts Qwen3's system message before it. The
messages before the user message (the preamble) are part of what the model reads, so prompts are fitted with
them rendered: data is fitted for one frame (profile and preamble), recorded in its manifest, and used only
under that frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lowbit.errors import UsageError
from lowbit.tasks.prompts import HELPFUL_ASSISTANT, LOWBIT, REFERENCE, PromptContext, PromptProfiles, chat

DEFAULT_CONFIG = "ruler-32k"
PROMPTS = PromptProfiles("RULER", DEFAULT_CONFIG, lowbit=lambda record: chat(record["input"]), reference={
    ("qwen3", "ruler-*"): lambda record: chat(record["input"], system=HELPFUL_ASSISTANT),
    ("gpt_oss", "ruler-*"): lambda record: chat(record["input"]),
})


@dataclass(frozen=True)
class PromptFrame:
    """The prompt profile, the model family it picked messages for, and the messages sent before the prompt."""

    profile: str
    family: str
    preamble: tuple[tuple[str, str], ...]  # (role, content) of each message before the user message

    @classmethod
    def of(cls, profile: str, context: PromptContext) -> PromptFrame:
        """The frame of `profile` in `context` (a UsageError when the profile has no messages for the family)."""
        probe = "\0"
        messages = PROMPTS.builder(profile, context)({"input": probe})
        if messages[-1] != {"role": "user", "content": probe}:
            raise ValueError("a RULER message builder must end with the prompt as the user message")
        return cls(profile, context.family, tuple((m["role"], m["content"]) for m in messages[:-1]))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PromptFrame:
        return cls(data["profile"], data["family"], tuple((m["role"], m["content"]) for m in data["preamble"]))

    def to_json(self) -> dict[str, Any]:
        return {"profile": self.profile, "family": self.family, "preamble": self.preamble_messages()}

    def preamble_messages(self) -> list[dict[str, str]]:
        return [{"role": role, "content": content} for role, content in self.preamble]

    def fits(self, other: PromptFrame) -> bool:
        """Whether data fitted in `other` serves this frame: the same profile and the same preamble (the family
        alone does not matter where it picks the same messages)."""
        return (self.profile, self.preamble) == (other.profile, other.preamble)

    @property
    def key(self) -> str:
        """Names the frame in a cache folder: the profile, and the family where the profile depends on it."""
        return self.profile if self.profile == LOWBIT else f"{self.profile}-{self.family}"

    def describe(self) -> str:
        """e.g. "dataset.prompt=reference for qwen3 (system message 'You are a helpful assistant.')"."""
        where = f" for {self.family}" if self.profile == REFERENCE else ""
        before = ", ".join(f"{role} message {content!r}" for role, content in self.preamble) or "no system message"
        return f"dataset.prompt={self.profile}{where} ({before})"


def check_frame(frame: PromptFrame, fitted: PromptFrame, where: str) -> None:
    """Refuse data fitted in another frame, naming both and the fix."""
    if frame.fits(fitted):
        return
    other = f", or pass dataset.prompt={fitted.profile}" if fitted.profile != frame.profile else ""
    raise UsageError(f"{where} holds prompts fitted for {fitted.describe()}, but this run sends {frame.describe()}: "
                     f"prepare data with prompt={frame.profile} family={frame.family}{other}")
