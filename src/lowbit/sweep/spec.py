"""The sweep file: models x precisions x tasks, with shared and per-cell overrides.

    name: qwen3-core                      # a label for reports
    output_dir: outputs/sweeps/core       # cells: <output_dir>/<model>/<precision>/<task>
    overrides: [predictor_conf.max_num_seqs=256]    # lowbit eval overrides of every cell
    resources: {gpus: 1, cpus: 8, mem_gb: 64, time_min: 240}     # each eval job
    quantize_resources: {gpus: 1, cpus: 16, mem_gb: 128}          # each quantize job
    quantize: {device: cuda, backend: triton}                     # options of every recipe
    models:
      qwen3_4B: {precisions: [bf16, nvfp4]}          # model: lowbit model config (default: the key);
                                                     # source: BF16 checkpoint (default: the config's hub id);
                                                     # tasks: a subset; overrides, resources, quantize_resources
    precisions:
      bf16: {checkpoint: source}                     # an existing checkpoint: hub id, directory, `source`, or
                                                     #   {<model>: <hub id or directory>} per model
      nvfp4: {recipe: {scheme: nvfp4}}               # derived from the source by `lowbit quantize`
      w4a4: {emulate: {act_quant: nvfp4, weight_quant: nvfp4}}   # the transformers predictor fake-quantizes
    tasks:
      mmlu-redux: {overrides: [dataset.subset=seed30]}           # eval_dataset (default: the key),
      math500-nonthinking: {eval_dataset: math500, eval_dataset_config: math500-nonthinking}
      aime25: {repeats: 4, seeds: [42, 43]}                      # eval_dataset_config, overrides, repeats, seeds
    cells:                                           # overrides for the cells matching model/precision/task
      - {model: qwen3_30B, overrides: [predictor_conf.tensor_parallel_size=2]}
    launcher: {name: local, local: {max_parallel: 2}, slurm: {partition: gpu}}
    tracking: {name: mlflow}                         # log finished cells to MLflow (lowbit.sweep.tracking)

The file is composed with Hydra (a `defaults:` list may pull shared blocks from files beside it) and the
command line's key=value items are applied on top (`launcher=slurm` picks the launcher, `tracking=mlflow` the
tracker). `load_sweep` checks the
file's shape; `plan.py` checks each cell with lowbit's own validators.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lowbit.errors import UsageError
from lowbit.overrides import check_mapping, did_you_mean
from lowbit.sweep.jobs import Resources

SOURCE = "source"  # checkpoint: source -> the model's own BF16 checkpoint
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # model, precision and task names are directory names
# Overrides the sweep sets itself: each cell's directory, label, task and model come from its place in the matrix.
RESERVED_OVERRIDES = {
    "output_dir": "the sweep lays out <output_dir>/<model>/<precision>/<task> itself",
    "overwrite": "a rerun resumes unfinished cells; delete a cell's directory to start it over",
    "model": "name the model config under models.<name>.model",
    "model_name": "give the checkpoint as precisions.<name>.checkpoint",
    "precision": "the precision's name is its label",
    "eval_dataset": "name the benchmark under tasks.<name>.eval_dataset",
    "eval_dataset_config": "set it under tasks.<name>.eval_dataset_config",
}


@dataclass(frozen=True)
class PrecisionSpec:
    name: str
    checkpoint: str | dict[str, str] | None = None
    recipe: dict[str, Any] | None = None
    emulate: dict[str, Any] | None = None
    overrides: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        return "checkpoint" if self.checkpoint is not None else "recipe" if self.recipe is not None else "emulate"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model: str  # lowbit model config
    source: str | None  # BF16 checkpoint; None = the model config's hub id
    precisions: tuple[str, ...]
    tasks: tuple[str, ...] | None = None
    overrides: tuple[str, ...] = ()
    resources: dict[str, Any] = field(default_factory=dict)
    quantize_resources: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    eval_dataset: str
    eval_dataset_config: str | None = None
    overrides: tuple[str, ...] = ()
    repeats: int | None = None  # completions per prompt (sampling.num_return_sequences)
    seeds: tuple[int, ...] = ()  # one cell per seed; none = the config's seed


@dataclass(frozen=True)
class CellRule:
    """Overrides (and resources) for the cells whose model / precision / task match (None matches any)."""

    model: str | None = None
    precision: str | None = None
    task: str | None = None
    overrides: tuple[str, ...] = ()
    resources: dict[str, Any] = field(default_factory=dict)

    def matches(self, model: str, precision: str, task: str) -> bool:
        return all(want is None or want == have for want, have in
                   ((self.model, model), (self.precision, precision), (self.task, task)))


@dataclass(frozen=True)
class SweepSpec:
    path: Path
    name: str
    output_dir: Path  # absolute
    models: dict[str, ModelSpec]
    precisions: dict[str, PrecisionSpec]
    tasks: dict[str, TaskSpec]
    overrides: tuple[str, ...] = ()
    resources: dict[str, Any] = field(default_factory=dict)
    quantize_resources: dict[str, Any] = field(default_factory=dict)
    quantize: dict[str, Any] = field(default_factory=dict)
    cells: tuple[CellRule, ...] = ()
    launcher: str = "local"
    launcher_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # launcher name -> its options
    tracking: str | dict[str, Any] | None = None  # lowbit.sweep.tracking's block: where finished cells are logged


TOP_KEYS = {"name": str, "output_dir": str, "overrides": list[str], "resources": dict, "quantize_resources": dict,
            "quantize": dict, "models": dict, "precisions": dict, "tasks": dict, "cells": list, "launcher": dict, "tracking": str | dict}
MODEL_KEYS = {"model": str, "source": str, "precisions": list[str], "tasks": list[str], "overrides": list[str],
              "resources": dict, "quantize_resources": dict}
PRECISION_KEYS = {"checkpoint": str | dict, "recipe": dict, "emulate": dict, "overrides": list[str]}
TASK_KEYS = {"eval_dataset": str, "eval_dataset_config": str, "overrides": list[str], "repeats": int,
             "seeds": list[int]}
CELL_KEYS = {"model": str, "precision": str, "task": str, "overrides": list[str], "resources": dict}
RESOURCE_KEYS = {"gpus": int, "cpus": int, "mem_gb": int | None, "time_min": int | None}
EMULATE_KEYS = ("act_quant", "weight_quant", "quant_targets", "quant_ignore")
RECIPE_HINT = "recipe: {scheme: nvfp4}"


def load_sweep(path: str | Path, items: list[str] = ()) -> SweepSpec:
    """The sweep file at `path` composed with Hydra, `items` (key=value) applied, its shape checked."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"sweep file {path} does not exist: give a YAML file such as sweeps/tiny-cpu.yaml")
    data = compose_file(path, list(items))
    return parse_sweep(path, data)


