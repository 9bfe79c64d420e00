"""RULER's scoring: string_match_all, the share of expected strings found in the answer (case-insensitive
substring match), after RULER's answer clean-up (control characters become newlines, outer whitespace dropped).
An answer that is empty after clean-up is a null (no answer, or a completion cut inside its reasoning).

Metrics: `score`, the mean over samples of their per-sample shares (a fraction; reports show it x 100, RULER's
0-100 scale) with its 95% interval (normal, or Wilson when every share is 0 or 1; a cluster bootstrap with several
completions per sample), `nulls` (empty answers, counted among the completions and scored 0), n, and per task
for a multi-task name such as ruler-niah-32k.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from lowbit.metrics.stats import problem_mean_estimate

_CONTROL = re.compile(r"[\x00-\x1f]")


def clean_answer(answer: str) -> str:
    return _CONTROL.sub("\n", answer.strip()).strip()


def string_match_all(answer: str, expected: list[str]) -> float:
    """Share of `expected` found in `answer` (both lowercased)."""
    text = clean_answer(answer).lower()
    return sum(1.0 for reference in expected if reference.lower() in text) / len(expected)


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    completions_per_sample = max((len(r["scores"]) for r in rows), default=1)
    by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_task[row["task"]].append(row)
    metrics = {
        "score": _estimate(rows, completions_per_sample),
        "nulls": sum(sum(r["null"]) for r in rows),
        "samples": len(rows),
        "completions": sum(len(r["scores"]) for r in rows),
        "truncated_completions": sum(sum(r["truncated"]) for r in rows),
    }
    groups = {}
    if len(by_task) > 1:
        groups["task"] = {task: _estimate(task_rows, completions_per_sample) for task, task_rows in sorted(by_task.items())}
        metrics["nulls_by_task"] = {task: sum(sum(r["null"]) for r in task_rows) for task, task_rows in sorted(by_task.items())}
    return {"metrics": metrics, "groups": groups}


def _estimate(rows: list[dict[str, Any]], completions_per_sample: int) -> dict[str, Any]:
    return problem_mean_estimate([r["score"] for r in rows], completions_per_sample).to_json()
