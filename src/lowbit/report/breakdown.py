"""Paired differences within each group of samples (MMLU-Redux subjects, MATH-500 subjects and levels, ...).

A breakdown is computed for every grouping that both runs carry (see `pairing.RunSummary.groupings`), on the
paired samples of each group, with the same statistics as the whole comparison (`paired_stats.compare_paired`):
the difference with its 95% interval (`paired_intervals.py`) and the test of no difference. The groups hold few
samples (100 per MMLU-Redux subject), so their intervals are wide, and with 57 subjects about three groups
show p < 0.05 by chance alone: the p-values are not adjusted for the number of groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lowbit.report.paired_stats import compare_paired
from lowbit.report.pairing import Pairing, RunSummary


@dataclass(frozen=True)
class GroupDelta:
    """One group's paired comparison; means and differences are fractions (candidate - baseline)."""

    value: str  # the group, e.g. "anatomy" or "3"
    n: int
    baseline_mean: float
    candidate_mean: float
    difference: float
    difference_low: float
    difference_high: float
    p_value: float
    test: str


def group_deltas(pairing: Pairing, baseline: RunSummary, candidate: RunSummary,
                 margin_points: float) -> dict[str, list[GroupDelta]]:
    """grouping -> one GroupDelta per group value, in natural order (numbers by value, names alphabetically).
    A sample's group is the baseline's; a grouping either run lacks is skipped."""
    breakdowns: dict[str, list[GroupDelta]] = {}
    for grouping, values in baseline.groupings.items():
        if grouping not in candidate.groupings:
            continue
        labels = np.array([values.get(i, "") for i in pairing.ids])
        deltas = []
        for value in sorted(set(labels) - {""}, key=_natural_key):
            mask = labels == value
            result = compare_paired(pairing.baseline[mask], pairing.candidate[mask], margin_points)
            deltas.append(GroupDelta(value=value, n=result.n, baseline_mean=result.baseline_mean,
                                     candidate_mean=result.candidate_mean, difference=result.difference,
                                     difference_low=result.difference_low, difference_high=result.difference_high,
                                     p_value=result.p_value, test=result.test))
        if deltas:
            breakdowns[grouping] = deltas
    return breakdowns


def _natural_key(value: str) -> tuple[int, float, str]:
    try:
        return 0, float(value), ""
    except ValueError:
        return 1, 0.0, value
