"""How close a run's completions came to the token limit (`lowbit score --check-truncation`)."""

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
