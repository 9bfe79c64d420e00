"""The run directory, and the eval and score flows that fill it. This is the only module that knows its files.

    <output_dir>/
      config.yaml        the fully resolved config
      run.json           environment, task, model, and one entry per eval session (timings, tokens, memory)
      predictions.jsonl  one line per sample, appended chunk by chunk; a rerun skips ids already there
      scores.jsonl       one line per sample, rewritten by every scoring
      metrics.json       aggregate metrics with intervals, rewritten by every scoring
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from lowbit.chat import ChatFormat, get_chat_format, split_completion
from lowbit.config import EvalConfig
from lowbit.environment import environment, peak_memory, quantization_metadata
from lowbit.errors import UsageError
from lowbit.predictors.base import Predictor
from lowbit.records import Completion, Generation, JsonlAppender, Prediction, Sample, iter_jsonl
from lowbit.records import write_json_atomic, write_jsonl_atomic, write_text_atomic
from lowbit.tasks import Task
from lowbit.truncation import generation_summary

log = logging.getLogger(__name__)

CONFIG = "config.yaml"
RUN_INFO = "run.json"
PREDICTIONS = "predictions.jsonl"
SCORES = "scores.jsonl"
METRICS = "metrics.json"
RUN_FILES = (CONFIG, RUN_INFO, PREDICTIONS, SCORES, METRICS)

DEBUG_SAMPLES = 20
# Config keys that never change a prediction: a run may resume with them changed.
RESUMABLE_KEYS = (
    "output_dir", "overwrite", "limit", "debug", "data_dir",
    # how and where requests run, not what they produce
    "predictor_conf.batch_size", "predictor_conf.chunk_size", "predictor_conf.show_progress",
    "predictor_conf.base_url", "predictor_conf.max_concurrency", "predictor_conf.timeout_s",
    "predictor_conf.max_retries", "predictor_conf.backoff.initial_s", "predictor_conf.backoff.max_s",
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        return self.path / name

    # -- reading ----------------------------------------------------------------------------------------

    def config(self) -> dict[str, Any] | None:
        path = self.file(CONFIG)
        return yaml.safe_load(path.read_text()) if path.exists() else None

    def run_info(self) -> dict[str, Any]:
        import json

        path = self.file(RUN_INFO)
        return json.loads(path.read_text()) if path.exists() else {}

    def metrics(self) -> dict[str, Any] | None:
        import json

        path = self.file(METRICS)
        return json.loads(path.read_text()) if path.exists() else None

    def predictions(self) -> list[Prediction]:
        """All predictions, first occurrence of each id."""
        path = self.file(PREDICTIONS)
        if not path.exists():
            return []
        seen: dict[str, Prediction] = {}
        for number, row in enumerate(iter_jsonl(path), start=1):
            prediction = Prediction.from_json(row, number)
            seen.setdefault(prediction.id, prediction)
        return list(seen.values())

    def scores(self) -> list[dict[str, Any]]:
        """The rows of scores.jsonl (empty before the run is scored)."""
        path = self.file(SCORES)
        return list(iter_jsonl(path)) if path.exists() else []

    def predicted_ids(self) -> set[str]:
        path = self.file(PREDICTIONS)
        return {str(row["id"]) for row in iter_jsonl(path)} if path.exists() else set()

    # -- writing ----------------------------------------------------------------------------------------

    def check_resumable(self, cfg: EvalConfig) -> None:
        """Refuse to add predictions made under a different config to this directory."""
        on_disk = self.config()
        if on_disk is None:
            return
        ignored = RESUMABLE_KEYS + tuple(f"dataset.{k}" for k in cfg.task.non_prompt_options)
        old, new = _flatten(on_disk), _flatten(cfg.resolved)
        differing = [k for k in sorted(set(old) | set(new))
                     if old.get(k) != new.get(k) and not k.startswith("model.") and k not in ignored]
        task_info = self.run_info().get("task", {})
        if task_info.get("version") not in (None, cfg.task.version):
            differing.append(f"task version ({task_info['version']} on disk, {cfg.task.version} now)")
        if differing:
            changes = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" if k in old or k in new else k
                                for k in differing[:6])
            raise UsageError(f"{self.path} holds a run with a different config ({changes}): use another "
                             "output_dir, or overwrite=true to start over")

    def begin(self, cfg: EvalConfig, *, overwrite: bool, dataset: dict[str, Any] | None = None) -> None:
        """Create (or reset) the directory and record the config, environment and the dataset's fingerprint."""
        if overwrite:
            for name in RUN_FILES:
                self.file(name).unlink(missing_ok=True)
        self.path.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.file(CONFIG), yaml.safe_dump(cfg.resolved, sort_keys=False, allow_unicode=True))
        info = self.run_info()
        info.update({
            "environment": environment(),
            "task": {"name": cfg.task.name, "version": cfg.task.version, **({"dataset": dataset} if dataset else {})},
            "model": {
                "model_name": cfg.resolved["model_name"],
                "precision": cfg.resolved["precision"],
                "quantization_config": quantization_metadata(str(cfg.resolved["model_name"])),
            },
        })
        info.setdefault("sessions", [])
        write_json_atomic(self.file(RUN_INFO), info)

    def record_session(self, session: dict[str, Any]) -> None:
        info = self.run_info()
        info.setdefault("sessions", []).append(session)
        totals = {k: sum(s.get(k) or 0 for s in info["sessions"])
                  for k in ("prompt_tokens", "completion_tokens", "generate_seconds", "predicted")}
        seconds = totals["generate_seconds"]
        totals["completion_tokens_per_second"] = round(totals["completion_tokens"] / seconds, 2) if seconds else None
        info["totals"] = totals
        write_json_atomic(self.file(RUN_INFO), info)

    def prediction_writer(self) -> JsonlAppender:
        return JsonlAppender(self.file(PREDICTIONS))

    def write_scores(self, rows: list[dict[str, Any]], metrics: dict[str, Any]) -> None:
        write_jsonl_atomic(self.file(SCORES), rows)
        write_json_atomic(self.file(METRICS), metrics)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def select_samples(samples: list[Sample], *, debug: bool, limit: int | None) -> list[Sample]:
    """debug: DEBUG_SAMPLES spread evenly over the dataset (every subject or level shows up); limit: the first N."""
    if debug and len(samples) > DEBUG_SAMPLES:
        step = (len(samples) - 1) / (DEBUG_SAMPLES - 1)
        samples = [samples[round(i * step)] for i in range(DEBUG_SAMPLES)]
    return samples[:limit] if limit else samples


