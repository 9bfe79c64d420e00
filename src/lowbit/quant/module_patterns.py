"""Regexes over module names (`lowbit quantize` targets/ignore, fake-quant quant_targets/quant_ignore):
compiled once, with a ValueError naming the option and the bad entry."""

from __future__ import annotations

import re
from collections.abc import Sequence


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
