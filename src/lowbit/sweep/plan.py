"""A sweep file expanded into cells and jobs, every cell checked by lowbit's own validators first.

    <sweep out>/<model>/<precision>/<task>              one eval run directory per cell
    <sweep out>/checkpoints/<model>/<precision>         one checkpoint per recipe, made by one quantize job

An eval of a recipe precision depends on the quantize job of its checkpoint. `build_plan` checks everything
before anything is submitted or written: each cell's overrides through `lowbit.config.resolve_eval` (models, tasks,
sampling blocks, override keys; the source checkpoint stands in for a checkpoint not made yet), each recipe
through `lowbit quantize`'s own option parsing, that no two jobs write the same directory, and that the output
root is writable.
"""

from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from lowbit.errors import UsageError
from lowbit.sweep.jobs import EVAL, QUANTIZE, Job, Resources
from lowbit.sweep.spec import SOURCE, ModelSpec, PrecisionSpec, SweepSpec, TaskSpec, resources

CHECKPOINTS = "checkpoints"


@dataclass(frozen=True)
class Cell:
    """One model x precision x task: an eval job and what the report needs to place it."""

    model: str
    precision: str
    task: str  # the column: the task's name, with "-seed<N>" per seed when the task lists seeds
    job: Job


@dataclass(frozen=True)
class Plan:
    spec: SweepSpec
    cells: list[Cell]
    quantize_jobs: list[Job]

    @property
    def jobs(self) -> list[Job]:
        """Every job, each after the jobs it depends on."""
        return [*self.quantize_jobs, *(cell.job for cell in self.cells)]

    @property
    def sweep_dir(self) -> Path:
        return self.spec.output_dir

    def job(self, name: str) -> Job:
        return next(job for job in self.jobs if job.name == name)


def build_plan(spec: SweepSpec, *, validate: bool = True) -> Plan:
    quantize_jobs: dict[tuple[str, str], Job] = {}
    cells: list[Cell] = []
    for model in spec.models.values():
        try:
            hub_id = model_hub_id(model.model)
        except UsageError as e:
            raise UsageError(f"models.{model.name}.model: {e}") from e
        source = model.source or hub_id
        for precision_name in model.precisions:
            precision = spec.precisions[precision_name]
            if precision.recipe is not None:
                quantize_jobs[model.name, precision.name] = _quantize_job(spec, model, precision, source)
            for task_name in model.tasks or tuple(spec.tasks):
                task = spec.tasks[task_name]
                for seed in task.seeds or (None,):
                    column = task.name if seed is None else f"{task.name}-seed{seed}"
                    cells.append(_cell(spec, model, precision, task, column, seed, source, quantize_jobs))
    plan = Plan(spec=spec, cells=cells, quantize_jobs=list(quantize_jobs.values()))
    if validate:
        check_plan(plan)
    return plan


def model_hub_id(model_config: str) -> str:
    """The hub id of a lowbit model config (conf/model/<name>.yaml), or the one-line error naming the configs."""
    from lowbit.config import CONFIG_MODULE, group_choices
    from lowbit.registry import unknown_name

    if model_config not in group_choices("model"):
        raise unknown_name("model config", model_config, group_choices("model"))
    text = (importlib.resources.files(CONFIG_MODULE) / "model" / f"{model_config}.yaml").read_text()
    return str(yaml.safe_load(text)["model_name"])


def _checkpoint(spec: SweepSpec, model: ModelSpec, precision: PrecisionSpec, source: str) -> str:
    if precision.recipe is not None:
        return str(spec.output_dir / CHECKPOINTS / model.name / precision.name)
    checkpoint = precision.checkpoint
    if isinstance(checkpoint, dict):
        if model.name not in checkpoint:
            raise UsageError(f"precisions.{precision.name}.checkpoint names no checkpoint for model '{model.name}': "
                             f"add {model.name}: <hub id or directory>, or drop {precision.name} from "
                             f"models.{model.name}.precisions")
        checkpoint = checkpoint[model.name]
    if checkpoint is None or checkpoint == SOURCE:  # emulation runs on the source checkpoint
        return source
    return _absolute_if_local(checkpoint)


