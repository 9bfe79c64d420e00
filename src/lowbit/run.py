"""The eval and score flows, which fill a run directory (`lowbit.rundir`, the only place that knows its files).

`evaluate` predicts every selected sample not yet in the directory (refusing a directory that holds a run made
under another config) and scores the run; `score_run` (re)scores every prediction with the task's current scorer.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import defaultdict
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lowbit.chat import ChatFormat, get_chat_format, split_completion
from lowbit.config import EvalConfig
from lowbit.environment import environment, peak_memory, quantization_metadata
from lowbit.errors import UsageError
from lowbit.predictors.base import Predictor
from lowbit.records import Completion, Generation, Prediction, Sample
from lowbit.rundir import PREDICTIONS, Metrics, ModelInfo, RunConfig, RunDir, ScoreRow, Session, TaskInfo
from lowbit.tasks import Task
from lowbit.truncation import generation_summary

log = logging.getLogger(__name__)

DEBUG_SAMPLES = 20
SUBSAMPLE_SALT = "lowbit-subsample"  # fixed: the same ids for every run of a dataset
# Config keys that never change a prediction: a run may resume with them changed.
RESUMABLE_KEYS = (
    "output_dir", "overwrite", "limit", "subsample", "debug", "data_dir",
    # how and where requests run, not what they produce
    "predictor_conf.batch_size", "predictor_conf.chunk_size", "predictor_conf.show_progress",
    "predictor_conf.base_url", "predictor_conf.max_concurrency", "predictor_conf.timeout_s",
    "predictor_conf.max_retries", "predictor_conf.backoff.initial_s", "predictor_conf.backoff.max_s",
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def check_resumable(run: RunDir, cfg: EvalConfig) -> None:
    """Refuse to add predictions made under a different config to the run directory."""
    on_disk = run.config()
    if on_disk is None:
        return
    ignored = RESUMABLE_KEYS + tuple(f"dataset.{k}" for k in cfg.task.non_prompt_options)
    old, new = _flatten(on_disk.resolved), _flatten(cfg.resolved)
    differing = [k for k in sorted(set(old) | set(new))
                 if old.get(k) != new.get(k) and not k.startswith("model.") and k not in ignored]
    version_on_disk = run.run_info().task.version
    if version_on_disk not in (None, cfg.task.version):
        differing.append(f"task version ({version_on_disk} on disk, {cfg.task.version} now)")
    if differing:
        changes = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" if k in old or k in new else k
                            for k in differing[:6])
        raise UsageError(f"{run.path} holds a run with a different config ({changes}): use another "
                         "output_dir, or overwrite=true to start over")


def begin_run(run: RunDir, cfg: EvalConfig, *, overwrite: bool, dataset: dict[str, Any] | None = None) -> None:
    """Create (or reset) the run directory and record the config, environment and the dataset's fingerprint;
    sessions already recorded are kept."""
    if overwrite:
        run.clear()
    info = run.run_info()
    info.environment = environment()
    info.task = TaskInfo(name=cfg.task.name, version=cfg.task.version, dataset=dataset)
    info.model = ModelInfo(model_name=cfg.resolved["model_name"], precision=cfg.resolved["precision"],
                           quantization_config=quantization_metadata(str(cfg.resolved["model_name"])))
    run.write_config(RunConfig.from_json(cfg.resolved))
    run.write_run_info(info)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}"""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def select_samples(samples: list[Sample], *, debug: bool, limit: int | None, subsample: int | None = None,
                   strata: tuple[str, ...] = ()) -> list[Sample]:
    """debug: DEBUG_SAMPLES spread evenly over the dataset (every subject or level shows up); subsample: a seeded
    stratified draw of N (`stratified_subsample`); limit: the first N of what is left."""
    if debug and len(samples) > DEBUG_SAMPLES:
        step = (len(samples) - 1) / (DEBUG_SAMPLES - 1)
        samples = [samples[round(i * step)] for i in range(DEBUG_SAMPLES)]
    if subsample:
        samples = stratified_subsample(samples, subsample, strata)
    return samples[:limit] if limit else samples


