"""Comparisons between runs: `lowbit compare` (compare.py), pairing of runs and samples (pairing.py), paired
statistics (paired_stats.py), per-group breakdowns (breakdown.py), bits per weight (bits.py), and output: the
terminal table, markdown, CSV and JSON (render.py) and the HTML report (html.py) with its plots (plots.py)."""

from lowbit.report.compare import compare_main, compare_runs, split_compare_arguments

__all__ = ["compare_main", "compare_runs", "split_compare_arguments"]