def _absolute_if_local(path: str) -> str:
    """A local directory as an absolute path (jobs may run elsewhere); a hub id as it is."""
    if path.startswith(("/", "./", "../", "~")) or Path(path).is_dir():
        return str(Path(path).expanduser().resolve())
    return path


def _quantize_job(spec: SweepSpec, model: ModelSpec, precision: PrecisionSpec, source: str) -> Job:
    options = {**spec.quantize, **precision.recipe, "model": _absolute_if_local(source),
               "out": _checkpoint(spec, model, precision, source)}
    argv = ("quantize", *(format_override(key, value) for key, value in options.items()))
    return Job(name=f"quantize/{model.name}/{precision.name}", kind=QUANTIZE, argv=argv, output_dir=options["out"],
               resources=resources(spec.quantize_resources, model.quantize_resources))


def _cell(spec: SweepSpec, model: ModelSpec, precision: PrecisionSpec, task: TaskSpec, column: str,
          seed: int | None, source: str, quantize_jobs: dict[tuple[str, str], Job]) -> Cell:
    output_dir = spec.output_dir / model.name / precision.name / column
    given = {"model": model.model, "model_name": _absolute_if_local(_checkpoint(spec, model, precision, source)),
             "precision": precision.name, "eval_dataset": task.eval_dataset}
    if task.eval_dataset_config:
        given["eval_dataset_config"] = task.eval_dataset_config
    if seed is not None:
        given["seed"] = seed
    if task.repeats is not None:
        given["sampling.num_return_sequences"] = task.repeats
    if precision.emulate is not None:
        given["predictor"] = "transformers"
        given.update({f"predictor_conf.{key}": value for key, value in precision.emulate.items()})
    rules = [rule for rule in spec.cells if rule.matches(model.name, precision.name, task.name)]
    items = merge_overrides([format_override(k, v) for k, v in given.items()], spec.overrides, model.overrides,
                            precision.overrides, task.overrides, *(rule.overrides for rule in rules))
    items = [_absolute_data_dir(item) for item in items]
    items.append(format_override("output_dir", str(output_dir)))
    quantize = quantize_jobs.get((model.name, precision.name))
    job = Job(name=f"eval/{model.name}/{precision.name}/{column}", kind=EVAL, argv=("eval", *items),
              output_dir=str(output_dir), depends_on=(quantize.name,) if quantize else (),
              resources=_eval_resources(resources(spec.resources, model.resources,
                                                  *(rule.resources for rule in rules)), items))
    return Cell(model=model.name, precision=precision.name, task=column, job=job)


def _absolute_data_dir(item: str) -> str:
    """data_dir= as an absolute path when it is a local directory, so a job reads it from any working directory."""
    key, _, value = item.partition("=")
    if key != "data_dir" or value in ("", "null") or not Path(value).expanduser().is_dir():
        return item
    return format_override(key, str(Path(value).expanduser().resolve()))


def _eval_resources(base: Resources, items: list[str]) -> Resources:
    """At least as many GPUs as the cell's tensor x pipeline parallelism asks for."""
    from lowbit.overrides import parse

    values = {o.key: o.value for o in parse(items)}
    parallel = 1
    for key in ("predictor_conf.tensor_parallel_size", "predictor_conf.pipeline_parallel_size"):
        if isinstance(values.get(key), int):
            parallel *= values[key]
    return replace(base, gpus=parallel) if parallel > max(base.gpus, 1) else base


def merge_overrides(*groups) -> list[str]:
    """key=value items, later groups winning per key, in the order keys first appear."""
    from lowbit.overrides import parse

    merged: dict[str, str] = {}
    for group in groups:
        for override in parse(list(group)):
            merged[override.key] = override.text
    return list(merged.values())


def format_override(key: str, value) -> str:
    """key=value in Hydra's grammar (strings quoted where the grammar needs it); refused if it does not read back."""
    from lowbit.overrides import parse

    text = f"{key}={_hydra_value(value)}"
    try:
        (parsed,) = parse([text])
        ok = parsed.value == value or (isinstance(value, str) and str(parsed.value) == value)
    except UsageError:
        ok = False
    if not ok:
        raise UsageError(f"{key}: the value {value!r} cannot be passed as a key=value option: simplify it")
    return text


