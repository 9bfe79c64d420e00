"""A comparison as markdown, CSV, JSON and a self-contained HTML report (html.py); the cells, titles, notes and legend
that the terminal tables (terminal.py) share with them.

Scores, differences and interval ends are shown in percentage points (a fraction x 100); JSON keeps the
fractions that the statistics produced, plus the settings needed to reproduce them (resamples, seed, margin),
and the per-group breakdowns.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lowbit.records import write_json_atomic, write_text_atomic
from lowbit.report.comparison import Comparison, ComparisonRow, GroupComparison
from lowbit.report.paired_stats import CONFIDENCE, RESAMPLES, SEED, SIGNIFICANCE

FILE_FORMATS = ("markdown", "csv", "json", "html")
FILE_NAMES = {"markdown": "comparison.md", "csv": "comparison.csv", "json": "comparison.json",
              "html": "comparison.html"}
TEST_NAMES = {"mcnemar_exact": "McNemar", "sign_flip_permutation": "sign-flip"}
HEADERS = ("precision", "run", "score [95% CI]", "recovery", "diff pts [95% CI]", "p (test)", "flips -/+",
           "verdict", "trunc chg", "reasoning chg", "tok/s")
# shown when a `lowbit divergence` run of the same model and precision was among the inputs
DIVERGENCE_HEADERS = ("KL nats [95% CI]", "same top", "PPL ratio")


def write_outputs(comparison: Comparison, out_dir: Path, formats: list[str]) -> list[Path]:
    """Render every requested format first, then write each file atomically: a failure leaves no file."""
    contents = {name: render_file(comparison, name) for name in formats}
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in contents.items():
        path = out_dir / FILE_NAMES[name]
        if name == "json":
            write_json_atomic(path, content)
        else:
            write_text_atomic(path, content)
        written.append(path)
    return written


def render_file(comparison: Comparison, name: str) -> Any:
    if name == "html":
        from lowbit.report.html import render_html

        return render_html(comparison)
    renderers = {"markdown": render_markdown, "csv": render_csv, "json": to_json}
    return renderers[name](comparison)


# ------------------------------------------------------------------------------------------- cells


def _percent(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{100 * value:.{digits}f}"


def _signed(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:+.{digits}f}{suffix}"


def _p_value(p: float) -> str:
    return f"{p:.1e}" if p < 1e-4 else f"{p:.4f}".rstrip("0").rstrip(".") if p < 1 else "1"


def cells(row: ComparisonRow) -> list[str]:
    metric = row.metric
    score = _percent(metric.get("value"))
    if metric.get("ci_low") is not None and metric.get("ci_high") is not None:
        score += f" [{_percent(metric['ci_low'])}, {_percent(metric['ci_high'])}]"
    throughput = "-" if row.tokens_per_second is None else f"{row.tokens_per_second:.1f}"
    if row.throughput_ratio is not None:
        throughput += f" (x{row.throughput_ratio:.2f})"
    paired = row.paired
    if paired is None:
        paired_cells = ["100.0%", "-", "-", "-"]
    else:
        recovery = "-" if paired.recovery is None else f"{100 * paired.recovery:.1f}%"
        difference = (f"{100 * paired.difference:+.2f} [{100 * paired.difference_low:+.2f}, "
                      f"{100 * paired.difference_high:+.2f}]")
        p_value = f"{_p_value(paired.p_value)} ({TEST_NAMES[paired.test]})" + (" *" if paired.significant else "")
        paired_cells = [recovery, difference, p_value, f"{paired.right_to_wrong}/{paired.wrong_to_right}"]
    if row.is_baseline:  # the baseline's own levels, which the other rows' changes are relative to
        truncation = "-" if row.truncation_share is None else f"share {_percent(row.truncation_share, 1)}%"
        reasoning = "-" if row.reasoning_tokens_mean is None else f"mean {row.reasoning_tokens_mean:.0f} tok"
    else:
        truncation = _signed(row.truncation_change_points, 1, " pts")
        reasoning = _signed(row.reasoning_mean_drift_percent, 1, "%")
    return [row.precision, row.run, score, *paired_cells, row.verdict, truncation, reasoning, throughput]


def columns(group: GroupComparison) -> tuple[str, ...]:
    """The group's table headers: the divergence columns only where some row has divergence figures."""
    return HEADERS + (DIVERGENCE_HEADERS if any(row.divergence for row in group.rows) else ())


def group_cells(group: GroupComparison, row: ComparisonRow) -> list[str]:
    values = cells(row)
    if len(columns(group)) == len(HEADERS):
        return values
    figures = row.divergence or {}
    kl, same, ratio = (figures.get(name) or {} for name in ("kl_mean", "same_top_rate", "ppl_ratio"))
    kl_cell = "-" if kl.get("value") is None else f"{kl['value']:.4g} [{kl['ci_low']:.4g}, {kl['ci_high']:.4g}]"
    return [*values, kl_cell, "-" if same.get("value") is None else f"{100 * same['value']:.2f}%",
            "-" if ratio.get("value") is None else f"{ratio['value']:.4f}"]


