"""key=value options as users type them, in Hydra's override grammar, for every command.

`parse` turns the items into `Override`s (a parse error is one line); `check_type` refuses a value of the wrong
type with the key and the expected type; `parse_options` does both for a command whose options are a fixed
{name: type} table, refusing unknown names with the closest valid one. `lowbit eval` parses with `parse` and
checks each key against the composed config (lowbit.config).

    parse_options(["scheme=nvfp4", "targets=[a,b]", "seed=7"], {"scheme": str, "targets": list[str], "seed": int},
                  command="quantize")  ->  {"scheme": "nvfp4", "targets": ["a", "b"], "seed": 7}
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lowbit.errors import UsageError


@dataclass(frozen=True)
class Override:
    key: str  # dotted, without Hydra's +/++/~ prefix
    value: Any  # as Hydra's grammar types it: str, int, float, bool, None, list, dict; a comma list is a list
    text: str  # the item as typed
    prefix: str = ""  # "+", "++" or "~"
    comma_list: bool = False  # `a,b` (a sweep to Hydra) rather than `[a,b]`


def parse(items: Iterable[str]) -> list[Override]:
    """Parse key=value items with Hydra's grammar; a malformed item fails with one line naming it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    items = list(items)
    try:
        parsed = OverridesParser.create().parse_overrides(items)
    except HydraException as e:
        raise UsageError(f"cannot parse overrides: {str(e).splitlines()[0]} (write key=value, "
                         "lists as key=[a,b])") from e
    overrides = []
    for override, text in zip(parsed, items):
        prefix = "~" if override.is_delete() else "++" if override.is_force_add() else "+" if override.is_add() else ""
        if override.is_sweep_override():
            value, comma_list = list(override.sweep_iterator()), True
        else:
            value, comma_list = override.value(), False
        overrides.append(Override(override.key_or_group, value, text, prefix, comma_list))
    return overrides


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """" Did you mean 'x'?" for the closest valid name, or ""."""
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def check_type(key: str, value: Any, annotation: Any) -> Any:
    """`value` if it has the `annotation` type (numbers become floats or strings where those are expected),
    else a UsageError naming the key, the expected type and the value."""
    converted = _convert(value, annotation)
    if converted is _WRONG:
        raise UsageError(f"{key} must be {describe_type(annotation)}, got {value!r}")
    return converted


def parse_options(items: Iterable[str], options: dict[str, Any], command: str) -> dict[str, Any]:
    """{name: typed value} for a command's key=value items; `options` maps each valid name to its type."""
    values: dict[str, Any] = {}
    for override in parse(items):
        if override.key not in options:
            raise UsageError(f"unknown {command} option '{override.key}'.{did_you_mean(override.key, options)} "
                             f"Available: {', '.join(options)}")
        if override.prefix:
            raise UsageError(f"{override.text}: {command} options take no '{override.prefix}' prefix: write "
                             f"{override.key}=<value>")
        values[override.key] = check_type(override.key, override.value, options[override.key])
    return values


def check_mapping(values: Any, table: dict[str, Any], where: str, kind: str) -> dict[str, Any]:
    """A mapping read from a file (a sweep file's block, say) checked against `table` ({key: type}): unknown keys
    and wrong types are one line naming `where`; None values are kept as they are."""
    if not isinstance(values, dict):
        raise UsageError(f"{where} must be a mapping, got {values!r}")
    checked = {}
    for key, value in values.items():
        if key not in table:
            raise UsageError(f"{where}: unknown {kind} '{key}'.{did_you_mean(str(key), table)} "
                             f"Valid: {', '.join(table)}")
        checked[key] = value if value is None else check_type(f"{where}.{key}", value, table[key])
    return checked


def require(values: dict[str, Any], key: str, example: str) -> Any:
    """values[key], or the one-line error asking for it."""
    if values.get(key) in (None, ""):
        raise UsageError(f"{key}= is required, e.g. {example}")
    return values[key]


_WRONG = object()


def _convert(value: Any, annotation: Any) -> Any:
    if annotation is Any or (isinstance(value, str) and value.startswith("${")):  # Any, or an interpolation
        return value
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for member in typing.get_args(annotation):
            converted = _convert(value, member)
            if converted is not _WRONG:
                return converted
        return _WRONG
    if annotation is type(None):
        return None if value is None else _WRONG
    if annotation is bool:
        return value if isinstance(value, bool) else _WRONG
    if annotation is int:
        return value if isinstance(value, int) and not isinstance(value, bool) else _WRONG
    if annotation is float:
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _WRONG
    if annotation is str:
        if isinstance(value, str):
            return value
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else _WRONG
    if origin is list or annotation is list:
        if not isinstance(value, list):
            return _WRONG
        (item_type,) = typing.get_args(annotation) or (Any,)
        items = [_convert(item, item_type) for item in value]
        return _WRONG if any(item is _WRONG for item in items) else items
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            return _WRONG
        _, value_type = typing.get_args(annotation) or (Any, Any)
        entries = {key: _convert(item, value_type) for key, item in value.items()}
        return _WRONG if any(item is _WRONG for item in entries.values()) else entries
    return value  # a type this module does not know (e.g. a nested dataclass): its owner checks the value


def describe_type(annotation: Any) -> str:
    """"an integer", "true or false", "a list like [a,b]", "a number or null" ..."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(member) for member in typing.get_args(annotation))
    if origin is list or annotation is list:
        return "a list like [a,b]"
    if origin is dict or annotation is dict:
        return "a mapping like {a:1}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            type(None): "null"}.get(annotation, str(annotation))
