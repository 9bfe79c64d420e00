"""`lowbit compare`: every run against the baseline of its model and task, sample by sample.

    lowbit compare outputs/qwen3_4B_* baseline=bf16 margin=1.0 out=reports/qwen3_4B

For each group of runs (evaluated model x task x prompt-changing dataset options, see `pairing.py`) the baseline is
the run with precision `bf16` (or the precision label given as `baseline`, or the run directory given as
`baseline`, which then serves its own group). Every other run of the group is paired with it by sample id, and one
row per run reports: the run's headline metric with its 95% interval (over the run's own samples);
recovery, the paired difference with its bootstrap interval, the test of no difference, flip counts and the
non-inferiority verdict (over the paired samples, `paired_stats.py`); the same paired difference within each
subject, level or other grouping the runs' scores carry (`breakdown.py`); the change in the share of completions
cut by the length limit and the drift of reasoning length (the metrics' `generation`, over all completions);
throughput (completion tokens per second over the run's sessions, comparable only on the same hardware and
backend); and bits per weight (`bits.py`). The result model is `comparison.py`; `render.py` presents it.

Exit status: 0 when every run was compared, 1 when some were refused or had no baseline (listed after the
table); bad input raises `UsageError` (exit 2 from the CLI), including when nothing at all could be compared.
"""

from __future__ import annotations

import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError
from lowbit.report.arguments import split_compare_arguments
from lowbit.report.bits import bits_per_weight
from lowbit.report.breakdown import group_deltas
from lowbit.report.comparison import Comparison, ComparisonRow, GroupComparison
from lowbit.report.divergence_runs import attach as attach_divergence
from lowbit.report.divergence_runs import split_divergence_runs
from lowbit.report.paired_stats import compare_paired
from lowbit.report.pairing import (RunSummary, expand_run_paths, input_differences, load_run, pair_samples,
                                   scoring_option_notes)
from lowbit.report.render import FILE_FORMATS, write_outputs
from lowbit.report.terminal import print_text

DEFAULT_BASELINE = "bf16"
DEFAULT_MARGIN = 1.0
MISSING_ID_EXAMPLES = 3


# ------------------------------------------------------------------------------------------- entry point


def compare_main(paths: list[str], baseline: str | None = None, margin: float | None = None,
                 out_dir: str | None = None, formats: list[str] | None = None) -> int:
    """`lowbit compare`: compare run directories, print the table, write the requested files to `out_dir`.

    `paths` are run directories or globs and may include the command's key=value options (`baseline=`, `margin=`,
    `out=`, `format=`; lowbit.report.arguments); they must agree with the arguments when both are given.
    `formats` (markdown, csv, json, html; default all) are the files written to `out_dir`. Returns the exit
    status."""
    paths, options = split_compare_arguments(paths)
    baseline = _one_value("baseline", options.get("baseline"), baseline)
    margin = _one_value("margin", options.get("margin"), margin)
    out_dir = _one_value("out", options.get("out"), out_dir)
    formats = list(_one_value("format", options.get("format"), formats or None) or [])
    unknown = sorted(set(formats) - set(FILE_FORMATS))
    if unknown:
        raise UsageError(f"unknown format(s) {', '.join(unknown)}; choose from {', '.join(FILE_FORMATS)}")
    if formats and out_dir is None:
        raise UsageError("formats are written to files: give an output directory (out=DIR) too")
    comparison = compare_runs(paths, baseline, DEFAULT_MARGIN if margin is None else margin)
    print_text(comparison)
    if out_dir is not None:
        for written in write_outputs(comparison, Path(out_dir), formats or list(FILE_FORMATS)):
            print(f"wrote {written}")
    for run, reason in comparison.refused:
        print(f"not compared: {run}: {reason}", file=sys.stderr)
    return 1 if comparison.refused else 0


