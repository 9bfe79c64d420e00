"""Bits per weight of a precision: what one weight of a quantized linear layer costs in storage, its share of
the scales included.

    bits per weight = element bits + scale bits / elements per scale (+ zero-point bits / elements per scale)

Where a run's checkpoint recorded its quantization metadata (run.json: the checkpoint's `quantization_config`),
the bits come from it; otherwise from the precision label: 16-bit and 32-bit floats, or a format of the
quantization registry (lowbit.quant.formats.registry) named by its name, an alias or one of its precision
labels, whose spec gives its bits per weight (the registry, and torch with it, is imported only when a
label or a scale's format has to be looked up). Today that reads:

    label                      element  scale                    per scale   bits per weight
    fp32                       32       -                        -           32
    bf16, fp16                 16       -                        -           16
    fp8, w8a8_fp8              8        fp32 per output channel  4096 *      8.0078
    fp8_block                  8        fp32 per 128x128 block   16384       8.0020
    int8, w8a8, w8a16          8        fp32 per output channel  4096 *      8.0078
    mxfp8                      8        E8M0 (8 bits)            32          8.25
    nvfp4                      4        E4M3 (8 bits) **         16          4.5
    mxfp4                      4        E8M0 (8 bits)            32          4.25
    int4, gptq, w4a16, w4a8    4        bf16 per group of 128    128         4.125
    int4_g32, w4a16_g32        4        bf16 per group of 32     32          4.5

    *  a per-channel scale is shared by one row of in_features weights; the table assumes rows of 4096.
    ** plus one fp32 global scale per tensor, negligible.

A scale's bits come from the quantization args' `scale_dtype`, else from the dtype lowbit records for the
`weight_scale` tensors it wrote (`lowbit.weight_scale_dtype`), else from the format's spec: 8 for NVFP4/MX
scales, 16 for group-wise integer scales (compressed-tensors stores them in the model's 16-bit dtype), 32
otherwise.

Only linear-layer weights are counted: embeddings, norms and layers a checkpoint leaves unquantized (its
`ignore` list) are not, so this is the cost of the quantized weights, not of the whole checkpoint. Labels
are matched case-insensitively with `-` and `_` ignored (`NVFP4`, `int4-g128`). A label that names no format
and has no metadata gets no value: the report lists it instead of guessing.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

from lowbit.quant.formats.spec import REFERENCE_ROW

_FLOAT_LABEL_BITS = {"fp32": 32, "bf16": 16, "fp16": 16}  # unquantized precisions
_DTYPE_BITS = {"float32": 32, "float16": 16, "bfloat16": 16, "float8_e4m3fn": 8, "float8_e8m0fnu": 8, "uint8": 8}
_GROUP_STRATEGY_SCALE_BITS = 16  # group-wise integer scales stored in the model's 16-bit dtype


@dataclass(frozen=True)
class BitsPerWeight:
    bits: float | None  # None: unknown
    source: str  # "quantization_config", "precision label" or why it is unknown


def bits_per_weight(precision: str, quantization: dict[str, Any] | None) -> BitsPerWeight:
    """Bits per weight from the checkpoint's quantization metadata when it has any, else from the label."""
    if quantization:
        bits = _from_quantization_config(quantization)
        if bits is not None:
            return BitsPerWeight(round(bits, 4), "quantization_config")
    key = normalize_label(precision)
    if key in _FLOAT_LABEL_BITS:
        return BitsPerWeight(float(_FLOAT_LABEL_BITS[key]), "precision label")
    from lowbit.quant.formats import registry

    spec = registry.label_format(key)
    if spec is not None:
        return BitsPerWeight(round(spec.bits_per_weight, 4), "precision label")
    return BitsPerWeight(None, "unknown precision label, no quantization metadata in run.json")


def normalize_label(precision: str) -> str:
    return re.sub(r"[-_\s]", "", precision.lower())


def _from_quantization_config(config: dict[str, Any]) -> float | None:
    """Bits per weight of a compressed-tensors config (every group must agree), or of the native configs of
    MXFP4 (GPT-OSS `quant_method: mxfp4`) and fine-grained FP8 (`quant_method: fp8`, weight_block_size)."""
    method = str(config.get("quant_method", "")).lower()
    if method == "mxfp4":
        return 4 + 8 / 32
    if method == "fp8":
        block = config.get("weight_block_size") or [REFERENCE_ROW, 1]
        return 8 + 32 / (int(block[0]) * int(block[1]))
    groups = config.get("config_groups")
    if not isinstance(groups, dict) or not groups:
        return None
    lowbit_record = config.get("lowbit")
    written_scale_dtype = lowbit_record.get("weight_scale_dtype") if isinstance(lowbit_record, dict) else None
    per_group = {_weight_args_bits(group.get("weights"), str(config.get("format", "")), written_scale_dtype)
                 for group in groups.values() if isinstance(group, dict)}
    return per_group.pop() if len(per_group) == 1 else None


def _weight_args_bits(weights: Any, checkpoint_format: str, written_scale_dtype: Any = None) -> float | None:
    """element bits + scale (and zero-point) bits per weight for one compressed-tensors QuantizationArgs;
    written_scale_dtype: the dtype lowbit wrote the scales in (a list when they differ: no single number)."""
    if not isinstance(weights, dict) or not isinstance(weights.get("num_bits"), int):
        return None
    element = weights["num_bits"]
    strategy = str(weights.get("strategy", "tensor"))
    if strategy in ("group", "tensor_group"):
        per_scale = int(weights.get("group_size") or 0)
    elif strategy == "block":
        block = weights.get("block_structure") or [128, 128]
        per_scale = int(block[0]) * int(block[1])
    elif strategy == "channel":
        per_scale = REFERENCE_ROW
    else:  # one scale per tensor
        return float(element)
    if per_scale <= 0:
        return None
    scale_dtype = weights.get("scale_dtype") or written_scale_dtype
    if isinstance(scale_dtype, list):
        return None
    scale = _DTYPE_BITS.get(str(scale_dtype or "").removeprefix("torch."))
    if scale is None and strategy in ("group", "tensor_group"):
        scale = _format_scale_bits().get(checkpoint_format, _GROUP_STRATEGY_SCALE_BITS)
    elif scale is None:
        scale = 32
    zero_point = 0 if weights.get("symmetric", True) else element
    return element + (scale + zero_point) / per_scale


@functools.cache
def _format_scale_bits() -> dict[str, int]:
    """Scale bits of the group-wise formats by compressed-tensors format, where the quantization args do not name
    a scale dtype (NVFP4 / MX: 8)."""
    from lowbit.quant.formats import registry

    return {spec.checkpoint_format: spec.scale_bits for spec in registry.formats()
            if spec.checkpoint_format and spec.block_size and spec.block_rows == 1}