def _hydra_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    text = str(value)
    if text and all(c.isalnum() or c in "._-/:~+" for c in text) and not text[0].isdigit():
        return text
    return "'" + text.replace("'", "\\'") + "'"  # Hydra keeps other backslashes as they are


# ------------------------------------------------------------------------------------------------ checks


def check_plan(plan: Plan) -> None:
    """Refuse the sweep, in one line, before anything is submitted or written."""
    check_writable(plan.sweep_dir)
    owners: dict[str, str] = {}
    for job in plan.jobs:
        key = os.path.normcase(os.path.normpath(job.output_dir)).lower()
        if key in owners:
            raise UsageError(f"jobs {owners[key]} and {job.name} would both write {job.output_dir}: give the models, "
                             "precisions or tasks distinct names")
        owners[key] = job.name
    for job in plan.quantize_jobs:
        check_recipe(job)
    checked: set[tuple[str, ...]] = set()
    for cell in plan.cells:
        check_eval(cell, plan, checked)


def check_writable(directory: Path) -> None:
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"output_dir {directory} cannot be written ({existing} is not a writable directory): "
                         "choose another output_dir= in the sweep file or on the command line")


def check_recipe(job: Job) -> None:
    from lowbit.quant.quantize_cli import build_request

    model = next(item for item in job.argv if item.startswith("model=")).partition("=")[2]
    if model.startswith("/") and not Path(model).is_dir():
        raise UsageError(f"{job.name}: the source checkpoint {model} is not a directory: set models.<name>.source "
                         "to a checkpoint directory or a hub id")
    where = "precisions." + job.name.split("/")[-1] + ".recipe"
    try:
        request = build_request(list(job.argv[1:]))
    except UsageError as e:
        raise UsageError(f"{where}: {e}") from e
    made = _provenance(Path(job.output_dir))
    asked = {"scheme": {str(request.scheme), dict(item.split("=", 1) for item in job.argv[1:])["scheme"]},
             "method": {str(request.method)}}
    for key, values in asked.items():
        if key in made and str(made[key]) not in values:
            raise UsageError(f"{job.output_dir} was made with {key}={made[key]} but {where} asks for "
                             f"{key}={sorted(values)[0]}: delete that checkpoint and its cells, or give the precision "
                             "another name")


def _provenance(checkpoint: Path) -> dict:
    """The `lowbit` record of a checkpoint's quantization_config ({} when there is no checkpoint there yet)."""
    import json

    try:
        config = json.loads((checkpoint / "config.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    record = (config.get("quantization_config") or {}).get("lowbit")
    return record if isinstance(record, dict) else {}


# Keys that differ between cells without changing what the eval validation checks (a local model_name is
# checked to be a directory on its own), so cells differing only in them are validated once.
_PER_CELL_KEYS = ("model_name", "precision", "output_dir")


def check_eval(cell: Cell, plan: Plan, checked: set[tuple[str, ...]]) -> None:
    """The cell's overrides through the eval config resolution; a checkpoint still to be made is checked as its
    model's source checkpoint."""
    from lowbit.config import resolve_eval

    items = list(cell.job.argv[1:])
    model_name = next(item.partition("=")[2] for item in items if item.startswith("model_name="))
    if not cell.job.depends_on and model_name.startswith("/") and not Path(model_name).is_dir():
        raise UsageError(f"cell {cell.model}/{cell.precision}/{cell.task}: checkpoint {model_name} is not a "
                         "directory: fix the precision's checkpoint or the model's source")
    key = tuple(item for item in items if item.partition("=")[0] not in _PER_CELL_KEYS)
    if key in checked:
        return
    checked.add(key)
    if cell.job.depends_on:
        model = plan.spec.models[cell.model]
        source = model.source or model_hub_id(model.model)
        items = [f"model_name={_hydra_value(_absolute_if_local(source))}" if item.startswith("model_name=") else item
                 for item in items]
    try:
        resolve_eval(items)
    except UsageError as e:
        raise UsageError(f"cell {cell.model}/{cell.precision}/{cell.task}: {e}") from e