def _one_value(name: str, from_items: Any, from_option: Any) -> Any:
    if from_items is not None and from_option is not None and from_items != from_option:
        raise UsageError(f"{name} given twice ({from_items} and {from_option}): give it once")
    return from_items if from_items is not None else from_option


def compare_runs(paths: list[str], baseline: str | None = None, margin: float = DEFAULT_MARGIN) -> Comparison:
    """Load, group, pair and compare; raises UsageError when nothing can be compared."""
    if not (isinstance(margin, (int, float)) and math.isfinite(margin) and 0 < margin < 100):
        raise UsageError(f"margin is in percentage points and must be in (0, 100), got {margin}")
    entries, divergence = split_divergence_runs(expand_run_paths(paths))
    baseline_path = _baseline_path(baseline)
    if baseline_path is not None and baseline_path not in {p for _, p in entries}:
        entries.append((str(baseline).rstrip("/"), baseline_path))
    runs = [load_run(path, label) for label, path in entries]
    if len(runs) < 2:
        raise UsageError("give at least two run directories (or globs) to compare")
    label = DEFAULT_BASELINE if baseline is None or baseline_path is not None else baseline
    if "/" in label:
        raise UsageError(f"baseline '{label}' is neither a run directory nor a precision label")
    if baseline_path is None and not any(r.precision == label for r in runs):
        found = ", ".join(sorted({r.precision for r in runs}))
        raise UsageError(f"no run has precision '{label}' (precisions: {found}): pass baseline=<precision or run dir>")

    groups: dict[tuple[str, str, str], list[RunSummary]] = {}
    for run in runs:
        groups.setdefault(run.group_key, []).append(run)
    baselines = {key: _pick_baseline(members, label, baseline_path) for key, members in groups.items()}

    compared: list[GroupComparison] = []
    refused: list[tuple[str, str]] = []
    for key, members in groups.items():
        base = baselines[key]
        if base is None:
            reason = _missing_baseline_reason(members[0], label, baselines)
            refused.extend((r.label, reason) for r in members)
            continue
        rows = [_baseline_row(base)]
        for candidate in sorted((r for r in members if r is not base), key=lambda r: (r.precision, r.label)):
            problems = input_differences(base, candidate)
            if problems:
                refused.append((candidate.label, f"inputs differ from baseline {base.label}: " + "; ".join(problems)))
                continue
            row = _candidate_row(base, candidate, margin)
            if row is None:
                refused.append((candidate.label, f"shares no scored sample id with baseline {base.label}"))
                continue
            rows.append(row)
        attach_divergence(rows, base.model, divergence)
        compared.append(GroupComparison(family=base.model, task=base.task, prompt_options=base.prompt_options,
                                        metric=base.headline, baseline=f"{base.precision} ({base.label})", rows=rows))
    if not any(len(g.rows) > 1 for g in compared):
        detail = "; ".join(f"{run}: {reason}" for run, reason in refused[:3]) or "every run is a baseline"
        raise UsageError(f"nothing to compare: {detail}")
    compared_runs = {row.run for group in compared for row in group.rows}
    return Comparison(margin_points=float(margin), groups=compared, refused=refused,
                      reasoning_tokens={r.label: r.reasoning_tokens for r in runs if r.label in compared_runs})


# ------------------------------------------------------------------------------------------- baselines


def _baseline_path(baseline: str | None) -> Path | None:
    """The baseline as a run directory, when `baseline` names an existing directory (else it is a precision)."""
    if baseline is None or not Path(baseline).is_dir():
        return None
    return Path(baseline).resolve()


def _pick_baseline(members: list[RunSummary], label: str, baseline_path: Path | None) -> RunSummary | None:
    if baseline_path is not None:
        chosen = [r for r in members if r.path == baseline_path]
        if chosen:
            return chosen[0]
    matching = [r for r in members if r.precision == label]
    if len(matching) > 1:
        names = ", ".join(r.label for r in matching)
        raise UsageError(f"{len(matching)} runs of {matching[0].model} {matching[0].task} have precision "
                         f"{label} ({names}): pass baseline=<run dir> to choose one")
    return matching[0] if matching else None


