"""The sampling configuration of one evaluation: a model config's per-dataset block plus command-line overrides."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from lowbit.errors import UsageError


@dataclass(frozen=True)
class Sampling:
    template: str  # chat format (lowbit.chat): qwen3 | gpt_oss
    max_sequence_length: int  # prompt + completion tokens
    enable_thinking: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1 (or 0): no top-k filtering
    presence_penalty: float = 0.0
    do_sample: bool = True  # False: greedy decoding, temperature/top_p/top_k ignored
    num_return_sequences: int = 1
    reasoning_effort: str | None = None  # GPT-OSS only

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_block(cls, block: dict[str, Any], overrides: dict[str, Any], where: str) -> Sampling:
        """Build from a model config block, replacing the keys whose override is not None."""
        unknown = sorted(set(block) - set(cls.keys()))
        if unknown:
            raise UsageError(f"{where}: unknown sampling key(s) {', '.join(unknown)}; valid keys: {', '.join(cls.keys())}")
        values = {**block, **{k: v for k, v in overrides.items() if v is not None}}
        missing = [k for k in ("template", "max_sequence_length") if values.get(k) is None]
        if missing:
            raise UsageError(f"{where}: sampling needs {', '.join(missing)}; set it in the model config or as sampling.<key>=")
        try:
            sampling = cls(**values)
        except TypeError as e:
            raise UsageError(f"{where}: {e}") from e
        sampling.validate(where)
        return sampling

    def validate(self, where: str) -> None:
        problems = []
        if self.max_sequence_length <= 0:
            problems.append("max_sequence_length must be positive")
        if self.temperature < 0:
            problems.append("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            problems.append("top_p must be in (0, 1]")
        if self.num_return_sequences < 1:
            problems.append("num_return_sequences must be >= 1")
        if self.num_return_sequences > 1 and not self.is_random:
            problems.append("num_return_sequences > 1 needs sampling: greedy decoding would repeat one completion "
                            "(set sampling.do_sample=true and a temperature > 0)")
        if self.reasoning_effort not in (None, "low", "medium", "high"):
            problems.append("reasoning_effort must be low, medium or high")
        if problems:
            raise UsageError(f"{where}: " + "; ".join(problems))

    @property
    def is_random(self) -> bool:
        """True when tokens are sampled; temperature 0 means greedy, as in vLLM and OpenAI's API."""
        return self.do_sample and self.temperature > 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
