"""Typed records of the run directory's files, as they are written and as they are read back.

Each record reads today's files and the files written before records carried a schema version (version 0); it
writes the current `SCHEMA_VERSION`. A file from a newer lowbit (a higher version) is refused, since its fields
may mean something this code does not know.

    RunConfig   config.yaml        the resolved config, with the fields readers need
    RunInfo     run.json           environment, task, model, and one Session per eval session (Totals derived)
    ScoreRow    scores.jsonl       one line per sample
    Metrics     metrics.json       aggregate metrics, each an Estimate or a count, per-group estimates, generation
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from lowbit.errors import UsageError
from lowbit.metrics.stats import Estimate

SCHEMA_VERSION = 1
SCHEMA_KEY = "schema_version"


def read_schema_version(data: dict[str, Any], where: str) -> int:
    """The schema version of a record (0 for records older than the field); a newer one than this code writes is
    refused."""
    version = data.get(SCHEMA_KEY, 0)
    if not isinstance(version, int) or version < 0:
        raise UsageError(f"{where}: schema_version {version!r} is not a version number: the file was edited by "
                         "hand; restore it or rerun")
    if version > SCHEMA_VERSION:
        raise UsageError(f"{where} was written by a newer lowbit (schema {version}; this one reads up to "
                         f"{SCHEMA_VERSION}): upgrade lowbit to read it")
    return version


# --------------------------------------------------------------------------------------------- config.yaml


@dataclass
class RunConfig:
    """config.yaml: the fully resolved config (`resolved`, written as it is) and the fields readers need."""

    resolved: dict[str, Any] = field(repr=False)
    task: str | None  # eval_dataset
    precision: str | None
    model_name: str | None  # the evaluated checkpoint (hub id or local directory)
    family: str | None  # the model config's hub id: a quantized checkpoint's model_name does not change it
    dataset: dict[str, Any]  # the task's dataset.* options
    sampling: dict[str, Any]  # the effective sampling block
    predictor: str | None  # predictor_conf.name
    seed: int | None

    @classmethod
    def from_json(cls, resolved: dict[str, Any]) -> RunConfig:
        model = resolved.get("model") or {}
        model_name = resolved.get("model_name")
        return cls(
            resolved=resolved,
            task=resolved.get("eval_dataset"),
            precision=resolved.get("precision"),
            model_name=model_name,
            family=model.get("model_name") or model_name,
            dataset=dict(resolved.get("dataset") or {}),
            sampling=dict(resolved.get("sampling") or {}),
            predictor=(resolved.get("predictor_conf") or {}).get("name"),
            seed=resolved.get("seed"),
        )

    def to_json(self) -> dict[str, Any]:
        return self.resolved


# --------------------------------------------------------------------------------------------- run.json


@dataclass
class TaskInfo:
    name: str | None = None
    version: str | None = None  # prompts and scoring; a resume under another version is refused
    dataset: dict[str, Any] | None = None  # fingerprint of data that depend on the model (RULER), else absent

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, **({"dataset": self.dataset} if self.dataset else {})}


@dataclass
class ModelInfo:
    model_name: str | None = None
    precision: str | None = None
    quantization_config: dict[str, Any] | None = None  # the checkpoint's, for a local checkpoint that has one

    def to_json(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "precision": self.precision,
                "quantization_config": self.quantization_config}


@dataclass
class Session:
    """One `lowbit eval` invocation that predicted samples: timings, the predictor's totals, peak memory."""

    started: str | None = None
    finished: str | None = None
    wall_seconds: float | None = None
    predicted: int | None = None
    resumed_from: int | None = None  # samples already predicted when the session began
    model_load_seconds: float | None = None
    predictor: dict[str, Any] = field(default_factory=dict)  # the predictor's describe(): name, device, emulation
    prompts: int | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    generate_seconds: float | None = None
    prompt_tokens_per_second: float | None = None
    completion_tokens_per_second: float | None = None
    prompts_over_limit: int | None = None
    prompt_tokens_truncated: int | None = None
    gpu_peak_gib: float | None = None
    rss_peak_gib: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # backend-specific totals, written beside the fields

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Session:
        names = {f.name for f in fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        return cls(**{**known, "predictor": known.get("predictor") or {}},
                   extra={k: v for k, v in data.items() if k not in names})

    def to_json(self) -> dict[str, Any]:
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}, **self.extra}

    @property
    def emulation(self) -> dict[str, Any] | None:
        """The transformers predictor's fake-quant record (lowbit.quant.fake_quant's describe()), if any."""
        return self.predictor.get("emulation")