def _missing_baseline_reason(run: RunSummary, label: str,
                             baselines: dict[tuple[str, str, str], RunSummary | None]) -> str:
    """Why a group has no baseline: none of that precision, or one whose prompt-changing options differ."""
    for key, base in baselines.items():
        if base is not None and key[:2] == run.group_key[:2]:
            return "inputs differ from baseline " + base.label + ": " + "; ".join(input_differences(base, run))
    return f"no {label} baseline run for {run.model} {run.task} among the inputs"


# ------------------------------------------------------------------------------------------- rows


def _baseline_row(base: RunSummary) -> ComparisonRow:
    row = ComparisonRow(run=base.label, precision=base.precision, is_baseline=True, metric=base.headline_estimate,
                        verdict="baseline")
    _fill_generation(row, base, None)
    return row


def _candidate_row(base: RunSummary, candidate: RunSummary, margin: float) -> ComparisonRow | None:
    pairing = pair_samples(base, candidate)
    if not pairing.ids:
        return None
    paired = compare_paired(pairing.baseline, pairing.candidate, margin, chance=base.chance)
    points = f"{margin:g} point{'' if margin == 1 else 's'}"
    if paired.at_floor:
        verdict = f"no verdict: both at or below chance ({100 * paired.chance:g}%)"
    elif paired.non_inferior:
        verdict = f"within {points} of {base.precision} at 95% confidence"
    else:
        verdict = f"not shown within {points} of {base.precision}"
    row = ComparisonRow(
        run=candidate.label, precision=candidate.precision, is_baseline=False, metric=candidate.headline_estimate,
        paired=paired, paired_samples=len(pairing.ids), only_in_baseline=len(pairing.only_in_baseline),
        only_in_candidate=len(pairing.only_in_candidate), excluded_on_one_side=len(pairing.excluded_on_one_side),
        verdict=verdict, breakdowns=group_deltas(pairing, base, candidate, margin),
    )
    for count, ids, where in ((row.only_in_baseline, pairing.only_in_baseline, f"only in baseline {base.label}"),
                              (row.only_in_candidate, pairing.only_in_candidate, "only in this run")):
        if count:
            row.notes.append(f"{count} id(s) {where}, e.g. {', '.join(ids[:MISSING_ID_EXAMPLES])}")
    if row.excluded_on_one_side:
        row.notes.append(f"{row.excluded_on_one_side} id(s) excluded in one run only, e.g. "
                         f"{', '.join(pairing.excluded_on_one_side[:MISSING_ID_EXAMPLES])}")
    scoring = scoring_option_notes(base, candidate)
    if scoring:
        row.notes.append(scoring)
    for run in (base, candidate):
        value = run.headline_estimate.get("value")
        if value is not None and len(run.scores) and abs(sum(run.scores.values()) / len(run.scores) - value) > 1e-9:
            row.notes.append(f"{run.label}: {run.headline} is not the mean of per-sample scores; the paired "
                             "statistics use per-sample scores")
    _fill_generation(row, candidate, base)
    row.notes.extend(throughput_notes(base, candidate, row))
    return row


