"""The task interface: load samples, score one prediction, aggregate scores into metrics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import defaultdict
from typing import Any, ClassVar

from lowbit.metrics.pass_at_k import pass_at_k
from lowbit.metrics.stats import mean_estimate, problem_mean_estimate
from lowbit.records import Prediction, Sample
from lowbit.rundir.records import ScoreRow
from lowbit.tasks.prompts import DEFAULT_FAMILY, PromptContext, PromptProfiles, check_profile


class Task(ABC):
    """One benchmark. Subclasses set `name`, `version` and `Options`, and register in lowbit.tasks.registry.

    `version` changes whenever prompts or scoring change, so results from different versions are never mixed.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    Options: ClassVar[type]  # dataclass of the task's `dataset.*` options
    # Options that never change a prompt (selection or scoring only): an interrupted run may resume with them changed.
    non_prompt_options: ClassVar[frozenset[str]] = frozenset()
    # The metric a one-line summary reports (a key of aggregate()["metrics"] holding an Estimate).
    headline_metric: ClassVar[str] = "accuracy"
    # The headline score of a model that knows nothing (four-choice questions: 0.25; free-form answers: 0). Two runs
    # both at or below it are compared without a verdict.
    chance_level: ClassVar[float] = 0.0
    # The item fields whose values `subsample=N` keeps represented in proportion (e.g. MMLU-Redux's subject).
    strata: ClassVar[tuple[str, ...]] = ()
    # The model config's sampling block used when eval_dataset_config is unset (None: the block named like the task).
    sampling_config: ClassVar[str | None] = None

    # The task's message builders per prompt profile (`dataset.prompt`, lowbit.tasks.prompts); None for a task with
    # one fixed prompt, which then builds its messages itself.
    prompt_profiles: ClassVar[PromptProfiles | None] = None
    _prompt_context: PromptContext | None = None

    def __init__(self, options: Any):
        self.options = options
        if self.prompt_profiles is not None:
            check_profile(options.prompt)

    def bind_model(self, model_name: str, template_kwargs: dict[str, Any],
                   prompt_context: PromptContext | None = None) -> None:
        """Called before load() with the evaluated model, its chat-template arguments and the context its messages
        are chosen by (model family, sampling block). Tasks whose data depend on the model's tokenizer (prompts
        fitted to a token length) keep the model. A prompt profile without messages for the context fails here,
        before any model loads."""
        self._prompt_context = prompt_context
        if self.prompt_profiles is not None:
            self.prompt_profiles.builder(self.options.prompt, self.prompt_context)

    @property
    def prompt_context(self) -> PromptContext:
        """The bound context; unbound, that of lowbit's default model (qwen3, the task's default sampling block)."""
        return self._prompt_context or PromptContext(DEFAULT_FAMILY, self.sampling_config or self.name)

    def messages(self, item: dict[str, Any]) -> list[dict[str, str]]:
        """The chat messages of one source record under `dataset.prompt` in the prompt context."""
        if self.prompt_profiles is None:
            raise NotImplementedError(f"{self.name} has no prompt profiles and builds its own messages")
        return self.prompt_profiles.builder(self.options.prompt, self.prompt_context)(item)

    def required_sequence_length(self) -> int | None:
        """The sampling.max_sequence_length this task's prompts need (RULER: its target length); None: any."""
        return None

    def dataset_fingerprint(self) -> dict[str, Any] | None:
        """After load(): what identifies the exact data loaded (e.g. a content hash of generated prompts), recorded
        in the run info; None when the task version and the source identify the data."""
        return None

    @abstractmethod
    def load(self, data_dir: str | None) -> list[Sample]:
        """All samples, in a stable order, from `data_dir` or (when None) the Hugging Face hub."""

    @abstractmethod
    def score(self, prediction: Prediction) -> dict[str, Any]:
        """One score row (`score_row`): at least id, scores (one per completion), score (their mean), excluded."""

    def score_many(self, predictions: list[Prediction]) -> list[dict[str, Any]]:
        """Score rows for many predictions; tasks that can score in parallel (running programs) override it."""
        return [self.score(p) for p in predictions]

    @abstractmethod
    def aggregate(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """The run metrics' `metrics` and `groups` from all score rows."""


def score_row(prediction: Prediction, scores: list[float], excluded: str | None = None, **fields: Any) -> dict[str, Any]:
    """The fields every score row has (`lowbit.rundir.ScoreRow`); a sample's score is the mean over its completions.
    `excluded` names why a sample does not count (e.g. a flawed question), or is None."""
    return ScoreRow(id=prediction.id, score=sum(scores) / len(scores) if scores else 0.0, scores=scores,
                    truncated=[c.truncated for c in prediction.completions], excluded=excluded,
                    task_fields=fields).to_json()


def accuracy_metrics(rows: list[dict[str, Any]], group_by: tuple[str, ...] = ()) -> dict[str, Any]:
    """Accuracy with its interval over non-excluded rows, failure counts, and per-group accuracies."""
    included = [r for r in rows if not r.get("excluded")]
    excluded: dict[str, int] = defaultdict(int)
    for r in rows:
        if r.get("excluded"):
            excluded[r["excluded"]] += 1
    completions = sum(len(r["scores"]) for r in included)
    metrics = {
        "accuracy": mean_estimate([r["score"] for r in included]).to_json(),
        "samples": len(included),
        "completions": completions,
        "excluded": sum(excluded.values()),
        "excluded_by_reason": dict(sorted(excluded.items())),
        "truncated_completions": sum(sum(r["truncated"]) for r in included),
        "parse_failures": sum(sum(r.get("parse_failed", [])) for r in included),
    }
    groups = {}
    for key in group_by:
        values: dict[str, list[float]] = defaultdict(list)
        for r in included:
            values[str(r[key])].append(r["score"])
        groups[key] = {g: mean_estimate(v).to_json() for g, v in sorted(values.items())}
    return {"metrics": metrics, "groups": groups}


def sampled_accuracy_metrics(rows: list[dict[str, Any]], group_by: tuple[str, ...] = ()) -> dict[str, Any]:
    """`accuracy_metrics` for tasks that may sample n completions per problem, plus scoring failures,
    `avg@<n>` (the same estimate as `accuracy`) and unbiased `pass@<k>` for every k <= n (lowbit.metrics.pass_at_k).

    With n > 1 the intervals of accuracy, avg@n, pass@k and the groups come from the cluster bootstrap over
    problems; with n = 1 they are the Wilson intervals of plain accuracy (= avg@1 = pass@1)."""
    result = accuracy_metrics(rows, group_by)
    metrics, included = result["metrics"], [r for r in rows if not r.get("excluded")]
    metrics["scoring_failures"] = sum(sum(r.get("scoring_failed", [])) for r in included)
    counts = sorted({len(r["scores"]) for r in included})
    if not counts or counts[0] == 0:
        return result
    n_min, n_max = counts[0], counts[-1]
    metrics["completions_per_sample"] = n_min if n_min == n_max else {"min": n_min, "max": n_max}
    accuracy = problem_mean_estimate([r["score"] for r in included], n_max).to_json()
    metrics["accuracy"] = accuracy
    if n_min == n_max:
        metrics[f"avg@{n_max}"] = accuracy
    for k in range(1, n_min + 1):  # with unequal n, only the k every sample supports
        per_problem = [pass_at_k(len(r["scores"]), round(sum(r["scores"])), k) for r in included]
        metrics[f"pass@{k}"] = problem_mean_estimate(per_problem, n_max).to_json()
    for key in group_by:
        values: dict[str, list[float]] = defaultdict(list)
        for r in included:
            values[str(r[key])].append(r["score"])
        result["groups"][key] = {g: problem_mean_estimate(v, n_max).to_json() for g, v in sorted(values.items())}
    return result