@dataclass
class Totals:
    """Sums over every session of a run."""

    prompt_tokens: int
    completion_tokens: int
    generate_seconds: float
    predicted: int
    completion_tokens_per_second: float | None

    @classmethod
    def of(cls, sessions: list[Session]) -> Totals:
        def total(name: str) -> Any:
            return sum(getattr(s, name) or 0 for s in sessions)

        seconds, completion_tokens = total("generate_seconds"), total("completion_tokens")
        return cls(prompt_tokens=total("prompt_tokens"), completion_tokens=completion_tokens, generate_seconds=seconds,
                   predicted=total("predicted"),
                   completion_tokens_per_second=round(completion_tokens / seconds, 2) if seconds else None)


@dataclass
class RunInfo:
    """run.json: what the run ran on and with, and its sessions; `totals` is derived from the sessions."""

    environment: dict[str, Any] = field(default_factory=dict)  # python, platform, packages, git_sha, device
    task: TaskInfo = field(default_factory=TaskInfo)
    model: ModelInfo = field(default_factory=ModelInfo)
    sessions: list[Session] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # fields this version does not know, kept on rewrite
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> RunInfo:
        version = read_schema_version(data, where)
        rest = {k: v for k, v in data.items()
                if k not in (SCHEMA_KEY, "environment", "task", "model", "sessions", "totals")}
        task, model = data.get("task") or {}, data.get("model") or {}
        return cls(
            environment=dict(data.get("environment") or {}),
            task=TaskInfo(name=task.get("name"), version=_text(task.get("version")), dataset=task.get("dataset")),
            model=ModelInfo(model_name=model.get("model_name"), precision=model.get("precision"),
                            quantization_config=model.get("quantization_config")),
            sessions=[Session.from_json(s) for s in data.get("sessions") or []],
            extra=rest,
            schema_version=version,
        )

    def to_json(self) -> dict[str, Any]:
        return {SCHEMA_KEY: SCHEMA_VERSION, "environment": self.environment, "task": self.task.to_json(),
                "model": self.model.to_json(), "sessions": [s.to_json() for s in self.sessions],
                "totals": asdict(self.totals), **self.extra}

    @property
    def totals(self) -> Totals:
        return Totals.of(self.sessions)

    @property
    def device(self) -> dict[str, Any] | None:
        return self.environment.get("device")

    @property
    def quantization(self) -> dict[str, Any] | None:
        """The checkpoint's quantization metadata (None for an unquantized checkpoint); early run.json files
        recorded it at the top level."""
        recorded = self.extra.get("quantization") or self.model.quantization_config
        return recorded if isinstance(recorded, dict) else None

    @property
    def emulation(self) -> dict[str, Any] | None:
        """The latest session's fake-quant record; None when its predictor emulated nothing."""
        described = (self.sessions[-1].emulation if self.sessions else None) or {}
        if described.get("act_quant", "none") == "none" and described.get("weight_quant", "none") == "none":
            return None
        return described


# --------------------------------------------------------------------------------------------- scores.jsonl


