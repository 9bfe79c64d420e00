"""Metrics over n sampled completions per problem: avg@n, unbiased pass@k and majority vote maj@n.

- avg@n: the fraction of a problem's n completions that are correct, averaged over problems. It is also the
  unbiased estimate of pass@1, so a run with n = 8 reports avg@8 and pass@1 with the same value.
- pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code", the Codex paper): the chance
  that at least one of k completions drawn without replacement from the n is correct,
  1 - C(n-c, k) / C(n, k) for c correct completions. "Any of the n is correct" is pass@n, not pass@1.
- maj@n: the problem counts as solved when the most frequent answer among the completions that gave one is
  correct. Ties: the score is the expected value of breaking the tie uniformly at random, i.e. the fraction of
  the tied answers that are correct (answers 7, 7, 9, 9 with gold 9 score 0.5). This does not depend on the
  order of the completions. Completions without an answer do not vote; a problem without any answer scores 0.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence


def pass_at_k(n: int, correct: int, k: int) -> float:
    """Unbiased pass@k from n completions of which `correct` are correct: 1 - C(n-c, k) / C(n, k).

    Computed in exact integer arithmetic, (C(n, k) - C(n-c, k)) / C(n, k), with one correctly rounded division
    at the end: no cancellation and no overflow for any n."""
    if n < 1:
        raise ValueError(f"pass@k needs at least one completion, got n={n}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct completions must be between 0 and n={n}, got {correct}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and n={n}, got {k}")
    total = math.comb(n, k)
    return (total - math.comb(n - correct, k)) / total


def majority_vote_score(answers: Sequence[Hashable | None], correct: Sequence[bool]) -> float:
    """maj@n for one problem: `answers[i]` is completion i's normalised answer (None: it gave none) and
    `correct[i]` whether it was scored correct. Equal answers must have equal correctness."""
    if len(answers) != len(correct):
        raise ValueError(f"{len(answers)} answers but {len(correct)} correctness flags")
    correct_by_answer: dict[Hashable, bool] = {}
    for answer, is_correct in zip(answers, correct):
        if answer is None:
            continue
        if correct_by_answer.setdefault(answer, bool(is_correct)) != bool(is_correct):
            raise ValueError(f"answer {answer!r} is scored both correct and incorrect")
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return 0.0
    top = max(votes.values())
    tied = [answer for answer, count in votes.items() if count == top]
    return sum(correct_by_answer[a] for a in tied) / len(tied)
