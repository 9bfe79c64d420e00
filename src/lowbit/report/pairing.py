"""Which runs can be compared, and on which samples.

A run is loaded from its run directory through `lowbit.rundir` (its config, run info, metrics, score rows and,
for the prompt check, predictions). Runs are grouped by the model they evaluated (`evaluated_model.py`: the
source model of a `lowbit quantize` checkpoint, else `model_name`), task (`eval_dataset`) and the dataset options
that change prompts (every option but the task's `non_prompt_options`). One run per group is the baseline.

A candidate is paired with its baseline only when their inputs agree; otherwise the pairing is refused with what
differs: the task version (prompts, run info) or scorer version (metrics), the effective sampling block of the
config (which holds the chat template, thinking mode and token limit), the chat messages of any shared
sample id (a different dataset), and, when both runs rendered prompts locally, the rendered prompts (a different
chat template in the checkpoint). Samples are paired by id; ids on one side only, and ids excluded on one side
only, are counted and reported, and the statistics use the ids scored on both sides.

For the report a run also brings what its breakdowns and plots need: each sample's value of every grouping that
the metrics' `groups` report and score rows carry as a plain field (MMLU-Redux `subject`, MATH-500
`subject` and `level`), the reasoning token count of every completion, and the checkpoint's quantization metadata
(run info) from which bits per weight are derived.
"""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lowbit.errors import UsageError
from lowbit.report.evaluated_model import evaluated_model
from lowbit.rundir import CONFIG, METRICS, RUN_INFO, SCORES, RunDir, ScoreRow

LOCAL_RENDERERS = ("vllm", "transformers")  # the openai predictor's "prompt" is the request, not a rendering
GLOB_CHARACTERS = "*?["


@dataclass
class RunSummary:
    """What a comparison needs from one run directory."""

    path: Path
    label: str  # how the run is named in output: the path as given
    precision: str
    model: str  # the evaluated model's name (evaluated_model.py)
    task: str
    prompt_options: dict[str, Any]
    scoring_options: dict[str, Any]
    sampling: dict[str, Any]
    task_version: str | None  # prompts (run info)
    scorer_version: str | None  # scores (metrics)
    predictor: str | None
    headline: str
    headline_estimate: dict[str, Any]
    scores: dict[str, float]  # id -> score of every sample that counts
    excluded_ids: set[str]
    generation: dict[str, Any]
    throughput: float | None  # completion tokens per second over all eval sessions
    device: dict[str, Any] | None
    started: str | None  # when the run's first eval session started (ISO 8601, UTC)
    message_digests: dict[str, str] = field(repr=False)
    prompt_digests: dict[str, str] = field(repr=False)
    quantization: dict[str, Any] | None = None  # the checkpoint's quantization_config (run info)
    emulation: dict[str, Any] | None = None  # what the transformers predictor fake-quantized (run info), if anything
    groupings: dict[str, dict[str, str]] = field(default_factory=dict, repr=False)  # grouping -> id -> value
    reasoning_tokens: list[int] = field(default_factory=list, repr=False)  # per completion that counted them
    chance: float = 0.0  # the task's chance-level headline score

    @property
    def group_key(self) -> tuple[str, str, str]:
        return self.model, self.task, json.dumps(self.prompt_options, sort_keys=True, default=str)


@dataclass
class Pairing:
    """Scores of the ids both runs scored, aligned, and the ids that could not be paired."""

    ids: list[str]
    baseline: np.ndarray
    candidate: np.ndarray
    only_in_baseline: list[str]
    only_in_candidate: list[str]
    excluded_on_one_side: list[str]


# ------------------------------------------------------------------------------------------- loading