@dataclass
class ScoreRow:
    """One line of scores.jsonl: the fields every task writes, and the task's own (extracted, gold, subject...)."""

    id: str
    score: float  # the mean over the sample's completions
    scores: list[float]  # one per completion
    truncated: list[bool] = field(default_factory=list)  # per completion: cut by the length limit or in reasoning
    excluded: str | None = None  # why the sample does not count (e.g. a flawed question), or None
    task_fields: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, row: dict[str, Any], where: str) -> ScoreRow:
        version = read_schema_version(row, where)
        rest = {k: v for k, v in row.items() if k not in (SCHEMA_KEY, "id", "score", "scores", "truncated", "excluded")}
        return cls(id=str(row["id"]), score=row["score"], scores=list(row.get("scores") or []),
                   truncated=list(row.get("truncated") or []), excluded=row.get("excluded"), task_fields=rest,
                   schema_version=version)

    def to_json(self) -> dict[str, Any]:
        """The row as tasks aggregate it; `to_line` is what scores.jsonl holds."""
        return {"id": self.id, "score": self.score, "scores": self.scores, "truncated": self.truncated,
                "excluded": self.excluded, **self.task_fields}

    def to_line(self) -> dict[str, Any]:
        return {SCHEMA_KEY: SCHEMA_VERSION, **self.to_json()}


# --------------------------------------------------------------------------------------------- metrics.json


@dataclass
class Metrics:
    """metrics.json: the task's metrics (Estimates and counts), per-group estimates and the generation summary."""

    task: str | None
    task_version: str | None  # the scorer's version
    headline: str  # the metric a one-line summary reports
    metrics: dict[str, Any]  # name -> an Estimate's JSON or a count (or a mapping of counts)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)  # grouping -> group -> an Estimate's JSON
    generation: dict[str, Any] = field(default_factory=dict)  # lowbit.truncation.generation_summary
    dataset_options: dict[str, Any] | None = None  # the options the run was scored with
    scored_at: str | None = None
    scoring_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # anything else the task's aggregate reports
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> Metrics:
        version = read_schema_version(data, where)
        rest = {k: v for k, v in data.items() if k not in (SCHEMA_KEY, *_METRICS_FIELDS)}
        return cls(task=data.get("task"), task_version=_text(data.get("task_version")),
                   headline=data.get("headline") or "accuracy", metrics=dict(data.get("metrics") or {}),
                   groups=dict(data.get("groups") or {}), generation=dict(data.get("generation") or {}),
                   dataset_options=data.get("dataset_options"), scored_at=data.get("scored_at"),
                   scoring_seconds=data.get("scoring_seconds"), extra=rest, schema_version=version)

    def to_json(self) -> dict[str, Any]:
        return {SCHEMA_KEY: SCHEMA_VERSION, "task": self.task, "task_version": self.task_version,
                "headline": self.headline, "scored_at": self.scored_at, "dataset_options": self.dataset_options,
                "metrics": self.metrics, "groups": self.groups, **self.extra, "generation": self.generation,
                "scoring_seconds": self.scoring_seconds}

    def estimate(self, name: str) -> Estimate | None:
        """The metric `name` as an Estimate; None when it is absent or a count."""
        return estimate_from_json(self.metrics.get(name))

    @property
    def headline_estimate(self) -> Estimate | None:
        return self.estimate(self.headline)

    def group_estimates(self, grouping: str) -> dict[str, Estimate]:
        estimates = {group: estimate_from_json(value) for group, value in (self.groups.get(grouping) or {}).items()}
        return {group: estimate for group, estimate in estimates.items() if estimate is not None}


_METRICS_FIELDS = ("task", "task_version", "headline", "metrics", "groups", "generation", "dataset_options",
                   "scored_at", "scoring_seconds")


def estimate_from_json(value: Any) -> Estimate | None:
    """An Estimate from its JSON (fields a task added beside it are ignored); None for anything else."""
    if not isinstance(value, dict) or "value" not in value or "n" not in value:
        return None
    return Estimate(value=value["value"], n=value["n"], stderr=value.get("stderr"), ci_low=value.get("ci_low"),
                    ci_high=value.get("ci_high"), method=value.get("method", "unknown"),
                    confidence=value.get("confidence", 0.95))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)
