"""Symmetric integer weights: INT8 per-channel / per-group and INT4 per-group (compressed-tensors layouts).

Arithmetic (compressed-tensors `calculate_range` + `calculate_qparams` + `_quantize`, symmetric):
    scale = amax / (q_range / 2) with q_range = q_max - q_min: amax / 127.5 for INT8, amax / 7.5 for INT4
    q     = clamp(round_half_even(x / scale), q_min, q_max)    [-128, 127] or [-8, 7]
    dequantized = q * scale
so -amax maps to -128 (or -8) and +amax to 127 (or 7). Scales are float32 and floored at 2**-126
(compressed-tensors replaces an exact 0 by an eps); NaN/Inf weights raise ValueError.

Layouts:
    INT8 (`int-quantized`):  weight int8 (N, K); weight_scale float32 (N, 1) per channel or (N, K/G)
    INT4 (`pack-quantized`): weight_packed int32 (N, K/8); weight_scale float32 (N, K/G); values are
        offset by 8 into 0..15 and packed eight per int32 along the row, element 8j+i in bits 4i..4i+3
        (lowest bits first), as compressed-tensors `pack_to_int32(value, num_bits=4)` does (the top
        nibble makes the int32 negative when >= 8; the bits are what matter).
"""

from typing import NamedTuple

import torch

from lowbit.quant.formats import minifloat as mf
from lowbit.quant.formats.backend import (
    check_backend,
    check_finite_amax,
    check_matrix,
    check_out_dtype,
    check_packed,
)

INT8_RANGE = (-128, 127)
INT4_RANGE = (-8, 7)
INT4_OFFSET = 8
INT4_PER_INT32 = 8
INT4_GROUP_SIZES = (32, 128)
SCALE_FLOOR = 2.0**-126


class IntWeight(NamedTuple):
    data: torch.Tensor  # int8 (N, K) for INT8; int32 (N, K/8) packed for INT4
    weight_scale: torch.Tensor  # float32 (N, K/G); (N, 1) for per-channel


def _group_size(weight: torch.Tensor, group_size: int | None) -> int:
    if group_size is None:
        return weight.shape[1]
    if not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group_size must be a positive int or None (per-channel), got {group_size!r}")
    if weight.shape[1] % group_size != 0:
        raise ValueError(
            f"weight in_features {weight.shape[1]} is not divisible by group_size {group_size}; "
            "choose a group size that divides it or use per-channel (group_size=None)"
        )
    return group_size


def _quantize_groups(weight: torch.Tensor, group: int, q_min: int, q_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    groups = weight.to(torch.float32).reshape(weight.shape[0], -1, group)  # (N, K/G, G)
    amax = torch.linalg.vector_norm(groups, ord=float("inf"), dim=2)
    check_finite_amax(amax, "weight")
    scale = torch.clamp(mf.true_divide(amax, (q_max - q_min) / 2), min=SCALE_FLOOR)  # (N, K/G)
    q = torch.clamp(torch.round(groups / scale[..., None]), q_min, q_max)
    return q.reshape(weight.shape).to(torch.int32), scale


def pack_int4(values: torch.Tensor) -> torch.Tensor:
    """(N, K) signed int4 values in [-8, 7] -> (N, K/8) int32 words, lowest bits first."""
    if values.shape[-1] % INT4_PER_INT32 != 0:
        raise ValueError(f"last dimension {values.shape[-1]} must be a multiple of 8 to pack int4; pad it")
    nibbles = (values.to(torch.int32) + INT4_OFFSET).reshape(*values.shape[:-1], -1, INT4_PER_INT32)
    shifts = torch.arange(INT4_PER_INT32, dtype=torch.int32, device=values.device) * 4
    words = torch.zeros(nibbles.shape[:-1], dtype=torch.int32, device=values.device)
    for i in range(INT4_PER_INT32):
        words |= nibbles[..., i] << shifts[i]
    return words


def unpack_int4(words: torch.Tensor) -> torch.Tensor:
    """Inverse of pack_int4: (N, K/8) int32 -> (N, K) int8 values in [-8, 7]."""
    shifts = torch.arange(INT4_PER_INT32, dtype=torch.int32, device=words.device) * 4
    nibbles = (words.to(torch.int32)[..., None] >> shifts) & 0xF
    return (nibbles - INT4_OFFSET).reshape(*words.shape[:-1], -1).to(torch.int8)


def quantize_int8_ref(weight: torch.Tensor, group_size: int | None = None) -> IntWeight:
    """INT8 symmetric; group_size=None is per-channel (scale (N, 1))."""
    check_matrix(weight, "weight")
    q, scale = _quantize_groups(weight, _group_size(weight, group_size), *INT8_RANGE)
    return IntWeight(q.to(torch.int8), scale)


def quantize_int4_ref(weight: torch.Tensor, group_size: int = 128) -> IntWeight:
    """INT4 symmetric per-group (group 32 or 128), packed eight per int32."""
    check_matrix(weight, "weight")
    if group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"INT4 group_size must be one of {INT4_GROUP_SIZES}, got {group_size!r}")
    q, scale = _quantize_groups(weight, _group_size(weight, group_size), *INT4_RANGE)
    return IntWeight(pack_int4(q), scale)


