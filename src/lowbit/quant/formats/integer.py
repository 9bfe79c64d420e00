"""Symmetric integer weights: INT8 per-channel / per-group and INT4 per-group (compressed-tensors layouts).

Arithmetic (compressed-tensors `calculate_range` + `calculate_qparams` + `_quantize`, symmetric):
    scale = amax / (q_range / 2) with q_range = q_max - q_min: amax / 127.5 for INT8, amax / 7.5 for INT4,
            computed in float32, floored at the smallest normal of the scale dtype (compressed-tensors replaces
            an exact 0 by an eps) and rounded to the scale dtype, half to even
    q     = clamp(round_half_even(x / scale), q_min, q_max)    [-128, 127] or [-8, 7], x and the stored
            scale in float32 (IEEE division)
    dequantized = q * scale
so -amax maps to -128 (or -8) and +amax to 127 (or 7); NaN/Inf weights raise ValueError.

Scale dtype: group-wise scales are stored in the weight's dtype when it is 16-bit (`group_scale_dtype`), as
compressed-tensors stores them and as vLLM's WNA16 kernels and transformers use them (they convert stored
scales to the model's dtype), and float32 for float32 weights. q is chosen against the rounded scale, so
`q * stored scale` is exactly the weight a runtime computes. Per-channel INT8 scales stay float32, the dtype
vLLM's W8A8 INT8 kernels keep them in.

Layouts:
    INT8 (`int-quantized`):  weight int8 (N, K); weight_scale float32 (N, 1) per channel, or (N, K/G) per group
    INT4 (`pack-quantized`): weight_packed int32 (N, K/8); weight_scale (N, K/G); values are offset by 8 into
        0..15 and packed eight per int32 along the row, element 8j+i in bits 4i..4i+3 (lowest bits first), as
        compressed-tensors `pack_to_int32(value, num_bits=4)` does (the top nibble makes the int32 negative
        when >= 8; the bits are what matter).
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
SCALE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CHANNEL_SCALE_DTYPE = torch.float32


class IntWeight(NamedTuple):
    data: torch.Tensor  # int8 (N, K) for INT8; int32 (N, K/8) packed for INT4
    weight_scale: torch.Tensor  # (N, K/G) in group_scale_dtype(weight dtype); float32 (N, 1) for per-channel


def group_scale_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    """The dtype of group-wise scales for weights of `weight_dtype`: its own when 16-bit, else float32."""
    return weight_dtype if weight_dtype in (torch.bfloat16, torch.float16) else torch.float32


def scale_floor(scale_dtype: torch.dtype) -> float:
    """The smallest scale kept: the smallest positive normal of the scale dtype (2**-126, or 2**-14 for fp16)."""
    return torch.finfo(scale_dtype).tiny


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


def _quantize_groups(weight: torch.Tensor, group: int, q_min: int, q_max: int,
                     scale_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    groups = weight.to(torch.float32).reshape(weight.shape[0], -1, group)  # (N, K/G, G)
    amax = torch.linalg.vector_norm(groups, ord=float("inf"), dim=2)
    check_finite_amax(amax, "weight")
    # Flooring before the cast equals flooring after it: the floor is a scale_dtype value and rounding is monotone.
    scale = torch.clamp(mf.true_divide(amax, (q_max - q_min) / 2), min=scale_floor(scale_dtype)).to(scale_dtype)
    q = torch.clamp(torch.round(groups / scale.to(torch.float32)[..., None]), q_min, q_max)
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
    """INT8 symmetric; group_size=None is per-channel (float32 scale (N, 1))."""
    check_matrix(weight, "weight")
    scale_dtype = CHANNEL_SCALE_DTYPE if group_size is None else group_scale_dtype(weight.dtype)
    q, scale = _quantize_groups(weight, _group_size(weight, group_size), *INT8_RANGE, scale_dtype)
    return IntWeight(q.to(torch.int8), scale)


def quantize_int4_ref(weight: torch.Tensor, group_size: int = 128) -> IntWeight:
    """INT4 symmetric per-group (group 32 or 128), packed eight per int32."""
    check_matrix(weight, "weight")
    if group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"INT4 group_size must be one of {INT4_GROUP_SIZES}, got {group_size!r}")
    q, scale = _quantize_groups(weight, _group_size(weight, group_size), *INT4_RANGE, group_scale_dtype(weight.dtype))
    return IntWeight(pack_int4(q), scale)


def check_scale(scale: torch.Tensor, rows: int, cols: int) -> None:
    """A weight_scale of one of SCALE_DTYPES whose shape fits a (rows, cols) weight."""
    if not isinstance(scale, torch.Tensor) or scale.dtype not in SCALE_DTYPES:
        got = scale.dtype if isinstance(scale, torch.Tensor) else type(scale).__name__
        raise ValueError(f"weight_scale must be a float32, bfloat16 or float16 tensor as produced by quantize(), "
                         f"got {got}")
    if scale.ndim != 2 or scale.shape[0] != rows or cols % scale.shape[1] != 0:
        raise ValueError(
            f"weight_scale {tuple(scale.shape)} does not fit weight {(rows, cols)}; pass one quantize() result"
        )


def _dequantize_values(values: torch.Tensor, scale: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """q * scale in float32, rounded once to out_dtype. With a 16-bit scale the float32 product is exact
    (|q| <= 128 times an 11-bit significand at most), so with out_dtype = the scale's dtype this is a
    runtime's q * scale computed in that dtype."""
    check_out_dtype(out_dtype)
    rows, cols = values.shape
    check_scale(scale, rows, cols)
    groups = values.to(torch.float32).reshape(rows, scale.shape[1], -1) * scale.to(torch.float32)[..., None]
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