def expand_run_paths(patterns: list[str]) -> list[tuple[str, Path]]:
    """(label, resolved path) per run directory, in the order given, without repeats. A glob keeps only the
    directories holding a run config; a path named explicitly must be a run directory."""
    if not patterns:
        raise UsageError("give at least two run directories (or globs) to compare")
    found: dict[Path, str] = {}
    for pattern in patterns:
        if any(c in pattern for c in GLOB_CHARACTERS) and not Path(pattern).exists():
            matches = [m for m in sorted(glob.glob(pattern)) if RunDir(m).has_config()]
            if not matches:
                raise UsageError(f"'{pattern}' matches no run directory (a directory holding {CONFIG})")
        else:
            matches = [pattern]
        for match in matches:
            found.setdefault(Path(match).resolve(), match.rstrip("/"))
    return [(label, path) for path, label in found.items()]


def load_run(path: Path, label: str) -> RunSummary:
    run = RunDir(path)
    if not run.path.is_dir():
        raise UsageError(f"{label} is not a directory: give lowbit eval output directories")
    config = run.config()
    if config is None:
        raise UsageError(f"{label} has no {CONFIG}: give the output_dir of a `lowbit eval` run")
    metrics = run.metrics()
    if metrics is None or not run.is_scored():
        raise UsageError(f"{label} has no {METRICS} or {SCORES}: score it first with `lowbit score -c {label}`")
    task = str(config.task)
    if metrics.headline_estimate is None:
        raise UsageError(f"{label}: {METRICS} has no headline metric '{metrics.headline}' with an estimate")
    rows = run.scores()
    scores, excluded = _score_rows(rows, label)
    messages, prompts, reasoning_tokens = _prediction_facts(run)
    info = run.run_info()
    task_class = _task_class(task)
    non_prompt = task_class.non_prompt_options if task_class else frozenset()
    return RunSummary(
        path=run.path, label=label, precision=str(config.precision),
        model=evaluated_model(config, info.quantization), task=task,
        prompt_options={k: v for k, v in sorted(config.dataset.items()) if k not in non_prompt},
        scoring_options={k: v for k, v in sorted((metrics.dataset_options or config.dataset).items())
                         if k in non_prompt},
        sampling=config.sampling, task_version=info.task.version, scorer_version=metrics.task_version,
        predictor=config.predictor, headline=metrics.headline, headline_estimate=metrics.metrics[metrics.headline],
        scores=scores, excluded_ids=excluded, generation=metrics.generation,
        throughput=info.totals.completion_tokens_per_second, device=info.device,
        started=info.sessions[0].started if info.sessions else None,
        chance=task_class.chance_level if task_class else 0.0,
        message_digests=messages, prompt_digests=prompts, quantization=info.quantization, emulation=info.emulation,
        groupings=_groupings(rows, metrics.groups), reasoning_tokens=reasoning_tokens,
    )


def _score_rows(rows: list[ScoreRow], label: str) -> tuple[dict[str, float], set[str]]:
    """id -> score of the samples that count, and the ids excluded (e.g. flawed questions)."""
    scores: dict[str, float] = {}
    excluded: set[str] = set()
    for row in rows:
        if row.id in scores or row.id in excluded:
            raise UsageError(f"{label}: {SCORES} holds id {row.id} twice: rescore with `lowbit score -c {label}`")
        if row.excluded:
            excluded.add(row.id)
        else:
            scores[row.id] = float(row.score)
    return scores, excluded


def _prediction_facts(run: RunDir) -> tuple[dict[str, str], dict[str, str], list[int]]:
    """Per id, a digest of the chat messages and of the rendered prompt (empty maps for legacy lines); and the
    reasoning token count of every completion that recorded one."""
    messages, prompts, reasoning_tokens = {}, {}, []
    for prediction in run.predictions():
        if prediction.messages is not None:
            messages[prediction.id] = _digest(json.dumps(prediction.messages, sort_keys=True, ensure_ascii=False))
        if prediction.prompt:
            prompts[prediction.id] = _digest(prediction.prompt)
        reasoning_tokens.extend(c.reasoning_tokens for c in prediction.completions if c.reasoning_tokens is not None)
    return messages, prompts, reasoning_tokens


