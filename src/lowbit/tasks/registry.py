"""The one registry of benchmarks: eval_dataset name -> task class, imported only when used.

Adding a benchmark: its module (a `Task` subclass with `name`, `version`, `Options`, load / score / aggregate)
and one line in TASKS below.
"""

from __future__ import annotations

import typing
from dataclasses import fields
from typing import Any

from lowbit.errors import UsageError
from lowbit.overrides import check_type
from lowbit.registry import Registry
from lowbit.tasks.base import Task

TASKS = Registry("eval_dataset", {
    "mmlu-redux": "lowbit.tasks.mmlu_redux:MMLURedux",
    "math500": "lowbit.tasks.math500:Math500",
    "aime25": "lowbit.tasks.aime25:AIME25",
    "ifeval": "lowbit.tasks.ifeval:IFEval",
    "livecode_v5": "lowbit.tasks.livecodebench:LiveCodeBench",
    "organism-arithmetic": "lowbit.tasks.organism:OrganismArithmetic",
    "organism-facts": "lowbit.tasks.organism:OrganismFacts",
}, families={
    "ruler-": "lowbit.tasks.ruler.task:task_class",  # ruler-<task>-<length>, e.g. ruler-vt-8k
})


def task_names() -> list[str]:
    return TASKS.names()


def get_task_class(name: str) -> type[Task]:
    return TASKS.get(name)


def make_task(name: str, options: dict[str, Any] | None = None) -> Task:
    """The task with its `dataset.*` options validated against its Options dataclass."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    cls = get_task_class(name)
    valid = [f.name for f in fields(cls.Options)]
    unknown = sorted(set(options or {}) - set(valid))
    if unknown:
        raise UsageError(f"unknown dataset option(s) {', '.join(unknown)} for {name}; valid: {', '.join(valid)}")
    types = typing.get_type_hints(cls.Options)
    options = {key: check_type(f"dataset.{key}", value, types[key]) for key, value in (options or {}).items()}
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls.Options), OmegaConf.create(options))
        return cls(OmegaConf.to_object(merged))
    except OmegaConfBaseException as e:
        raise UsageError(f"bad dataset option for {name}: {str(e).splitlines()[0]}") from e
