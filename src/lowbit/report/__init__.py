"""Comparisons between runs: `lowbit compare` (compare.py), pairing of runs and samples (pairing.py), paired
statistics (paired_stats.py) and output formats (render.py)."""

from lowbit.report.compare import compare_main, compare_runs, split_compare_arguments

__all__ = ["compare_main", "compare_runs", "split_compare_arguments"]
