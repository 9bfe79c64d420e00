"""Typed access to one instruction's `kwargs`, with errors that name the instruction and the argument."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# A check answers one question about one response: was the instruction followed?
Check = Callable[[str], bool]

RELATIONS = ("less than", "at least")


def compare(count: int, relation: str, threshold: int) -> bool:
    """`count < threshold` for "less than", `count >= threshold` for "at least" (the paper's two relations)."""
    return count < threshold if relation == "less than" else count >= threshold


class InstructionArgs:
    """The arguments of one instruction. None values are dropped first: the Hugging Face copy of IFEval stores
    every argument name of every instruction type in each kwargs dict, with None for the ones that do not apply."""

    def __init__(self, instruction_id: str, kwargs: dict[str, Any] | None):
        self.instruction_id = instruction_id
        self.values = {k: v for k, v in (kwargs or {}).items() if v is not None}

    def _get(self, name: str) -> Any:
        if name not in self.values:
            raise ValueError(f"{self.instruction_id}: missing argument '{name}' (given: {sorted(self.values)})")
        return self.values[name]

    def integer(self, name: str, minimum: int = 0) -> int:
        value = self._get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) or value < minimum:
            raise ValueError(f"{self.instruction_id}: '{name}' must be an integer >= {minimum}, got {value!r}")
        return int(value)

    def text(self, name: str) -> str:
        value = self._get(name)
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{self.instruction_id}: '{name}' must be a non-empty string, got {value!r}")
        return value

    def texts(self, name: str) -> list[str]:
        value = self._get(name)
        if not isinstance(value, list | tuple) or not value or not all(isinstance(v, str) and v for v in value):
            raise ValueError(f"{self.instruction_id}: '{name}' must be a non-empty list of strings, got {value!r}")
        return list(value)

    def relation(self, name: str) -> str:
        value = self._get(name)
        if value not in RELATIONS:
            raise ValueError(f"{self.instruction_id}: '{name}' must be one of {RELATIONS}, got {value!r}")
        return value
