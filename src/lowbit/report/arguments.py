"""The arguments of `lowbit compare`: run directories or globs, and key=value options among them.

    lowbit compare 'outputs/qwen3_4B_*' baseline=bf16 margin=1.0 out=reports/qwen3_4B format=[markdown,html]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lowbit.overrides import parse_options

OPTIONS: dict[str, Any] = {
    "baseline": str,  # precision label or run directory (default bf16)
    "margin": float,  # non-inferiority margin in percentage points (default 1.0)
    "out": str,  # directory for the comparison files
    "format": str | list[str],  # which files: markdown, csv, json, html (default all four)
}


def split_compare_arguments(items: list[str]) -> tuple[list[str], dict[str, Any]]:
    """(run paths, {option: typed value}). An item is an option when it reads key=value with a key that is no
    path (no "/") and it does not exist on disk; an unknown key, a malformed item or a wrong type is a
    UsageError naming it."""
    paths, options = [], []
    for item in items:
        key, sep, _ = item.partition("=")
        if sep and "/" not in key and not Path(item).exists():
            options.append(item)
        else:
            paths.append(item)
    values = parse_options(options, OPTIONS, "compare")
    if isinstance(values.get("format"), str):
        values["format"] = [values["format"]]
    return paths, values
