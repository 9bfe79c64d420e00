"""Composing and validating an evaluation config from Hydra overrides.

`lowbit eval key=value ...` composes conf/config.yaml with the chosen model and predictor configs (Hydra's
compose API; overrides parsed by lowbit.overrides), then checks every override against what exists and every
value against its key's type (TOP_LEVEL_TYPES, Sampling, the predictor's options), so that a typo or a wrong
type fails with one line naming the key, before any model is loaded. `dataset.*` keys belong to the chosen task
and are validated against its Options dataclass.
"""

from __future__ import annotations

import importlib.resources
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lowbit.chat import get_chat_format
from lowbit.errors import UsageError
from lowbit.overrides import check_type, did_you_mean, parse
from lowbit.predictors.options import option_type, predictor_options
from lowbit.sampling import Sampling
from lowbit.tasks import Task, make_task
from lowbit.tasks.prompts import PromptContext

CONFIG_MODULE = "lowbit.conf"
GROUPS = ("model", "predictor")
# The types of the top-level keys; their defaults (and meaning) are in conf/config.yaml.
TOP_LEVEL_TYPES: dict[str, Any] = {
    "model_name": str, "precision": str, "eval_dataset": str, "eval_dataset_config": str | None,
    "output_dir": str | None, "data_dir": str | None, "debug": bool, "limit": int | None, "subsample": int | None, "seed": int,
    "overwrite": bool,
}
SAMPLING_TYPES: dict[str, Any] = typing.get_type_hints(Sampling)
_ABSENT = object()


def group_choices(group: str) -> list[str]:
    folder = importlib.resources.files(CONFIG_MODULE) / group
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


# The reference study's own spellings where their meaning is lowbit's: accepted and recorded in lowbit's.
STUDY_KEYS = {"eval_predictor": "predictor"}
STUDY_PREFIXES = {"predictor_conf.vllm.": "predictor_conf."}
# Its spellings that have no one-to-one meaning here: one line naming lowbit's.
STUDY_HINTS = {
    "model_config": "lowbit names a model config with model=<name> (e.g. model=qwen3_4B) and a checkpoint with "
                    "model_name=<dir> precision=<label>",
    "quant_type": "lowbit quantizes with `lowbit quantize scheme=<scheme>` and labels an eval with precision=<label>",
}


def study_spellings(overrides: list[str]) -> list[str]:
    """`overrides` with the reference study's key spellings written as lowbit's."""
    translated = []
    for item in overrides:
        key, sep, value = item.partition("=")
        bare = key.lstrip("+~")
        if bare in STUDY_HINTS:
            raise UsageError(f"unknown config key '{bare}': {STUDY_HINTS[bare]}")
        new = STUDY_KEYS.get(bare) or next((lowbit + bare.removeprefix(study) for study, lowbit
                                            in STUDY_PREFIXES.items() if bare.startswith(study)), bare)
        translated.append(key[:len(key) - len(bare)] + new + sep + value if sep else item)
    return translated


def compose_config(overrides: list[str]) -> DictConfig:
    """conf/config.yaml with `overrides` applied; every override key must exist (or be a dataset.* option) and
    its value must have the key's type."""
    parsed = parse(study_spellings(overrides))
    group_overrides = []
    for override in parsed:
        if override.key in GROUPS:
            choice = override.value
            if choice not in group_choices(override.key):
                raise UsageError(f"unknown {override.key} '{choice}': choose one of "
                                 f"{', '.join(group_choices(override.key))}")
            group_overrides.append(override.text)
    base = _compose(group_overrides)
    rewritten = []
    for override in parsed:
        text = override.text
        if override.key.startswith("dataset.") and not override.prefix:
            text = "++" + text  # task options are validated by the task, not by the YAML
        elif override.key not in GROUPS and not override.key.startswith("dataset.") and not override.prefix:
            _check_key(base, override.key)
            check_type(override.key, override.value, _key_type(base, override.key))
        rewritten.append(text)
    return _compose(rewritten)


def _compose(overrides: list[str]) -> DictConfig:
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise UsageError(f"bad override: {str(e).splitlines()[0]}") from e


def _check_key(cfg: DictConfig, key: str) -> None:
    if OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False) is not _ABSENT:
        return
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
    valid = sorted(node.keys()) if isinstance(node, DictConfig) else []
    where = f"under {parent}" if parent else "at the top level"
    everywhere = [*TOP_LEVEL_TYPES, *(f"{block}.{name}" for block in ("sampling", "predictor_conf")
                                      for name in cfg[block].keys())]
    raise UsageError(f"unknown config key '{key}': valid keys {where} are {', '.join(map(str, valid))}."
                     f"{did_you_mean(key, everywhere)}")


def _key_type(cfg: DictConfig, key: str) -> Any:
    """The type a value of `key` must have; Any for keys whose values the model config or task check."""
    block, _, rest = key.partition(".")
    if key in TOP_LEVEL_TYPES:
        return TOP_LEVEL_TYPES[key]
    if block == "sampling" and rest in SAMPLING_TYPES:
        return SAMPLING_TYPES[rest] | None  # null keeps the sampling block's value
    if block == "predictor_conf" and rest != "name":
        try:
            return option_type(cfg.predictor_conf.name, rest)
        except KeyError:
            return Any
    return Any


