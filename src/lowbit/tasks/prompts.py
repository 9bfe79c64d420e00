"""Prompt profiles: which chat messages a task sends (`dataset.prompt`).

- `reference` (the default): the messages of the reference Qwen3 / GPT-OSS quantization study, chosen by the
  model family (the sampling block's chat `template`: qwen3 | gpt_oss) and the sampling block's name
  (`eval_dataset_config`, e.g. `livecode_v5` vs `livecode_v5-thinking`), system messages included. Each task
  module holds its table of (family, config pattern) -> message builder; a pattern is matched as a shell-style
  wildcard (`ruler-*`). A sampling block the study did not name for the task (e.g. MMLU-Redux under the
  `math500` block, for thinking mode) gets the family's messages of the task's own block (`mmlu-redux`); a
  family the study never ran the task with is refused with one line naming `dataset.prompt=lowbit`.
- `lowbit`: lowbit's own messages (the prompts of task version 1), the same for every family and config.

A task not bound to a model (building samples in a test, say) uses the context of lowbit's default model:
family `qwen3` and the task's default sampling block. docs/prompts.md lists every profile's messages.

The pieces of the study's prompts live here (the lettered options, the multiple-choice subject hint, its
usual system message), except the LiveCodeBench lighteval prompt, which stays with its task
(lowbit.tasks.livecodebench.prompts).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from lowbit.errors import UsageError

REFERENCE = "reference"
LOWBIT = "lowbit"
PROFILES = (REFERENCE, LOWBIT)
# The chat template of the default model config (conf/config.yaml: qwen3_4B).
DEFAULT_FAMILY = "qwen3"

Messages = list[dict[str, str]]
Builder = Callable[[dict[str, Any]], Messages]

LETTERS = "ABCD"
HELPFUL_ASSISTANT = "You are a helpful assistant."  # the study's Qwen3 system message for most tasks
MMLU_SUBJECT_HINT = ("There is a single choice question about {subject}. Answer the question by replying A, B, C or D "
                     "in the last line of your response following format: 'ANSWER: $LETTER'")


@dataclass(frozen=True)
class PromptContext:
    """What the reference profile picks messages by."""

    family: str  # the sampling block's chat template: qwen3 | gpt_oss
    dataset_config: str  # the sampling block's name (eval_dataset_config)


def lettered_options(choices: list[str]) -> str:
    """One line per choice, `A. choice`, joined with newlines."""
    return "\n".join(f"{letter}. {choice}" for letter, choice in zip(LETTERS, choices))


def mmlu_subject_hint(subject: str) -> str:
    """The study's multiple-choice instruction; `subject` is the config name as is (underscores kept)."""
    return MMLU_SUBJECT_HINT.format(subject=subject)


def chat(user: str, system: str | None = None) -> Messages:
    """A user message, after a system message when there is one."""
    return ([{"role": "system", "content": system}] if system is not None else []) + [{"role": "user", "content": user}]


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise UsageError(f"unknown dataset.prompt '{profile}'; choose one of {', '.join(PROFILES)}")


@dataclass(frozen=True)
class PromptProfiles:
    """A task's message builders: one for `lowbit`, a table for `reference`."""

    task: str
    default_config: str  # the task's own sampling block: its messages serve blocks the table does not name
    lowbit: Builder
    reference: Mapping[tuple[str, str], Builder]  # (family, dataset-config pattern) -> builder

    def builder(self, profile: str, context: PromptContext) -> Builder:
        """The builder of `profile` in `context`; a UsageError when the reference study has none for the family."""
        check_profile(profile)
        if profile == LOWBIT:
            return self.lowbit
        for config in (context.dataset_config, self.default_config):
            for (family, pattern), build in self.reference.items():
                if family == context.family and fnmatch.fnmatchcase(config, pattern):
                    return build
        families = ", ".join(dict.fromkeys(f for f, _ in self.reference))
        raise UsageError(f"the reference study ran {self.task} with {families} only, not with the chat template "
                         f"{context.family}: pass dataset.prompt=lowbit")
