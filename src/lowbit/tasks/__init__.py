"""Benchmarks: one module per task, registered in lowbit.tasks.registry."""

from lowbit.tasks.base import Task
from lowbit.tasks.registry import get_task_class, make_task, task_names

__all__ = ["Task", "get_task_class", "make_task", "task_names"]