@dataclass
class EvalConfig:
    """A validated evaluation: the resolved config plus the objects built from it."""

    resolved: dict[str, Any]  # what config.yaml records
    task: Task
    sampling: Sampling

    @property
    def output_dir(self) -> Path:
        return Path(self.resolved["output_dir"])

    @property
    def predictor_options(self) -> dict[str, Any]:
        return dict(self.resolved["predictor_conf"])


def split_eval_datasets(overrides: list[str]) -> list[list[str]]:
    """One override list per benchmark of `eval_dataset=[a,b]` (or `a,b`), each into its own directory:
    <output_dir>/<name> when output_dir is given, else the default per benchmark. A single benchmark gives the
    overrides back unchanged."""
    parsed = parse(overrides)
    chosen = [o for o in parsed if o.key == "eval_dataset"]
    if not chosen or not isinstance(chosen[-1].value, list):
        return [list(overrides)]
    names = [str(name) for name in chosen[-1].value]
    if not names or len(set(names)) != len(names):
        raise UsageError(f"eval_dataset={chosen[-1].text.partition('=')[2]}: list each benchmark once, "
                         "e.g. eval_dataset=[mmlu-redux,math500]")
    if any(o.key == "eval_dataset_config" for o in parsed):
        raise UsageError("eval_dataset_config names one sampling block but eval_dataset lists several benchmarks: "
                         "run them one by one, or describe them in a sweep file (lowbit sweep run)")
    data_dirs = next((o.value for o in reversed(parsed) if o.key == "data_dir"), None)
    if data_dirs is not None and not (isinstance(data_dirs, dict) and set(map(str, data_dirs)) == set(names)):
        raise UsageError(f"with several benchmarks, give one data_dir each: data_dir={{{names[0]}:<dir>,...}} naming "
                         f"exactly {', '.join(names)}")
    output_dir = next((o.value for o in reversed(parsed) if o.key == "output_dir"), None)
    kept = [o.text for o in parsed if o.key not in ("eval_dataset", "output_dir", "data_dir")]
    return [[*kept, f"eval_dataset={name}",
             *([f"output_dir={Path(str(output_dir)) / name}"] if output_dir else []),
             *([f"data_dir={data_dirs[name]}"] if data_dirs else [])]
            for name in names]


def resolve_eval(overrides: list[str]) -> EvalConfig:
    cfg = compose_config(overrides)
    try:
        resolved: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    except OmegaConfBaseException as e:
        raise UsageError(f"cannot resolve config: {str(e).splitlines()[0]}") from e

    task = make_task(resolved["eval_dataset"], resolved["dataset"])
    block_name = resolved["eval_dataset_config"] or task.sampling_config or resolved["eval_dataset"]
    blocks = resolved["model"]["dataset_configs"]
    if block_name not in blocks:
        raise UsageError(f"model {resolved['model']['model_name']} has no sampling config '{block_name}': "
                         f"set eval_dataset_config= to one of {', '.join(blocks)}")
    sampling = Sampling.from_block(blocks[block_name], resolved["sampling"], where=f"eval_dataset_config={block_name}")
    chat = get_chat_format(sampling.template)
    required = task.required_sequence_length()
    if required is not None and sampling.max_sequence_length < required:
        raise UsageError(f"{task.name} prompts fill {required} tokens but sampling.max_sequence_length is "
                         f"{sampling.max_sequence_length}: pass sampling.max_sequence_length={required} (the model "
                         "must support that context, e.g. with rope scaling)")

    model_name = str(resolved["model_name"])
    if model_name.startswith(("/", "./", "../", "~")) and not Path(model_name).expanduser().is_dir():
        raise UsageError(f"model_name '{model_name}' is not a directory: give a checkpoint directory or a hub id")
    for key, annotation in TOP_LEVEL_TYPES.items():  # the YAML's values too, not only the overrides
        resolved[key] = check_type(key, resolved[key], annotation)
    for key in ("limit", "subsample"):
        if resolved[key] is not None and resolved[key] < 1:
            raise UsageError(f"{key} must be a positive integer, got {resolved[key]}")
    predictor = dict(resolved["predictor_conf"])
    predictor_options(predictor.pop("name"), predictor)
    if not resolved["output_dir"]:
        model_tag = Path(str(resolved["model_name"]).rstrip("/")).name
        resolved["output_dir"] = f"outputs/{model_tag}_{resolved['precision']}_{_run_tag(task.name, block_name)}"
    task.bind_model(model_name, chat.template_kwargs(sampling), PromptContext(sampling.template, block_name))
    resolved["eval_dataset_config"] = block_name
    resolved["sampling"] = sampling.to_json()
    resolved["dataset"] = asdict(task.options)
    return EvalConfig(resolved=resolved, task=task, sampling=sampling)


def _run_tag(task: str, block: str) -> str:
    """The default output directory's task part: the benchmark (ruler-vt-4k, not its shared ruler-32k sampling
    block), or the sampling block where it names a variant of the benchmark (math500-nonthinking)."""
    if block.startswith(task):
        return block
    return task if block in (f"{task}", _default_block(task)) else f"{task}_{block}"


def _default_block(task: str) -> str | None:
    from lowbit.tasks import get_task_class

    return get_task_class(task).sampling_config