def compose_file(path: Path, items: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from lowbit.overrides import parse

    rewritten = []
    for override in parse(items):
        key = override.key
        if key in ("launcher", "tracking") and not isinstance(override.value, dict):  # launcher=slurm
            key, text = f"{key}.name", f"{key}.name={override.text.partition('=')[2]}"
        else:
            text = override.text.lstrip("+")
        top = key.split(".")[0]
        if top not in TOP_KEYS:
            raise UsageError(f"unknown sweep key '{top}'.{did_you_mean(top, TOP_KEYS)} "
                             f"Sweep keys: {', '.join(TOP_KEYS)}")
        rewritten.append("++" + text if not text.startswith("~") else text)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(path.parent.resolve()), version_base="1.3"):
            cfg = compose(config_name=path.name.removesuffix(".yaml").removesuffix(".yml"), overrides=rewritten)
        data = OmegaConf.to_container(cfg, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise UsageError(f"{path}: {str(e).splitlines()[0]}") from e
    finally:
        GlobalHydra.instance().clear()
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a mapping of sweep keys: start from sweeps/tiny-cpu.yaml")
    return data


def parse_sweep(path: Path, data: dict[str, Any]) -> SweepSpec:
    top = check_mapping(data, TOP_KEYS, f"{path}", "sweep key")
    for key in ("models", "precisions", "tasks"):
        if not top.get(key):
            raise UsageError(f"{path} names no {key}: add a '{key}:' block (see sweeps/tiny-cpu.yaml)")
    precisions = {name: _precision(name, spec) for name, spec in _named(top["precisions"], "precision").items()}
    tasks = {name: _task(name, spec) for name, spec in _named(top["tasks"], "task").items()}
    models = {name: _model(name, spec, precisions, tasks) for name, spec in _named(top["models"], "model").items()}
    cells = tuple(_cell(i, rule, models, precisions, tasks) for i, rule in enumerate(top.get("cells") or []))
    launcher_block = dict(top.get("launcher") or {})
    launcher = launcher_block.pop("name", "local")
    for name, options in launcher_block.items():
        if not isinstance(options, dict):
            raise UsageError(f"launcher.{name} must be a mapping of {name} launcher options, got {options!r}")
    shared = _overrides(top.get("overrides"), "overrides")
    output_dir = top.get("output_dir") or f"outputs/sweeps/{path.stem}"
    for where, block in (("resources", top.get("resources")), ("quantize_resources", top.get("quantize_resources"))):
        _resources(block, where)
    tracking = top.get("tracking")
    if tracking is not None:
        from lowbit.sweep.tracking import tracking_options

        tracking_options(tracking)
    return SweepSpec(
        path=path, name=str(top.get("name") or path.stem), output_dir=Path(output_dir).expanduser().resolve(),
        models=models, precisions=precisions, tasks=tasks, overrides=shared,
        resources=dict(top.get("resources") or {}), quantize_resources=dict(top.get("quantize_resources") or {}),
        quantize=dict(top.get("quantize") or {}), cells=cells, launcher=str(launcher),
        launcher_options=launcher_block, tracking=tracking,
    )


def resources(*blocks: dict[str, Any] | None) -> Resources:
    """Resources from blocks, later ones overriding earlier ones key by key."""
    merged: dict[str, Any] = {}
    for block in blocks:
        merged.update(block or {})
    return Resources(**merged)


# ------------------------------------------------------------------------------------------------ entries


def _precision(name: str, spec: dict[str, Any]) -> PrecisionSpec:
    where = f"precisions.{name}"
    values = check_mapping(spec, PRECISION_KEYS, where, "precision key")
    given = [key for key in ("checkpoint", "recipe", "emulate") if values.get(key) is not None]
    if not given:
        raise UsageError(f"precision '{name}' has neither checkpoint nor recipe: give {where}.checkpoint "
                         f"(hub id, directory or 'source'), {where}.{RECIPE_HINT} or {where}.emulate: "
                         "{act_quant: nvfp4, weight_quant: nvfp4}")
    if len(given) > 1:
        raise UsageError(f"precision '{name}' gives both {given[0]} and {given[1]}: keep one of them")
    if values.get("recipe") is not None and "scheme" not in values["recipe"]:
        raise UsageError(f"{where}.recipe names no scheme: add one, e.g. {RECIPE_HINT}")
    emulate = values.get("emulate")
    if emulate is not None:
        unknown = [key for key in emulate if key not in EMULATE_KEYS]
        if unknown or not emulate:
            raise UsageError(f"{where}.emulate takes {', '.join(EMULATE_KEYS)}"
                             f"{f', not {unknown[0]}' if unknown else ''}: e.g. emulate: {{act_quant: nvfp4}}")
    checkpoint = values.get("checkpoint")
    if isinstance(checkpoint, dict):
        checkpoint = {str(k): str(v) for k, v in checkpoint.items()}
    return PrecisionSpec(name=name, checkpoint=checkpoint, recipe=values.get("recipe"), emulate=emulate,
                         overrides=_overrides(values.get("overrides"), f"{where}.overrides"))


def _task(name: str, spec: dict[str, Any]) -> TaskSpec:
    where = f"tasks.{name}"
    values = check_mapping(spec, TASK_KEYS, where, "task key")
    repeats = values.get("repeats")
    if repeats is not None and repeats < 1:
        raise UsageError(f"{where}.repeats must be a positive integer, got {repeats}")
    seeds = tuple(values.get("seeds") or ())
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"{where}.seeds repeats a seed ({list(seeds)}): list each seed once")
    return TaskSpec(name=name, eval_dataset=str(values.get("eval_dataset") or name),
                    eval_dataset_config=values.get("eval_dataset_config"),
                    overrides=_overrides(values.get("overrides"), f"{where}.overrides"), repeats=repeats, seeds=seeds)


