"""Comparisons between runs: `lowbit compare` (compare.py) and its result model (comparison.py), pairing of runs
and samples (pairing.py), paired statistics (paired_stats.py), per-group breakdowns (breakdown.py), bits per weight
(bits.py), and output: the terminal table, markdown, CSV and JSON (render.py) and the HTML report (html.py) with
its plots (plots.py).

The entry points below are loaded on first use, so that importing a presentation module (render, html, plots)
loads the result model only, not run loading and statistics.
"""

from typing import Any

__all__ = ["compare_main", "compare_runs", "split_compare_arguments"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from lowbit.report import compare

        return getattr(compare, name)
    raise AttributeError(f"module 'lowbit.report' has no attribute '{name}'")