def _fill_generation(row: ComparisonRow, run: RunSummary, base: RunSummary | None) -> None:
    """Truncation and reasoning length from the metrics' `generation`; throughput and bits per weight from the
    run info (bits from the precision label where it has no quantization metadata)."""
    generation, base_generation = run.generation, (base.generation if base else {})
    row.truncation_share = generation.get("finish_length_share")
    row.ended_in_reasoning_share = generation.get("ended_in_reasoning_share")
    reasoning = generation.get("reasoning_tokens") or {}
    completion = generation.get("completion_tokens") or {}
    row.reasoning_tokens_mean, row.reasoning_tokens_median = reasoning.get("mean"), reasoning.get("median")
    row.completion_tokens_mean = completion.get("mean")
    row.tokens_per_second = run.throughput
    bits = bits_per_weight(run.precision, run.quantization)
    row.bits_per_weight, row.bits_source = bits.bits, bits.source
    if run.emulation:
        row.emulation = describe_emulation(run.emulation)
        row.notes.append(row.emulation)
    if base is None:
        return
    row.truncation_change_points = _points_change(row.truncation_share, base_generation.get("finish_length_share"))
    row.ended_in_reasoning_change_points = _points_change(row.ended_in_reasoning_share,
                                                          base_generation.get("ended_in_reasoning_share"))
    base_reasoning = base_generation.get("reasoning_tokens") or {}
    row.reasoning_mean_drift_percent = _percent_change(row.reasoning_tokens_mean, base_reasoning.get("mean"))
    row.reasoning_median_drift_percent = _percent_change(row.reasoning_tokens_median, base_reasoning.get("median"))
    row.completion_mean_drift_percent = _percent_change(row.completion_tokens_mean,
                                                        (base_generation.get("completion_tokens") or {}).get("mean"))
    if row.tokens_per_second and base.throughput and _same_machine(run, base):
        row.throughput_ratio = row.tokens_per_second / base.throughput


def _same_machine(run: RunSummary, base: RunSummary) -> bool:
    """Same host, devices and backend (runs that predate the host record count by their devices alone)."""
    if run.predictor != base.predictor or run.device is None or base.device is None:
        return False
    return all(run.device.get(key) == base.device.get(key)
               for key in ("host", "gpus", "cpu_count", "cuda_available"))


def throughput_notes(base: RunSummary, candidate: RunSummary, row: ComparisonRow) -> list[str]:
    """Tokens/s of two runs are measured at different times: a ratio only on the same machine, and how far apart."""
    if row.tokens_per_second is None or base.throughput is None:
        return []
    if row.throughput_ratio is None:
        return ["throughput measured on another machine or backend than the baseline: no speed ratio"]
    hours = _hours_apart(base.started, candidate.started)
    if hours is not None and hours >= 1:
        return [f"throughput ratio from runs started {hours:.1f} h apart on the same machine: load at the time "
                "may differ"]
    return []


def _hours_apart(first: str | None, second: str | None) -> float | None:
    try:
        return abs((datetime.fromisoformat(second) - datetime.fromisoformat(first)).total_seconds()) / 3600
    except (TypeError, ValueError):
        return None


def describe_emulation(emulation: dict[str, Any]) -> str:
    """One line for a run whose transformers predictor fake-quantized weights and/or activations: which layers,
    which MoE experts modules (fused 3-D expert weights), what stayed in the model's dtype and what was not
    reached at all."""
    parts = [f"{what} {emulation.get(key)}" for what, key in (("weights", "weight_quant"), ("activations", "act_quant"))
             if emulation.get(key, "none") != "none"]
    experts = emulation.get("wrapped_experts_count") or 0
    reached = f"{emulation.get('wrapped_count', '?')} Linear layers"
    if experts:
        reached += f" and {experts} MoE experts module{'s' if experts != 1 else ''} (every expert)"
    kept = [*(emulation.get("kept_linear") or {}), *(emulation.get("kept_experts") or {})]
    line = (f"{', '.join(parts)} emulated (fake-quant) on {reached}; "
            f"kept in the model's dtype: {', '.join(kept) or 'none'}")
    unreached = emulation.get("unreached_fused_experts") or {}
    if unreached:
        reasons = emulation.get("unreached_reasons") or {}
        line += "; NOT emulated (fused experts): " + ", ".join(
            f"{name} ({reasons[name]})" if name in reasons else name for name in unreached)
    return line


def _points_change(share: float | None, base_share: float | None) -> float | None:
    return None if share is None or base_share is None else 100 * (share - base_share)


def _percent_change(value: float | None, base_value: float | None) -> float | None:
    return None if value is None or not base_value else 100 * (value / base_value - 1)
