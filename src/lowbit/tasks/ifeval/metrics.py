"""IFEval's instruction-level accuracy with an interval that respects prompts as the unit of sampling.

Instruction-level accuracy is the fraction of all instructions followed (834 in IFEval, 1 to 3 per prompt).
Instructions of one prompt share one response, so they are not independent: a response that ignores the prompt
tends to miss all of its instructions. A binomial interval over 834 "independent" instructions would be too
narrow. The interval here is a cluster bootstrap: prompts are resampled with replacement (each bringing all its
instructions), the ratio (instructions followed) / (instructions) is recomputed for each resample, and the
2.5th and 97.5th percentiles of those ratios bound the 95% interval. The resampling uses a fixed seed, so the
same scores always give the same interval. `stderr` is the matching closed-form cluster-robust standard error of
the ratio, sqrt(n / (n - 1) * sum_i (f_i - R k_i)^2) / sum_i k_i over n prompts with f_i of k_i instructions
followed and R the overall ratio; with one instruction per prompt it is s/sqrt(n), lowbit's usual stderr.

With several completions per prompt, a prompt's "instructions followed" is the mean over its completions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from lowbit.metrics.stats import Estimate

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


def instruction_level_estimate(followed: Sequence[float], counts: Sequence[int], confidence: float = 0.95,
                               resamples: int = BOOTSTRAP_RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict:
    """Instructions followed over all instructions, given per prompt the (mean) number followed and the number
    of instructions; with a cluster-bootstrap interval over prompts. `n` is the number of instructions,
    `prompts` the number of clusters."""
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError(f"need resamples >= 1 and 0 < confidence < 1, got {resamples} and {confidence}")
    if len(followed) != len(counts):
        raise ValueError(f"{len(followed)} followed totals but {len(counts)} instruction counts")
    followed_arr = np.asarray(followed, dtype=np.float64)
    counts_arr = np.asarray(counts, dtype=np.float64)
    total = int(counts_arr.sum())
    extra = {"prompts": len(counts), "resamples": resamples, "seed": seed}
    if total == 0:
        return {**Estimate(None, 0, None, None, None, "empty", confidence).to_json(), **extra}
    value = float(followed_arr.sum() / total)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(counts), size=(resamples, len(counts)))
    ratios = followed_arr[picks].sum(axis=1) / np.maximum(counts_arr[picks].sum(axis=1), 1.0)
    tail = (1 - confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    n = len(counts)
    residuals = followed_arr - value * counts_arr
    stderr = math.sqrt(n / (n - 1) * float(np.sum(residuals**2))) / total if n > 1 else 0.0
    estimate = Estimate(value, total, stderr, float(low), float(high), "cluster_bootstrap", confidence)
    return {**estimate.to_json(), **extra}