def _groupings(rows: list[ScoreRow], reported: dict[str, Any]) -> dict[str, dict[str, str]]:
    """grouping -> id -> value, for each grouping of the metrics that every score row carries as a plain value."""
    groupings = {}
    for key in reported:
        values = {row.id: row.task_fields.get(key) for row in rows}
        if values and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values.values()):
            groupings[key] = {sample_id: str(value) for sample_id, value in values.items()}
    return groupings


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _task_class(task: str) -> type | None:
    """The task's class (its options that never change a prompt, its chance level); None for a task this lowbit
    does not know."""
    from lowbit.tasks import get_task_class

    try:
        return get_task_class(task)
    except UsageError:
        return None


# ------------------------------------------------------------------------------------------- pairing


def input_differences(baseline: RunSummary, candidate: RunSummary) -> list[str]:
    """What makes the two runs' samples incomparable; empty when they may be paired."""
    problems = []
    # a run info without a task version (runs older than the field) is not held against a pairing; metrics
    # always record the scorer's version
    if None not in (baseline.task_version, candidate.task_version) and baseline.task_version != candidate.task_version:
        problems.append(f"task version ({RUN_INFO}) {baseline.task_version} vs {candidate.task_version}")
    if baseline.scorer_version != candidate.scorer_version:
        problems.append(f"scorer version ({METRICS}) {baseline.scorer_version} vs {candidate.scorer_version}")
    if baseline.task != candidate.task:
        problems.append(f"task {baseline.task} vs {candidate.task}")
    option_changes = _changed_keys(baseline.prompt_options, candidate.prompt_options)
    if option_changes:
        problems.append(f"dataset options that change prompts ({option_changes})")
    sampling_changes = _changed_keys(baseline.sampling, candidate.sampling)
    if sampling_changes:
        problems.append(f"sampling ({sampling_changes})")
    shared = set(baseline.scores) | baseline.excluded_ids
    shared &= set(candidate.scores) | candidate.excluded_ids
    for what, base_map, cand_map, applies in (
        ("chat messages", baseline.message_digests, candidate.message_digests, True),
        ("rendered prompts (chat template)", baseline.prompt_digests, candidate.prompt_digests,
         baseline.predictor in LOCAL_RENDERERS and candidate.predictor in LOCAL_RENDERERS),
    ):
        differing = sorted(i for i in shared if i in base_map and i in cand_map and base_map[i] != cand_map[i])
        if applies and differing:
            problems.append(f"{what} of {len(differing)} shared id(s), e.g. {differing[0]}")
    return problems


def scoring_option_notes(baseline: RunSummary, candidate: RunSummary) -> str | None:
    """Options that change scores or the sample selection but not prompts (e.g. MMLU-Redux answer_key)."""
    changes = _changed_keys(baseline.scoring_options, candidate.scoring_options)
    return f"scored with different dataset options ({changes})" if changes else None


def _changed_keys(base: dict[str, Any], cand: dict[str, Any]) -> str:
    keys = [k for k in sorted(set(base) | set(cand)) if base.get(k) != cand.get(k)]
    return "; ".join(f"{k}: {base.get(k)!r} vs {cand.get(k)!r}" for k in keys)


def pair_samples(baseline: RunSummary, candidate: RunSummary) -> Pairing:
    base_ids = set(baseline.scores) | baseline.excluded_ids
    cand_ids = set(candidate.scores) | candidate.excluded_ids
    ids = [i for i in baseline.scores if i in candidate.scores]  # baseline's order
    excluded_one_side = sorted((baseline.excluded_ids & set(candidate.scores)) |
                               (candidate.excluded_ids & set(baseline.scores)))
    return Pairing(
        ids=ids,
        baseline=np.array([baseline.scores[i] for i in ids], dtype=np.float64),
        candidate=np.array([candidate.scores[i] for i in ids], dtype=np.float64),
        only_in_baseline=sorted(base_ids - cand_ids),
        only_in_candidate=sorted(cand_ids - base_ids),
        excluded_on_one_side=excluded_one_side,
    )
