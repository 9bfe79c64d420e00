"""Regexes over module names (`lowbit quantize` targets/ignore, fake-quant quant_targets/quant_ignore):
compiled once, with a ValueError naming the option and the bad entry; and the modules no default quantizes."""

from __future__ import annotations

import re
from collections.abc import Sequence

# Modules every quantization path leaves exact unless told otherwise: the output head and the MoE routers (Qwen3-MoE
# `mlp.gate`, GPT-OSS `router`) and shared-expert gates. Written as compressed-tensors and vLLM read "re:" patterns,
# matched from the start of the name (re.match); `searchable` turns them into re.search patterns.
NEVER_QUANTIZED = (r"(.*\.)?lm_head$", r".*mlp\.gate$", r".*router$", r".*shared_expert_gate$")


def searchable(patterns: Sequence[str]) -> tuple[str, ...]:
    """re.match patterns as re.search patterns that match the same names."""
    return tuple(f"^(?:{p})" for p in patterns)


def compile_patterns(patterns: Sequence[str], what: str) -> list[re.Pattern]:
    if isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"{what} must be a list of regular expressions, got {patterns!r}")
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as e:
            raise ValueError(f"{what} entry {pattern!r} is not a valid regular expression ({e})") from e
    return compiled
