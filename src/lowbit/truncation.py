"""How long completions were and how close they came to the token limit.

`generation_summary` goes into every run's metrics, so a precision's effect on reasoning length and truncation is
seen beside its accuracy; `truncation_report` is `lowbit score --check-truncation`.
"""

from __future__ import annotations

from typing import Any

from lowbit.records import Prediction

PERCENTILES = (50, 90, 99)


def truncation_report(predictions: list[Prediction], max_sequence_length: int | None) -> dict[str, Any]:
    completions = [c for p in predictions for c in p.completions]
    totals = sorted(c.prompt_tokens + c.completion_tokens for c in completions
                    if c.prompt_tokens is not None and c.completion_tokens is not None)
    report: dict[str, Any] = {
        "completions": len(completions),
        "max_sequence_length": max_sequence_length,
        "with_token_counts": len(totals),
        "finish_length": sum(c.finish_reason == "length" for c in completions),
        "ended_in_reasoning": sum(c.ended_in_reasoning for c in completions),
        "finish_unknown": sum(c.finish_reason is None for c in completions),
    }
    if totals:
        report["total_tokens"] = {f"p{q}": _percentile(totals, q) for q in PERCENTILES} | {"max": totals[-1]}
        if max_sequence_length:
            report["at_limit"] = sum(t >= max_sequence_length for t in totals)
    return report


def generation_summary(predictions: list[Prediction]) -> dict[str, Any]:
    """Shares of completions cut by the length limit or ended inside their reasoning, and token counts
    (mean, median, p95) of whole completions, their reasoning, and their answers."""
    completions = [c for p in predictions for c in p.completions]
    counted = [c for c in completions if c.completion_tokens is not None]
    split = [c for c in counted if c.reasoning_tokens is not None]
    n = len(completions)
    return {
        "completions": n,
        "finish_length_share": _share(sum(c.finish_reason == "length" for c in completions), n),
        "ended_in_reasoning_share": _share(sum(c.ended_in_reasoning for c in completions), n),
        "completion_tokens": _distribution([c.completion_tokens for c in counted]),
        "reasoning_tokens": _distribution([c.reasoning_tokens for c in split]),
        "answer_tokens": _distribution([max(c.completion_tokens - c.reasoning_tokens, 0) for c in split]),
    }


def _share(count: int, total: int) -> float | None:
    return round(count / total, 6) if total else None


def _distribution(values: list[int]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {"mean": round(sum(ordered) / len(ordered), 2), "median": _percentile(ordered, 50),
            "p95": _percentile(ordered, 95), "n": len(ordered)}


def _percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile."""
    rank = max(1, -(-len(sorted_values) * q // 100))
    return sorted_values[int(rank) - 1]


def format_report(report: dict[str, Any]) -> str:
    lines = [f"completions: {report['completions']} (token counts for {report['with_token_counts']})",
             f"max_sequence_length: {report['max_sequence_length']}"]
    if "total_tokens" in report:
        lines.append("prompt+completion tokens: " + ", ".join(f"{k} {v}" for k, v in report["total_tokens"].items()))
    if "at_limit" in report:
        lines.append(f"reached the limit: {report['at_limit']}")
    lines.append(f"finish_reason=length: {report['finish_length']}; ended inside reasoning: "
                 f"{report['ended_in_reasoning']}; finish reason not recorded: {report['finish_unknown']}")
    return "\n".join(lines)
