"""Every quantization format lowbit knows, collected from the `SPECS` of the format modules, and the lookups
that name them.

A name is matched case-insensitively with `-` and `_` alike, against each format's canonical name and its
aliases; the canonical name is what gets recorded. `label_format` reads a precision label (`NVFP4`,
`int4-g128`, `gptq`) the way the report does: `-`, `_` and spaces ignored, labels included.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from lowbit.quant.formats import fp8, integer, mx, nvfp4
from lowbit.quant.formats.spec import FormatSpec

FORMATS: dict[str, FormatSpec] = {spec.name: spec for module in (integer, fp8, mx, nvfp4) for spec in module.SPECS}


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def _label_key(label: str) -> str:
    return "".join(c for c in label.lower() if c not in "-_ \t")


_BY_NAME = {_key(spelling): spec for spec in FORMATS.values() for spelling in (spec.name, *spec.aliases)}
_BY_LABEL = {_label_key(label): spec for spec in FORMATS.values()
             for label in (spec.name, *spec.aliases, *spec.labels)}


def formats() -> tuple[FormatSpec, ...]:
    return tuple(FORMATS.values())


def activation_formats() -> tuple[str, ...]:
    """Formats that fake-quantize activations (`act_quant`)."""
    return tuple(name for name, spec in FORMATS.items() if spec.fake_quantize_activation is not None)


def weight_formats() -> tuple[str, ...]:
    """Formats that fake-quantize weights (`weight_quant`)."""
    return tuple(name for name, spec in FORMATS.items() if spec.fake_quantize_weight is not None)


def get_format(name: str) -> FormatSpec:
    """The format named `name` (canonical or alias); ValueError listing the formats otherwise."""
    spec = _BY_NAME.get(_key(name)) if isinstance(name, str) else None
    if spec is None:
        raise ValueError(f"unknown format '{name}': choose one of {', '.join(FORMATS)}")
    return spec


def find_format(name: str, choices: tuple[str, ...], key: str) -> FormatSpec | None:
    """The format `name` names among `choices` (None for "none"); ValueError naming `key` and the choices."""
    if isinstance(name, str) and _key(name) == "none":
        return None
    spec = _BY_NAME.get(_key(name)) if isinstance(name, str) else None
    if spec is None or spec.name not in choices:
        raise ValueError(f"{key} '{name}' is unknown: choose one of {', '.join(('none', *choices))}")
    return spec


def activation_format(name: str, key: str = "act_quant") -> FormatSpec | None:
    return find_format(name, activation_formats(), key)


def weight_format(name: str, key: str = "weight_quant") -> FormatSpec | None:
    return find_format(name, weight_formats(), key)


def label_format(label: str) -> FormatSpec | None:
    """The format a precision label names (its name, an alias, or one of its labels), else None."""
    return _BY_LABEL.get(_label_key(label))


def stored_format(tensors: Mapping[str, torch.Tensor]) -> FormatSpec | None:
    """The format whose `stored` tensors the module tensors match most specifically, else None."""
    best, matched = None, 0
    for spec in FORMATS.values():
        score = spec.identifies(tensors)
        if score > matched:
            best, matched = spec, score
    return best
