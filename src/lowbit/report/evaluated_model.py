"""Which model a run evaluated: what `lowbit compare` groups runs by, and how a group is named.

The evaluated model is the checkpoint's source model when the checkpoint was written by `lowbit quantize` (the
`source_model` of lowbit's record in its quantization_config, which run.json keeps). A checkpoint quantized by
another tool records no source, so the model config chosen for it (`model=`, its hub id) names the model it was
quantized from: an FP8 checkpoint from a hub evaluated with `model=qwen3_4B` pairs with Qwen3-4B's BF16 run. Any
other run is its `model_name` (a hub id or a local directory), and the model config's hub id only for runs that
recorded no `model_name`. So a BF16 run of `/tmp/tiny` and an NVFP4 run of a checkpoint quantized from
`/tmp/tiny` are runs of one model, `tiny`, and never runs of the model config's hub id.

A model is known by its name: the last part of its hub id or directory, so that the same model named either
way (`Qwen/Qwen3-4B`, `/models/Qwen3-4B`), or by a relative and an absolute path, is one model.
"""

from __future__ import annotations

import os
from pathlib import PurePath
from typing import Any

from lowbit.rundir import RunConfig


# Directory names that say nothing of the model; the folder holding one names it too (`organism/model`).
GENERIC_DIRECTORY_NAMES = frozenset({"model", "models", "checkpoint", "checkpoints", "weights", "hf", "final"})


def model_name(name: str) -> str:
    """A hub id's or a local directory's last part (`Qwen/Qwen3-4B` -> `Qwen3-4B`, `/tmp/tiny/` -> `tiny`), with
    its parent's when the last part is generic (`src/lowbit/organism/model` -> `organism/model`)."""
    path = PurePath(os.path.abspath(os.path.normpath(os.path.expanduser(name))))
    if path.name.lower() in GENERIC_DIRECTORY_NAMES and path.parent.name:
        return f"{path.parent.name}/{path.name}"
    return path.name or str(path)


def source_model(quantization: dict[str, Any] | None) -> str | None:
    """The model a `lowbit quantize` checkpoint was made from; None for any other checkpoint."""
    record = (quantization or {}).get("lowbit")
    source = record.get("source_model") if isinstance(record, dict) else None
    return str(source) if source else None


def evaluated_model(config: RunConfig, quantization: dict[str, Any] | None) -> str:
    """The name of the model a run evaluated, from its config and its checkpoint's quantization_config."""
    third_party_checkpoint = bool(quantization) and source_model(quantization) is None
    if third_party_checkpoint and config.family:
        named = config.family
    else:
        named = source_model(quantization) or config.model_name or config.family
    return model_name(str(named)) if named else "unknown model"
