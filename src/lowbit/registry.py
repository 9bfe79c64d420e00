"""Named things users choose on the command line (benchmarks, predictors, quantize methods, chat formats,
subcommands), each imported only when it is used.

    TASKS = Registry("eval_dataset", {"mmlu-redux": "lowbit.tasks.mmlu_redux:MMLURedux"},
                     families={"ruler-": "lowbit.tasks.ruler.task:task_class"})
    TASKS.get("mmlu-redux")   # the MMLURedux class, its module imported now
    TASKS.get("ruler-vt-8k")  # task_class("ruler-vt-8k"): a family builds parameterised names

A target is "module:attribute". A family's target is a function of the full name (raising UsageError for a
malformed one); the names it lists are its module's `LISTED_NAMES`. A miss is one line:
"unknown eval_dataset 'mmlu_redux'. Did you mean 'mmlu-redux'? Available: ...".
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from typing import Any

from lowbit.errors import UsageError


def import_target(target: str) -> Any:
    """The attribute named by "module:attribute"."""
    module, _, attribute = target.partition(":")
    return getattr(importlib.import_module(module), attribute)


def unknown_name(kind: str, name: object, available: Iterable[str]) -> UsageError:
    """The one-line error for a name that is not among `available`, with the closest one suggested."""
    available = list(available)
    close = difflib.get_close_matches(str(name), available, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UsageError(f"unknown {kind} '{name}'.{hint} Available: {', '.join(available)}")


class Registry:
    """name -> lazily imported "module:attribute", plus prefix families for parameterised names."""

    def __init__(self, kind: str, entries: dict[str, str], families: dict[str, str] | None = None):
        self.kind = kind
        self.entries = dict(entries)
        self.families = dict(families or {})

    def names(self) -> list[str]:
        """Every registered name and every name a family lists, sorted."""
        listed = [name for target in self.families.values()
                  for name in getattr(importlib.import_module(target.partition(":")[0]), "LISTED_NAMES", ())]
        return sorted({*self.entries, *listed})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.entries or any(name.startswith(p) for p in self.families))

    def get(self, name: str) -> Any:
        """The target registered as `name` (a family's target called with `name`), or a UsageError."""
        if name in self.entries:
            return import_target(self.entries[name])
        for prefix, target in self.families.items():
            if isinstance(name, str) and name.startswith(prefix):
                return import_target(target)(name)
        raise unknown_name(self.kind, name, self.names())
