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

from collections.abc import Mapping

import torch

from lowbit.quant.formats import minifloat as mf
from lowbit.quant.formats.backend import check_backend, check_finite_amax, check_matrix, check_out_dtype, check_packed
from lowbit.quant.formats.integer_layout import (
    CHANNEL_SCALE_DTYPE,
    INT4_GROUP_SIZES,
    INT4_OFFSET,
    INT4_PER_INT32,
    INT4_RANGE,
    INT8_RANGE,
    SCALE_DTYPES,
    IntWeight,
    check_int4_group_size,
    check_scale,
    group_scale_dtype,
    group_size_of,
    scale_floor,
)
from lowbit.quant.formats.spec import FormatSpec

__all__ = ["CHANNEL_SCALE_DTYPE", "INT4_GROUP_SIZES", "INT4_OFFSET", "INT4_PER_INT32", "INT4_RANGE", "INT8_RANGE",
           "SCALE_DTYPES", "IntWeight", "SPECS", "check_scale", "group_scale_dtype", "scale_floor", "pack_int4",
           "unpack_int4", "quantize_int8_ref", "quantize_int4_ref", "dequantize_int8_ref", "dequantize_int4_ref",
           "quantize_int8", "quantize_int4", "dequantize_int8", "dequantize_int4", "fake_quantize_activation_ref"]

INT8_MAX = 127.0


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
    q, scale = _quantize_groups(weight, group_size_of(weight, group_size), *INT8_RANGE, scale_dtype)
    return IntWeight(q.to(torch.int8), scale)


def quantize_int4_ref(weight: torch.Tensor, group_size: int = 128) -> IntWeight:
    """INT4 symmetric per-group (group 32 or 128), packed eight per int32."""
    check_matrix(weight, "weight")
    check_int4_group_size(group_size)
    q, scale = _quantize_groups(weight, group_size_of(weight, group_size), *INT4_RANGE, group_scale_dtype(weight.dtype))
    return IntWeight(pack_int4(q), scale)


def _dequantize_values(values: torch.Tensor, scale: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """q * scale in float32, rounded once to out_dtype. With a 16-bit scale the float32 product is exact
    (|q| <= 128 times an 11-bit significand at most), so with out_dtype = the scale's dtype this is a
    runtime's q * scale computed in that dtype."""
    check_out_dtype(out_dtype)
    rows, cols = values.shape
    check_scale(scale, rows, cols)
    groups = values.to(torch.float32).reshape(rows, scale.shape[1], -1) * scale.to(torch.float32)[..., None]
    return mf.to_output_dtype(groups.reshape(rows, cols), out_dtype)


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


# -- fake quantization and checkpoint tensors (the entry points of the specs) ---------------------------------


def fake_quantize_activation_ref(x: torch.Tensor) -> torch.Tensor:
    """INT8 per token: scale = amax_row / 127, q = round_half_even(x * (127 / amax_row)) saturated to
    [-128, 127], value = q * scale (vLLM's dynamic per-token INT8 kernel: reciprocal multiply,
    cvt.rni.sat.s8); a row holding NaN/Inf comes out as NaN."""
    rows = x.reshape(-1, x.shape[-1]).to(torch.float32)
    amax = rows.abs().amax(dim=1, keepdim=True)
    bad = ~torch.isfinite(amax)
    amax = torch.where(bad, torch.zeros_like(amax), amax)
    inverse = torch.where(amax > 0, torch.full_like(amax, INT8_MAX) / amax, torch.zeros_like(amax))
    q = torch.clamp(torch.round(rows * inverse), -INT8_MAX - 1, INT8_MAX)  # torch.round: half to even
    values = q * mf.true_divide(amax, INT8_MAX)
    values = torch.where(bad, torch.full_like(values, float("nan")), values)
    return mf.to_output_dtype(values.reshape(x.shape), x.dtype)


def _fake_quantize_int8(weight: torch.Tensor, backend: str, global_scale: torch.Tensor | None) -> torch.Tensor:
    """Per-channel INT8 weights, dequantized."""
    return dequantize_int8(quantize_int8(weight, None, backend=backend), weight.dtype, backend=backend)


def _encode_int8(weight, group_size, backend, global_scale):
    q = quantize_int8(weight, group_size, backend=backend)
    return {"weight": q.data, "weight_scale": q.weight_scale}


def _decode_int8(tensors: Mapping[str, torch.Tensor], out_dtype: torch.dtype, backend: str) -> torch.Tensor:
    weight = tensors["weight"]
    q = IntWeight(weight, tensors["weight_scale"].to(torch.float32).reshape(weight.shape[0], -1))
    return dequantize_int8(q, out_dtype, backend=backend)


def _encode_int4(weight, group_size, backend, global_scale):
    q = quantize_int4(weight, group_size, backend=backend)
    return {"weight_packed": q.data, "weight_scale": q.weight_scale,
            "weight_shape": torch.tensor(list(weight.shape), dtype=torch.int64)}


def _decode_int4(tensors: Mapping[str, torch.Tensor], out_dtype: torch.dtype, backend: str) -> torch.Tensor:
    q = IntWeight(tensors["weight_packed"], tensors["weight_scale"].to(torch.float32))
    weight = dequantize_int4(q, out_dtype, backend=backend)
    shape = tensors.get("weight_shape")
    if shape is not None and tuple(int(s) for s in shape) != tuple(weight.shape):
        weight = weight[: int(shape[0]), : int(shape[1])]
    return weight


def _int4_spec(group_size: int | None) -> FormatSpec:
    if group_size is None:
        name, description, encode, fake_quantize = "int4_channel", "INT4 symmetric per output channel", None, None
        aliases: tuple[str, ...] = ()
        labels: tuple[str, ...] = ()
    else:
        name, description = f"int4_g{group_size}", f"INT4 symmetric, groups of {group_size}"
        aliases = (f"w4a16_g{group_size}",)
        labels = ("int4", "gptq", "gptq_int4", "int4_gptq", "w4a16", "w4a8") if group_size == 128 else ()
        encode = _encode_int4

        def fake_quantize(weight, backend, global_scale):
            return dequantize_int4(quantize_int4(weight, group_size, backend=backend), weight.dtype, backend=backend)

    return FormatSpec(
        name, description, element="INT4", element_bits=4, numeric_type="int", scale="16-bit", scale_bits=16,
        block_size=group_size, pack=INT4_PER_INT32, aliases=aliases, labels=labels,
        checkpoint_format="pack-quantized", stored={"weight_packed": torch.int32}, encode=encode,
        decode=_decode_int4, fake_quantize_weight=fake_quantize,
    )


SPECS = (
    FormatSpec(
        "int8", "INT8 symmetric per output channel", element="INT8", element_bits=8, numeric_type="int",
        scale="float32", scale_bits=32, block_size=None, labels=("w8a8", "w8a16"), checkpoint_format="int-quantized",
        stored={"weight": torch.int8}, encode=_encode_int8, decode=_decode_int8,
        fake_quantize_weight=_fake_quantize_int8, activation="INT8 symmetric, dynamic per token, scale amax/127",
        fake_quantize_activation=fake_quantize_activation_ref, row_local=True,
    ),
    *(_int4_spec(group_size) for group_size in (32, 128)),
    _int4_spec(None),
)
