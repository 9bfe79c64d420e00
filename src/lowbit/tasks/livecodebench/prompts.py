"""The LiveCodeBench code-generation prompts and the extraction of the program from an answer.

The lighteval prompt (`prompt_text`) is the wording lighteval's `lcb:codegeneration` task and QwQ's v5 evaluation
send as one user message (shared/data/livecodebench/qwq_v5_prompts.jsonl holds 279 real prompts; the conformance
tests rebuild them byte for byte). Profiles (`dataset.prompt`, lowbit.tasks.prompts):
- `lowbit`: the lighteval prompt alone, for every model family.
- `reference` (default), the reference study's messages by family and sampling block: Qwen3 `livecode_v5`
  (non-thinking) the title, the question, the starter code and "Provide only the complete Python code
  solution."; Qwen3 `livecode_v5-thinking` the lighteval prompt after the system message "You are a helpful
  assistant" (no period); GPT-OSS `livecode_v5` the lighteval prompt alone.
The chat template (Qwen3, GPT-OSS harmony) wraps the messages, and the reasoning split happens before extraction.

Extraction: the last fenced code block of the answer text (after the reasoning split) whose info string is
python/py/python3 or empty; None when there is none (scored as a failure to answer, not run).
"""

from __future__ import annotations

import re
from typing import Any

from lowbit.tasks.prompts import PromptProfiles, chat

INSTRUCTION = ("You will be given a question (problem specification) and will generate a correct Python program "
               "that matches the specification and passes all tests.")
WITH_STARTER_CODE = ("You will use the following starter code to write the solution to the problem and enclose your "
                     "code within delimiters.")
WITHOUT_STARTER_CODE = ("Read the inputs from stdin solve the problem and write the answer to stdout (do not directly "
                        "test on the sample inputs). Enclose your code within delimiters as follows. Ensure that when "
                        "the python program runs, it reads the inputs, runs the algorithm and writes output to STDOUT.")


def prompt_text(question_content: str, starter_code: str | None) -> str:
    text = f"{INSTRUCTION}\n\nQuestion: {question_content}\n\n"
    if starter_code:
        return text + f"{WITH_STARTER_CODE}\n```python\n{starter_code}\n```\n\n"
    return text + f"{WITHOUT_STARTER_CODE}\n```python\n# YOUR CODE HERE\n```\n\n"


def lighteval_messages(record: dict[str, Any], system: str | None = None) -> list[dict[str, str]]:
    return chat(prompt_text(record["question_content"], record.get("starter_code")), system=system)


def qwen3_direct_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    """The reference study's Qwen3 non-thinking prompt: title, question, starter code, a request for code only."""
    text = f"{record['question_title']}\n\n{record['question_content']}"
    if record.get("starter_code"):
        text += f"\n\nStarter Code:\n```python\n{record['starter_code']}\n```"
    return chat(text + "\n\nProvide only the complete Python code solution.")


PROMPTS = PromptProfiles("livecode_v5", "livecode_v5", lowbit=lighteval_messages, reference={
    ("qwen3", "livecode_v5"): qwen3_direct_messages,
    ("qwen3", "livecode_v5-thinking"): lambda record: lighteval_messages(record, system="You are a helpful assistant"),
    ("gpt_oss", "livecode_v5"): lighteval_messages,
})


# A fence of three or more backticks, an info string, the body, and a closing fence of the same length.
_FENCE = re.compile(r"^[ \t]*(?P<fence>`{3,})[ \t]*(?P<info>[^\n`]*)\n(?P<body>.*?)^[ \t]*(?P=fence)[ \t]*$",
                    re.MULTILINE | re.DOTALL)
_PYTHON_INFO = {"", "python", "py", "python3"}


def extract_code(answer: str | None) -> str | None:
    """The last fenced python (or unlabelled) block of `answer`, or None."""
    if not answer:
        return None
    blocks = [m.group("body") for m in _FENCE.finditer(answer)
              if m.group("info").strip().split(" ")[0].lower() in _PYTHON_INFO]
    return blocks[-1] if blocks else None