def _model(name: str, spec: dict[str, Any], precisions: dict[str, PrecisionSpec],
           tasks: dict[str, TaskSpec]) -> ModelSpec:
    where = f"models.{name}"
    values = check_mapping(spec, MODEL_KEYS, where, "model key")
    chosen = values.get("precisions")
    if not chosen:
        raise UsageError(f"{where} lists no precisions: add precisions: [{', '.join(list(precisions)[:2])}]")
    for precision in chosen:
        if precision not in precisions:
            raise UsageError(f"{where}: unknown precision '{precision}'.{did_you_mean(precision, precisions)} "
                             f"Defined under precisions: {', '.join(precisions)}")
    for task in values.get("tasks") or ():
        if task not in tasks:
            raise UsageError(f"{where}: unknown task '{task}'.{did_you_mean(task, tasks)} "
                             f"Defined under tasks: {', '.join(tasks)}")
    _resources(values.get("resources"), f"{where}.resources")
    _resources(values.get("quantize_resources"), f"{where}.quantize_resources")
    task_subset = values.get("tasks")
    return ModelSpec(name=name, model=str(values.get("model") or name), source=values.get("source"),
                     precisions=tuple(dict.fromkeys(chosen)),
                     tasks=tuple(dict.fromkeys(task_subset)) if task_subset else None,
                     overrides=_overrides(values.get("overrides"), f"{where}.overrides"),
                     resources=dict(values.get("resources") or {}),
                     quantize_resources=dict(values.get("quantize_resources") or {}))


