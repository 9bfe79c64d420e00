"""The predictor interface and its registry (the `predictor=` choice names one)."""

from __future__ import annotations

import importlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lowbit.errors import UsageError
from lowbit.records import Generation
from lowbit.sampling import Sampling


@dataclass
class GenerationStats:
    """Totals a predictor accumulates for run.json."""

    prompts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    prompts_over_limit: int = 0  # prompts with no room left for a completion within max_sequence_length
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        throughput = self.completion_tokens / self.seconds if self.seconds else None
        return {
            "prompts": self.prompts,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "generate_seconds": round(self.seconds, 3),
            "completion_tokens_per_second": round(throughput, 2) if throughput else None,
            "prompts_over_limit": self.prompts_over_limit,
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

    def close(self) -> None:
        """Release the model."""


_PREDICTORS = {
    "transformers": "lowbit.predictors.transformers:TransformersPredictor",
}


def predictor_names() -> list[str]:
    return sorted(_PREDICTORS)


def make_predictor(model_name: str, options: dict[str, Any]) -> Predictor:
    options = dict(options)
    name = options.pop("name", None)
    if name not in _PREDICTORS:
        raise UsageError(f"unknown predictor '{name}': choose one of {', '.join(predictor_names())}")
    module, _, cls_name = _PREDICTORS[name].partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    valid = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "model_name")]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UsageError(f"unknown predictor_conf key(s) {', '.join(unknown)} for {name}; valid: {', '.join(valid)}")
    return cls(model_name, **options)