def stratified_subsample(samples: list[Sample], n: int, strata: tuple[str, ...]) -> list[Sample]:
    """n samples, each stratum (the samples sharing the item's `strata` fields, e.g. an MMLU-Redux subject) in
    proportion to its size and at least once while n allows, kept in dataset order. Within a stratum samples are
    ranked by a hash of their id, so the draw depends on the ids alone: every precision and backend gets the same
    samples, and a larger n keeps the samples of a smaller one within each stratum."""
    if n >= len(samples):
        return samples
    groups: dict[tuple[str, ...], list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[tuple(str(sample.item.get(key)) for key in strata)].append(sample)
    ranked = {key: sorted(members, key=lambda s: hashlib.sha256(f"{SUBSAMPLE_SALT}/{s.id}".encode()).hexdigest())
              for key, members in groups.items()}
    quota = {key: n * len(members) / len(samples) for key, members in groups.items()}
    take = {key: min(len(groups[key]), max(1 if n >= len(groups) else 0, math.floor(q))) for key, q in quota.items()}
    by_remainder = sorted(groups, key=lambda key: (take[key] - quota[key], key))
    while sum(take.values()) < n:  # the strata furthest below their share first
        for key in by_remainder:
            if sum(take.values()) < n and take[key] < len(groups[key]):
                take[key] += 1
    while sum(take.values()) > n:  # the minimum of one overshot: trim the largest strata
        largest = max(take, key=lambda key: (take[key], key))
        take[largest] -= 1
    chosen = {s.id for key, members in ranked.items() for s in members[:take[key]]}
    return [s for s in samples if s.id in chosen]


def evaluate(cfg: EvalConfig) -> RunDir:
    """Predict every selected sample not yet in the run directory, then score the whole run."""
    from lowbit.predictors import make_predictor
    from lowbit.quant.safetensors_io import check_checkpoint_files

    resolved = cfg.resolved
    run = RunDir(cfg.output_dir)
    overwrite = bool(resolved["overwrite"])
    run.check_writable()
    if not overwrite:
        check_resumable(run, cfg)
    chat = get_chat_format(cfg.sampling.template)
    samples = select_samples(cfg.task.load(resolved["data_dir"]), debug=resolved["debug"], limit=resolved["limit"],
                             subsample=resolved["subsample"], strata=cfg.task.strata)
    if not samples:
        raise UsageError(f"{cfg.task.name} selected no samples: check dataset options and limit")
    dataset = cfg.task.dataset_fingerprint()
    recorded = run.run_info().task.dataset
    if not overwrite and dataset is not None and recorded is not None and recorded != dataset:
        differing = ", ".join(k for k in sorted(set(recorded) | set(dataset)) if recorded.get(k) != dataset.get(k))
        raise UsageError(f"{run.path} holds predictions on other {cfg.task.name} data (its dataset fingerprint differs "
                         f"in {differing}): use another output_dir, or overwrite=true to start over")
    done = set() if overwrite else run.predicted_ids()
    todo = [s for s in samples if s.id not in done]
    log.info("%s: %d samples, %d already predicted, %d to go", cfg.task.name, len(samples), len(samples) - len(todo),
             len(todo))
    if todo or overwrite or run.config() is None:
        if Path(str(resolved["model_name"])).expanduser().is_dir():
            check_checkpoint_files(Path(str(resolved["model_name"])).expanduser())
        started, clock = _now(), time.perf_counter()
        predictor = make_predictor(str(resolved["model_name"]), cfg.predictor_options)
        predictor.check_sampling(cfg.sampling)
        load_seconds = time.perf_counter() - clock
        prompts = [predictor.render(s.messages, chat.template_kwargs(cfg.sampling)) for s in todo]
        begin_run(run, cfg, overwrite=overwrite, dataset=dataset)
        run.remove_stale_temporaries()
        predicted = 0

        def session(finished: str | None) -> Session:
            return Session.from_json({
                "started": started, "finished": finished, "wall_seconds": round(time.perf_counter() - clock, 3),
                "predicted": predicted, "resumed_from": len(samples) - len(todo),
                "model_load_seconds": round(load_seconds, 3), "predictor": predictor.describe(),
                **predictor.stats.to_json(), **peak_memory(),
            })

        index = len(run.record_session(session(None)).sessions) - 1  # recorded now, updated as chunks land
        with run.prediction_writer() as writer:
            for chunk in predictor.generate(prompts, cfg.sampling, seed=resolved["seed"],
                                            keep_special_tokens=chat.keep_special_tokens):
                chunk = list(chunk)
                writer.append(
                    Prediction(
                        id=todo[i].id, prompt=prompts[i], item=todo[i].item, messages=todo[i].messages,
                        completions=[_completion(chat, predictor, prompts[i], g) for g in generations],
                    ).to_json()
                    for i, generations in chunk
                )
                predicted += len(chunk)
                run.update_session(index, session(None))
        run.update_session(index, session(_now()))
        predictor.close()
    score_run(run, cfg.task)
    return run


def _completion(chat: ChatFormat, predictor: Predictor, prompt: str, generation: Generation) -> Completion:
    completion = split_completion(chat, prompt, generation)
    completion.reasoning_tokens = predictor.count_tokens(completion.reasoning) if completion.reasoning else 0
    return completion


def score_run(run: RunDir, task: Task) -> dict[str, Any]:
    """(Re)score every prediction in the run directory with the task's current scorer; returns the metrics as
    written (their JSON)."""
    run.check_writable()
    run.remove_stale_temporaries()
    predictions = run.predictions()
    if not predictions:
        raise UsageError(f"{run.file(PREDICTIONS)} has no predictions to score")
    clock = time.perf_counter()
    rows = task.score_many(predictions)
    aggregate = task.aggregate(rows)
    metrics = Metrics(
        task=task.name, task_version=task.version, headline=task.headline_metric, scored_at=_now(),
        dataset_options=asdict(task.options), metrics=aggregate.pop("metrics"), groups=aggregate.pop("groups", {}),
        extra=aggregate, generation=generation_summary(predictions),
        scoring_seconds=round(time.perf_counter() - clock, 3),
    )
    run.write_scores([ScoreRow.from_json(row, f"{task.name} score row") for row in rows], metrics)
    return metrics.to_json()
