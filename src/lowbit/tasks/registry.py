"""The one registry of benchmarks: eval_dataset name -> task class, imported only when used."""

from __future__ import annotations

import difflib
import importlib
from dataclasses import fields
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lowbit.errors import UsageError
from lowbit.tasks.base import Task

_TASKS: dict[str, str] = {
    "mmlu-redux": "lowbit.tasks.mmlu_redux:MMLURedux",
    "math500": "lowbit.tasks.math500:Math500",
    "aime25": "lowbit.tasks.aime25:AIME25",
    "ifeval": "lowbit.tasks.ifeval:IFEval",
    "livecode_v5": "lowbit.tasks.livecodebench:LiveCodeBench",
}
# Families of parameterized names (e.g. ruler-vt-8k): prefix -> "module:function" mapping a full name to its task
# class (a UsageError for a bad name); the module's LISTED_NAMES are the names `--list` shows.
_FAMILIES: dict[str, str] = {
    "ruler-": "lowbit.tasks.ruler.task:task_class",
}


def task_names() -> list[str]:
    listed = [name for target in _FAMILIES.values() for name in importlib.import_module(_module(target)).LISTED_NAMES]
    return sorted({*_TASKS, *listed})


def get_task_class(name: str) -> type[Task]:
    if name in _TASKS:
        module, _, cls = _TASKS[name].partition(":")
        return getattr(importlib.import_module(module), cls)
    for prefix, target in _FAMILIES.items():
        if name.startswith(prefix):
            module, _, function = target.partition(":")
            return getattr(importlib.import_module(module), function)(name)
    close = difflib.get_close_matches(name, task_names(), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise UsageError(f"unknown eval_dataset '{name}'.{hint} Available: {', '.join(task_names())}")


def _module(target: str) -> str:
    return target.partition(":")[0]


def make_task(name: str, options: dict[str, Any] | None = None) -> Task:
    """The task with its `dataset.*` options validated against its Options dataclass."""
    cls = get_task_class(name)
    valid = [f.name for f in fields(cls.Options)]
    unknown = sorted(set(options or {}) - set(valid))
    if unknown:
        raise UsageError(f"unknown dataset option(s) {', '.join(unknown)} for {name}; valid: {', '.join(valid)}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls.Options), OmegaConf.create(options or {}))
        return cls(OmegaConf.to_object(merged))
    except OmegaConfBaseException as e:
        raise UsageError(f"bad dataset option for {name}: {str(e).splitlines()[0]}") from e