def _dequantize_values(values: torch.Tensor, scale: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    check_out_dtype(out_dtype)
    check_packed(scale, torch.float32, "weight_scale")
    rows, cols = values.shape
    if scale.ndim != 2 or scale.shape[0] != rows or cols % scale.shape[1] != 0:
        raise ValueError(
            f"weight_scale {tuple(scale.shape)} does not fit weight {(rows, cols)}; pass one quantize() result"
        )
    groups = values.to(torch.float32).reshape(rows, scale.shape[1], -1) * scale[..., None]
    return groups.reshape(rows, cols).to(out_dtype)


def dequantize_int8_ref(q: IntWeight, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    check_packed(q.data, torch.int8, "data")
    return _dequantize_values(q.data, q.weight_scale, out_dtype)


def dequantize_int4_ref(q: IntWeight, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    check_packed(q.data, torch.int32, "data")
    return _dequantize_values(unpack_int4(q.data), q.weight_scale, out_dtype)


def quantize_int8(weight: torch.Tensor, group_size: int | None = None, *, backend: str = "ref") -> IntWeight:
    check_backend(backend, weight)
    if backend == "triton":
        from lowbit.quant.formats import integer_triton

        q = integer_triton.quantize_int8_triton(weight, group_size)
        check_finite_amax(q.weight_scale, "weight")  # the kernels mark NaN/Inf groups with a NaN scale
        return q
    return quantize_int8_ref(weight, group_size)


def quantize_int4(weight: torch.Tensor, group_size: int = 128, *, backend: str = "ref") -> IntWeight:
    check_backend(backend, weight)
    if backend == "triton":
        from lowbit.quant.formats import integer_triton

        q = integer_triton.quantize_int4_triton(weight, group_size)
        check_finite_amax(q.weight_scale, "weight")
        return q
    return quantize_int4_ref(weight, group_size)


def dequantize_int8(q: IntWeight, out_dtype: torch.dtype = torch.bfloat16, *, backend: str = "ref") -> torch.Tensor:
    check_backend(backend, q.data)
    if backend == "triton":
        from lowbit.quant.formats import integer_triton

        check_packed(q.data, torch.int8, "data")
        return integer_triton.dequantize_triton(q, out_dtype)
    return dequantize_int8_ref(q, out_dtype)


def dequantize_int4(q: IntWeight, out_dtype: torch.dtype = torch.bfloat16, *, backend: str = "ref") -> torch.Tensor:
    check_backend(backend, q.data)
    if backend == "triton":
        from lowbit.quant.formats import integer_triton

        check_packed(q.data, torch.int32, "data")
        return integer_triton.dequantize_triton(q, out_dtype)
    return dequantize_int4_ref(q, out_dtype)