def evaluate(cfg: EvalConfig) -> RunDir:
    """Predict every selected sample not yet in the run directory, then score the whole run."""
    from lowbit.predictors import make_predictor

    resolved = cfg.resolved
    run = RunDir(cfg.output_dir)
    overwrite = bool(resolved["overwrite"])
    if not overwrite:
        run.check_resumable(cfg)
    chat = get_chat_format(cfg.sampling.template)
    samples = select_samples(cfg.task.load(resolved["data_dir"]), debug=resolved["debug"], limit=resolved["limit"])
    if not samples:
        raise UsageError(f"{cfg.task.name} selected no samples: check dataset options and limit")
    dataset = cfg.task.dataset_fingerprint()
    recorded = run.run_info().get("task", {}).get("dataset")
    if not overwrite and dataset is not None and recorded is not None and recorded != dataset:
        differing = ", ".join(k for k in sorted(set(recorded) | set(dataset)) if recorded.get(k) != dataset.get(k))
        raise UsageError(f"{run.path} holds predictions on other {cfg.task.name} data (its dataset fingerprint differs "
                         f"in {differing}): use another output_dir, or overwrite=true to start over")
    done = set() if overwrite else run.predicted_ids()
    todo = [s for s in samples if s.id not in done]
    log.info("%s: %d samples, %d already predicted, %d to go", cfg.task.name, len(samples), len(samples) - len(todo),
             len(todo))
    if todo or overwrite or run.config() is None:
        started, clock = _now(), time.perf_counter()
        predictor = make_predictor(str(resolved["model_name"]), cfg.predictor_options)
        predictor.check_sampling(cfg.sampling)
        load_seconds = time.perf_counter() - clock
        prompts = [predictor.render(s.messages, chat.template_kwargs(cfg.sampling)) for s in todo]
        run.begin(cfg, overwrite=overwrite, dataset=dataset)
        with run.prediction_writer() as writer:
            for chunk in predictor.generate(prompts, cfg.sampling, seed=resolved["seed"],
                                            keep_special_tokens=chat.keep_special_tokens):
                writer.append(
                    Prediction(
                        id=todo[i].id, prompt=prompts[i], item=todo[i].item, messages=todo[i].messages,
                        completions=[_completion(chat, predictor, prompts[i], g) for g in generations],
                    ).to_json()
                    for i, generations in chunk
                )
        run.record_session({
            "started": started, "finished": _now(), "wall_seconds": round(time.perf_counter() - clock, 3),
            "predicted": len(todo), "resumed_from": len(samples) - len(todo),
            "model_load_seconds": round(load_seconds, 3), "predictor": predictor.describe(),
            **predictor.stats.to_json(), **peak_memory(),
        })
        predictor.close()
    score_run(run, cfg.task)
    return run


def _completion(chat: ChatFormat, predictor: Predictor, prompt: str, generation: Generation) -> Completion:
    completion = split_completion(chat, prompt, generation)
    completion.reasoning_tokens = predictor.count_tokens(completion.reasoning) if completion.reasoning else 0
    return completion


def score_run(run: RunDir, task: Task) -> dict[str, Any]:
    """(Re)score every prediction in the run directory with the task's current scorer."""
    predictions = run.predictions()
    if not predictions:
        raise UsageError(f"{run.file(PREDICTIONS)} has no predictions to score")
    clock = time.perf_counter()
    rows = task.score_many(predictions)
    metrics = {
        "task": task.name,
        "task_version": task.version,
        "headline": task.headline_metric,
        "scored_at": _now(),
        "dataset_options": asdict(task.options),
        **task.aggregate(rows),
        "generation": generation_summary(predictions),
        "scoring_seconds": round(time.perf_counter() - clock, 3),
    }
    run.write_scores(rows, metrics)
    return metrics
