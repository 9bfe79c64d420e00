"""The result of `lowbit compare`: per group of runs, one row per run against the group's baseline.

`lowbit.report.compare` builds it; `render.py`, `html.py` and `plots.py` present it. Scores and interval ends are
fractions (0..1); changes of a share are in percentage points and drifts of a length in percent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types of fields only: the model imports no statistics or run loading
    from lowbit.report.breakdown import GroupDelta
    from lowbit.report.paired_stats import PairedResult


@dataclass
class ComparisonRow:
    run: str
    precision: str
    is_baseline: bool
    metric: dict[str, Any]  # the headline metric's Estimate, as the run's metrics hold it
    paired: PairedResult | None = None
    paired_samples: int | None = None
    only_in_baseline: int = 0
    only_in_candidate: int = 0
    excluded_on_one_side: int = 0
    truncation_share: float | None = None  # completions with finish_reason length
    truncation_change_points: float | None = None
    ended_in_reasoning_share: float | None = None
    ended_in_reasoning_change_points: float | None = None
    reasoning_tokens_mean: float | None = None
    reasoning_tokens_median: float | None = None
    reasoning_mean_drift_percent: float | None = None
    reasoning_median_drift_percent: float | None = None
    completion_tokens_mean: float | None = None
    completion_mean_drift_percent: float | None = None
    tokens_per_second: float | None = None
    throughput_ratio: float | None = None
    bits_per_weight: float | None = None  # None: unknown precision (see bits.py)
    bits_source: str = ""
    emulation: str = ""  # e.g. "weights nvfp4, activations nvfp4 emulated on 196 Linear layers"; "" for none
    verdict: str = ""
    notes: list[str] = field(default_factory=list)
    breakdowns: dict[str, list[GroupDelta]] = field(default_factory=dict)  # grouping -> per-group differences
    # token-level fidelity of this model and precision from a `lowbit divergence` run among the inputs:
    # kl_mean, same_top_rate, ppl_ratio, top_prob_change_rms (Estimates' JSON), kl_p99, run, source, tokens
    divergence: dict[str, Any] | None = None


@dataclass
class GroupComparison:
    family: str  # the name of the model the group's runs evaluated (evaluated_model.py)
    task: str
    prompt_options: dict[str, Any]
    metric: str
    baseline: str
    rows: list[ComparisonRow]


@dataclass
class Comparison:
    margin_points: float
    groups: list[GroupComparison]
    refused: list[tuple[str, str]]  # (run, why it was not compared)
    # run -> reasoning tokens of each of its completions (for the plots; not written to the JSON/CSV files)
    reasoning_tokens: dict[str, list[int]] = field(default_factory=dict, repr=False)