def group_title(group: GroupComparison) -> str:
    options = ", ".join(f"{k}={v}" for k, v in group.prompt_options.items() if k != "hub_id")
    return (f"{group.family} - {group.task}{f' ({options})' if options else ''} - {group.metric}, "
            f"baseline {group.baseline}")


def row_notes(group: GroupComparison) -> list[str]:
    return [f"{row.precision} ({row.run}): {note}" for row in group.rows for note in row.notes]


def legend(comparison: Comparison) -> list[str]:
    return [f"scores and differences in percentage points; {CONFIDENCE:.0%} intervals of the paired difference "
            f"(Tango's score interval for 0/1 scores); * p < {SIGNIFICANCE:g}; flips -/+ = right->wrong / "
            "wrong->right; trunc chg = change in the share of completions cut by the length limit; reasoning chg = "
            f"change in mean reasoning tokens; non-inferiority margin {comparison.margin_points:g} point(s); "
            "tok/s (xR): the ratio to the baseline's tokens/s, shown only for runs on the same machine and backend, "
            "measured in separate runs."]


# ------------------------------------------------------------------------------------------- formats


def render_markdown(comparison: Comparison) -> str:
    parts = ["# Precision comparison", ""]
    for group in comparison.groups:
        parts += [f"## {group_title(group)}", "", "| " + " | ".join(columns(group)) + " |",
                  "|" + "---|" * len(columns(group))]
        parts += ["| " + " | ".join(cell.replace("|", "\\|") for cell in group_cells(group, row)) + " |"
                  for row in group.rows]
        parts += [""] + [f"- {note}" for note in row_notes(group)] + ([""] if row_notes(group) else [])
    if comparison.refused:
        parts += ["## Not compared", ""] + [f"- {run}: {reason}" for run, reason in comparison.refused] + [""]
    parts += legend(comparison)
    return "\n".join(parts) + "\n"


CSV_COLUMNS = (
    "family", "task", "metric", "baseline", "precision", "run", "is_baseline", "score", "score_ci_low",
    "score_ci_high", "score_n", "paired_samples", "recovery", "recovery_ci_low", "recovery_ci_high", "difference",
    "difference_ci_low", "difference_ci_high", "test", "p_value", "significant", "right_to_wrong", "wrong_to_right",
    "margin_points", "non_inferior", "verdict", "only_in_baseline", "only_in_candidate", "excluded_on_one_side",
    "truncation_share", "truncation_change_points", "ended_in_reasoning_share", "ended_in_reasoning_change_points",
    "reasoning_tokens_mean", "reasoning_tokens_median", "reasoning_mean_drift_percent",
    "reasoning_median_drift_percent", "completion_tokens_mean", "completion_mean_drift_percent",
    "tokens_per_second", "throughput_ratio", "kl_mean", "kl_mean_ci_low", "kl_mean_ci_high", "kl_p99",
    "same_top_rate", "ppl_ratio", "notes",
)


def _flat_row(group: GroupComparison, row: ComparisonRow) -> dict[str, Any]:
    flat = {k: v for k, v in asdict(row).items() if k not in ("metric", "paired", "notes")}
    flat.update(family=group.family, task=group.task, metric=group.metric, baseline=group.baseline,
                score=row.metric.get("value"), score_ci_low=row.metric.get("ci_low"),
                score_ci_high=row.metric.get("ci_high"), score_n=row.metric.get("n"), notes=" | ".join(row.notes))
    if row.divergence:
        figures = row.divergence
        kl = figures.get("kl_mean") or {}
        flat.update(kl_mean=kl.get("value"), kl_mean_ci_low=kl.get("ci_low"), kl_mean_ci_high=kl.get("ci_high"),
                    kl_p99=figures.get("kl_p99"), same_top_rate=(figures.get("same_top_rate") or {}).get("value"),
                    ppl_ratio=(figures.get("ppl_ratio") or {}).get("value"))
    if row.paired is not None:
        paired = row.paired.to_json()
        flat.update({key: paired[key] for key in ("recovery", "test", "p_value", "significant", "right_to_wrong",
                                                  "wrong_to_right", "margin_points", "non_inferior", "difference")})
        flat.update(recovery_ci_low=paired["recovery_low"], recovery_ci_high=paired["recovery_high"],
                    difference_ci_low=paired["difference_low"], difference_ci_high=paired["difference_high"])
    return flat


def render_csv(comparison: Comparison) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for group in comparison.groups:
        for row in group.rows:
            writer.writerow({k: ("" if v is None else v) for k, v in _flat_row(group, row).items()})
    return buffer.getvalue()


def to_json(comparison: Comparison) -> dict[str, Any]:
    return {
        "settings": {"confidence": CONFIDENCE, "significance": SIGNIFICANCE, "sign_flip_resamples": RESAMPLES,
                     "seed": SEED, "margin_points": comparison.margin_points,
                     "units": "fractions (0-1) except *_points and *_percent fields"},
        "groups": [asdict(group) for group in comparison.groups],
        "not_compared": [{"run": run, "reason": reason} for run, reason in comparison.refused],
    }

