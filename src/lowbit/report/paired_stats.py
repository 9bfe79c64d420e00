"""Paired statistics between a baseline run and a candidate run scored on the same samples.

Both runs give one score per sample (a sample's score is already the mean over its completions, so avg@n is
handled by the same code as plain accuracy); pairing by sample id gives differences d_i = candidate_i - baseline_i.
Pairing removes the between-question variance that dominates unpaired intervals: on MMLU-Redux two precisions
agree on most questions, and only the questions that flip carry information about the difference.

What is reported (all seeded: the same inputs always give the same numbers):

- **Difference** mean(d) with a 95% interval that keeps its coverage at small n and never shrinks to a point
  (`paired_intervals.py`): Tango's score interval when every score is 0 or 1, an adjusted normal interval
  otherwise (avg@n, partial credit). Example: 2,000 pairs with 150 right->wrong and 50 wrong->right flips:
  d = -100/2000 = -5 points, per-pair variance (200/2000) - 0.05^2 = 0.0975, standard error
  sqrt(0.0975/2000) = 0.70 points, so the interval is about [-6.4, -3.6] points (Tango: [-6.41, -3.66]). Eight
  pairs that all agree give [-32.4, +32.4] points: eight answers cannot show that two precisions are equal.
- **Recovery** mean(candidate) / mean(baseline); its interval is the difference's interval over the baseline's
  mean (1 + low / baseline, 1 + high / baseline).
- **Test of "no difference"** (two-sided):
  - per-sample scores all 0/1 (one completion, pass/fail): McNemar's exact test. Of the b right->wrong and c
    wrong->right pairs, under the null each discordant pair is equally likely to go either way, so
    b ~ Binomial(b + c, 1/2) and p = min(1, 2 P(X <= min(b, c))). Example: b = 10, c = 2 gives
    p = 2 (1 + 12 + 66) / 2^12 = 0.0386. Computed with exact integers, so tiny p-values do not round to nonsense.
  - otherwise (avg@n, partial credit): a paired sign-flip permutation test. Under the null the two scores of a
    sample are exchangeable, so each d_i is as likely to be -d_i; the statistic |mean(d)| is compared with its
    distribution under random sign flips, p = (1 + #{|flipped| >= |observed|}) / (1 + flips) with 10,000 flips,
    or the exact distribution over all 2^m sign vectors when at most 16 differences are non-zero.
  A comparison is flagged significant when p < 0.05. p-values are per comparison, not adjusted for the number
  of precisions compared.
- **Non-inferiority** at a margin of M points: the candidate is "within M points of the baseline at 95%
  confidence" when the lower end of the difference's 95% interval is above -M. Using the two-sided interval's
  lower end makes this a one-sided test at level 2.5%, the usual convention for non-inferiority. In the example
  above the lower end is -6.4, so the candidate is not within 1 point.
- **Floor**: when both runs score at or below the task's chance level (25% on four-choice questions, 0 where
  answers are free-form), the comparison has no verdict (`at_floor`): neither a drop nor an equivalence can be
  read from two runs that know nothing.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np

from lowbit.report.paired_intervals import adjusted_interval, tango_interval

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05
RESAMPLES = 10_000  # sign flips of the permutation test
SEED = 20_251_126
EXACT_SIGN_FLIP_LIMIT = 16  # up to 2^16 sign vectors are enumerated instead of sampled
_CHUNK_CELLS = 4_000_000  # random signs drawn at once: bounds memory


@dataclass(frozen=True)
class PairedResult:
    """A candidate against its baseline on n paired samples. Differences are candidate - baseline, as fractions."""

    n: int
    baseline_mean: float
    candidate_mean: float
    difference: float
    difference_low: float
    difference_high: float
    recovery: float | None  # candidate_mean / baseline_mean; None when the baseline scores 0
    recovery_low: float | None
    recovery_high: float | None
    interval: str  # "tango_score" | "adjusted_normal"
    test: str  # "mcnemar_exact" | "sign_flip_permutation"
    p_value: float
    right_to_wrong: int  # samples whose score dropped (0/1 scores: right -> wrong)
    wrong_to_right: int  # samples whose score rose
    margin_points: float
    non_inferior: bool  # difference_low > -margin
    significant: bool  # p_value < SIGNIFICANCE
    chance: float = 0.0  # the task's chance-level score
    at_floor: bool = False  # both means at or below chance: no verdict

    def to_json(self) -> dict:
        return asdict(self)


def compare_paired(baseline: np.ndarray, candidate: np.ndarray, margin_points: float, *,
                   chance: float = 0.0, resamples: int = RESAMPLES, seed: int = SEED) -> PairedResult:
    """All paired statistics of one candidate against its baseline (arrays aligned by sample).

    `chance` is the score a model that knows nothing gets (e.g. 0.25 on four-choice questions)."""
    baseline = np.asarray(baseline, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if baseline.shape != candidate.shape or baseline.ndim != 1 or baseline.size == 0:
        raise ValueError(f"need two equal-length, non-empty 1-D score arrays, got shapes {baseline.shape} "
                         f"and {candidate.shape}")
    differences = candidate - baseline
    worse, better = int((differences < 0).sum()), int((differences > 0).sum())
    binary = is_binary(baseline) and is_binary(candidate)
    if binary:
        interval, (low, high) = "tango_score", tango_interval(baseline.size, worse, better, CONFIDENCE)
        test, p_value = "mcnemar_exact", mcnemar_exact(worse, better)
    else:
        interval, (low, high) = "adjusted_normal", adjusted_interval(differences, CONFIDENCE)
        test, p_value = "sign_flip_permutation", sign_flip_test(differences, resamples=resamples, seed=seed)
    base_mean, cand_mean = float(baseline.mean()), float(candidate.mean())
    recovery = recovery_low = recovery_high = None
    if base_mean > 0:
        recovery, recovery_low, recovery_high = cand_mean / base_mean, 1 + low / base_mean, 1 + high / base_mean
    return PairedResult(
        n=int(baseline.size), baseline_mean=base_mean, candidate_mean=cand_mean,
        difference=cand_mean - base_mean, difference_low=low, difference_high=high,
        recovery=recovery, recovery_low=recovery_low, recovery_high=recovery_high,
        interval=interval, test=test, p_value=p_value, right_to_wrong=worse, wrong_to_right=better,
        margin_points=margin_points, non_inferior=bool(low > -margin_points / 100), significant=p_value < SIGNIFICANCE,
        chance=chance, at_floor=bool(max(base_mean, cand_mean) <= chance),
    )


def is_binary(scores: np.ndarray) -> bool:
    return bool(np.isin(scores, (0.0, 1.0)).all())


# -------------------------------------------------------------------------------------------- tests


def mcnemar_exact(right_to_wrong: int, wrong_to_right: int) -> float:
    """Two-sided exact McNemar p-value: 2 P(X <= min(b, c)) for X ~ Binomial(b + c, 1/2), capped at 1.

    Exact integer arithmetic (Python's int / int division is correctly rounded), so it holds for any counts."""
    if right_to_wrong < 0 or wrong_to_right < 0:
        raise ValueError("discordant pair counts must be non-negative")
    discordant = right_to_wrong + wrong_to_right
    if discordant == 0:
        return 1.0
    smaller = min(right_to_wrong, wrong_to_right)
    tail = sum(math.comb(discordant, k) for k in range(smaller + 1))
    return min(1.0, 2 * tail / 2**discordant)


def sign_flip_test(differences: np.ndarray, *, resamples: int = RESAMPLES, seed: int = SEED) -> float:
    """Two-sided paired permutation test of mean(differences) = 0 by random sign flips (exact when few are
    non-zero). Zero differences are unchanged by a flip, so only the non-zero ones are permuted."""
    nonzero = np.asarray(differences, dtype=np.float64)
    nonzero = nonzero[nonzero != 0]
    m = nonzero.size
    if m == 0:
        return 1.0
    observed = abs(nonzero.sum())
    tolerance = 1e-9 * max(1.0, float(np.abs(nonzero).sum()))  # equal sums must count as "as extreme"
    if m <= EXACT_SIGN_FLIP_LIMIT:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=m)))
        return float((np.abs(signs @ nonzero) >= observed - tolerance).mean())
    rng = np.random.default_rng(seed)
    extreme = 0
    chunk = max(1, _CHUNK_CELLS // m)
    for start in range(0, resamples, chunk):
        rows = min(chunk, resamples - start)
        signs = rng.integers(0, 2, size=(rows, m)) * 2.0 - 1.0
        extreme += int((np.abs(signs @ nonzero) >= observed - tolerance).sum())
    return (1 + extreme) / (1 + resamples)