def _cell(index: int, rule: Any, models: dict, precisions: dict, tasks: dict) -> CellRule:
    where = f"cells[{index}]"
    if not isinstance(rule, dict):
        raise UsageError(f"{where} must be a mapping like {{model: <name>, overrides: [k=v]}}, got {rule!r}")
    values = check_mapping(rule, CELL_KEYS, where, "cell key")
    for key, defined in (("model", models), ("precision", precisions), ("task", tasks)):
        name = values.get(key)
        if name is not None and name not in defined:
            raise UsageError(f"{where}: unknown {key} '{name}'.{did_you_mean(name, defined)} "
                             f"Defined: {', '.join(defined)}")
    _resources(values.get("resources"), f"{where}.resources")
    return CellRule(model=values.get("model"), precision=values.get("precision"), task=values.get("task"),
                    overrides=_overrides(values.get("overrides"), f"{where}.overrides"),
                    resources=dict(values.get("resources") or {}))


# ------------------------------------------------------------------------------------------------ checks


def _named(block: Any, kind: str) -> dict[str, dict[str, Any]]:
    if not isinstance(block, dict):
        raise UsageError(f"{kind}s must be a mapping of names to entries, got {type(block).__name__}")
    named = {}
    for name, spec in block.items():
        name = str(name)
        if not NAME.match(name):
            raise UsageError(f"{kind} name '{name}' is not a plain directory name: use letters, digits, '.', "
                             "'_' and '-'")
        named[name] = dict(spec or {})
    return named


def _resources(block: Any, where: str) -> None:
    if block is None:
        return
    values = check_mapping(block, RESOURCE_KEYS, where, "resource")
    for key, value in values.items():
        if value is not None and value < (0 if key == "gpus" else 1):
            raise UsageError(f"{where}.{key} must be {'>= 0' if key == 'gpus' else 'positive'}, got {value}")


def _overrides(items: Any, where: str) -> tuple[str, ...]:
    """Eval overrides as key=value strings; keys the sweep sets itself are refused, naming where they go."""
    from lowbit.overrides import parse

    items = [str(item) for item in (items or [])]
    for override in parse(items):
        if override.key in RESERVED_OVERRIDES:
            raise UsageError(f"{where}: {override.key}= cannot be overridden in a sweep: "
                             f"{RESERVED_OVERRIDES[override.key]}")
    return tuple(items)
