"""RULER task names: the eleven generated tasks, the eval_dataset names built from them, and token lengths."""

from __future__ import annotations

import re

from lowbit.errors import UsageError

NIAH_TASKS = (
    "niah_single_1", "niah_single_2", "niah_single_3", "niah_multikey_1", "niah_multikey_2", "niah_multikey_3",
    "niah_multivalue", "niah_multiquery",
)
TASKS = (*NIAH_TASKS, "vt", "cwe", "fwe")
# eval_dataset stem (between "ruler-" and the length) -> the generated tasks it evaluates
STEMS = {"niah": NIAH_TASKS, **{task.replace("_", "-"): (task,) for task in TASKS}}
PREFIX = "ruler-"
STANDARD_LENGTHS = (4096, 8192, 16384, 32768, 65536, 131072)
HEADLINE_LENGTH = 32768
MIN_LENGTH = 512
# The longest prompt lowbit generates: 8x RULER's longest published length (128k). A tokenizer that states a
# smaller maximum (model_max_length) bounds it further when data is prepared.
MAX_LENGTH = 1024 * 1024
_LENGTH = re.compile(r"^(\d+)([kK]?)$")


def parse_length(text: str | int) -> int:
    """Tokens from "32k" (x 1024) or "32768"; ValueError with the accepted forms otherwise."""
    match = _LENGTH.match(str(text).strip())
    if not match:
        raise ValueError(f"bad length '{text}': use 4k, 8k, 16k, 32k, 64k, 128k or a token count such as 32768")
    value = int(match.group(1)) * (1024 if match.group(2) else 1)
    if value < MIN_LENGTH:
        raise ValueError(f"length {text} is below the minimum of {MIN_LENGTH} tokens")
    if value > MAX_LENGTH:
        raise ValueError(f"length {text} ({value} tokens) is above the maximum of {length_label(MAX_LENGTH)} "
                         f"({MAX_LENGTH} tokens): use 4k ... 128k")
    return value


def length_label(tokens: int) -> str:
    return f"{tokens // 1024}k" if tokens % 1024 == 0 else str(tokens)


def parse_tasks(text: str | list | tuple | None) -> tuple[str, ...]:
    """Generated task names from "vt,cwe", a list, or None/"all" (all eleven), in the canonical order."""
    if text is None or text == "all":
        return TASKS
    items = text if isinstance(text, (list, tuple)) else str(text).split(",")
    wanted = {str(item).strip().replace("-", "_") for item in items if str(item).strip()}
    wanted = {task for item in wanted for task in (NIAH_TASKS if item == "niah" else (item,))}
    unknown = sorted(wanted - set(TASKS))
    if unknown or not wanted:
        raise UsageError(f"unknown RULER task(s) {', '.join(unknown) or '(none given)'}: choose from niah, "
                         f"{', '.join(TASKS)}")
    return tuple(task for task in TASKS if task in wanted)


def eval_name(stem: str, tokens: int) -> str:
    return f"{PREFIX}{stem}-{length_label(tokens)}"


def listed_names() -> list[str]:
    """The names `lowbit eval --list` shows: every task at the headline length (other lengths work the same)."""
    return [eval_name(stem, HEADLINE_LENGTH) for stem in STEMS]


def parse_eval_name(name: str) -> tuple[tuple[str, ...], int]:
    """("ruler-vt-8k") -> (("vt",), 8192); a UsageError naming the valid forms otherwise."""
    stem, _, length = name.removeprefix(PREFIX).rpartition("-")
    if stem not in STEMS:
        raise UsageError(f"unknown eval_dataset '{name}': RULER names are ruler-<task>-<length> with task one of "
                         f"{', '.join(STEMS)} and length 4k..128k (e.g. ruler-niah-single-1-32k)")
    try:
        return STEMS[stem], parse_length(length)
    except ValueError as e:
        raise UsageError(f"eval_dataset '{name}': {e}") from e
