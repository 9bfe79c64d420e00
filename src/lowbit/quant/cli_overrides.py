"""key=value overrides of `lowbit quantize` / `lowbit dequantize`, parsed with Hydra's override grammar."""

from __future__ import annotations

from typing import Any

from lowbit.errors import UsageError


def parse_overrides(overrides: list[str], valid: tuple[str, ...], command: str) -> dict[str, Any]:
    """{key: value} for overrides like `scheme=nvfp4 targets=[a,b] overwrite=true`; unknown keys fail."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except HydraException as e:
        raise UsageError(f"cannot parse overrides: {str(e).splitlines()[0]}") from e
    values: dict[str, Any] = {}
    for override in parsed:
        key = override.key_or_group
        if key not in valid:
            raise UsageError(f"unknown {command} option '{key}': valid options are {', '.join(valid)}")
        values[key] = override.value()
    return values


def as_list(value: Any, key: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise UsageError(f"{key} must be a regex or a list of regexes like {key}=[a,b], got {value!r}")


def as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    raise UsageError(f"{key} must be true or false, got {value!r}")


def require(values: dict[str, Any], key: str, example: str) -> str:
    if values.get(key) in (None, ""):
        raise UsageError(f"{key}= is required, e.g. {example}")
    return str(values[key])
