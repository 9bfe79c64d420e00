"""Fused quantize -> dequantize Triton kernels for activations, one launch per call (NVFP4: one amax
reduction first); bit-identical to the references in fake_quant.py (see there for each convention).

- int8 / fp8 per token: one program per row, two passes over the row (amax, then quantize-dequantize; the
  second pass reads the row back from L2); the row length is a compile-time constant.
- mxfp8 / mxfp4 / nvfp4: each program handles BLOCKS consecutive blocks of the flattened input, which keeps
  the block structure of the weight kernels (mx_triton.py, nvfp4_triton.py) but writes values, not codes.
No synchronizing checks: a row / block (NVFP4: tensor) holding NaN or Inf is written as NaN.
Format arithmetic (E2M1 / E4M3 / E8M0 rounding, exact division) comes from minifloat_triton, as in the
weight kernels.
"""

import torch
import triton
import triton.language as tl

from lowbit.quant.formats import fp8, mx, nvfp4
from lowbit.quant.formats import minifloat_triton as mft
from lowbit.quant.formats.backend import check_float_tensor, check_last_dim_divisible

ROW_CHUNK = 2048
MX_BLOCKS, MX_WARPS = 64, 4
NVFP4_BLOCKS, NVFP4_WARPS = 128, 4
INT8_MAX = tl.constexpr(127.0)
FP8_SCALE_FLOOR = tl.constexpr(fp8.SCALE_FLOOR)
NVFP4_AMAX_FLOOR = tl.constexpr(nvfp4.AMAX_FLOOR)
NVFP4_GLOBAL_NUMERATOR = tl.constexpr(nvfp4.GLOBAL_SCALE_NUMERATOR)
NVFP4_ZERO_BLOCK_SCALE = tl.constexpr(nvfp4.ZERO_BLOCK_SCALE)


@triton.jit
def _e2m1_value(x):
    """fp32 x rounded half to even onto the E2M1 grid, saturating at +-6, sign kept."""
    return mft.e2m1_decode(mft.encode_e2m1(x))


@triton.jit
def _nan_like(x):
    return mft.bits_to_float(tl.full(x.shape, mft.F32_QUIET_NAN_BITS, tl.int32))


@triton.jit
def _per_token_kernel(
    x_ptr, out_ptr, n_cols: tl.constexpr,
    IS_INT8: tl.constexpr, OUT_IS_BF16: tl.constexpr, CHUNK: tl.constexpr, NATIVE: tl.constexpr,
):
    row_start = tl.program_id(0).to(tl.int64) * n_cols
    columns = tl.arange(0, CHUNK)
    amax = tl.zeros((CHUNK,), tl.float32)
    bad = tl.zeros((CHUNK,), tl.int32)
    for start in range(0, n_cols, CHUNK):
        x = tl.load(x_ptr + row_start + start + columns, mask=start + columns < n_cols, other=0.0).to(tl.float32)
        finite = mft.is_finite(x)
        bad = tl.maximum(bad, (~finite).to(tl.int32))
        amax = tl.maximum(amax, tl.where(finite, tl.abs(x), 0.0))
    row_amax = tl.max(amax, axis=0)
    row_bad = tl.max(bad, axis=0) != 0
    ones = tl.full((CHUNK,), 1.0, tl.float32)
    if IS_INT8:
        scale = tl.math.div_rn(ones * row_amax, ones * INT8_MAX)
        inverse = tl.where(row_amax > 0.0, tl.math.div_rn(INT8_MAX * ones, ones * row_amax), 0.0)
    else:
        scale = tl.maximum(tl.math.div_rn(ones * row_amax, ones * mft.E4M3_MAX), FP8_SCALE_FLOOR)
    for start in range(0, n_cols, CHUNK):
        mask = start + columns < n_cols
        x = tl.load(x_ptr + row_start + start + columns, mask=mask, other=0.0).to(tl.float32)
        if IS_INT8:
            q = (x * inverse + mft.ROUND_HALF_EVEN_MAGIC) - mft.ROUND_HALF_EVEN_MAGIC
            values = tl.minimum(tl.maximum(q, -INT8_MAX - 1.0), INT8_MAX) * scale
        else:
            codes = mft.encode_e4m3(mft.divide_exactly(x, mft.reciprocal64(scale)), NATIVE)
            values = mft.decode_e4m3(codes, NATIVE) * scale
        values = tl.where(row_bad, _nan_like(values), values)
        mft.store_values(out_ptr, row_start + start + columns, values, mask, OUT_IS_BF16)


@triton.jit
def _mx_kernel(
    x_ptr, out_ptr, n_blocks,
    BLOCKS: tl.constexpr, IS_FP4: tl.constexpr, ELEMENT_EMAX: tl.constexpr, ELEMENT_MAX: tl.constexpr,
    RULE: tl.constexpr, OUT_IS_BF16: tl.constexpr, NATIVE: tl.constexpr,
):
    block = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)  # (BLOCKS,)
    in_range = block < n_blocks
    offsets = block[:, None] * 32 + tl.arange(0, 32)[None, :]  # (BLOCKS, 32)
    x = tl.load(x_ptr + offsets, mask=in_range[:, None], other=0.0).to(tl.float32)
    finite = mft.is_finite(x)
    poisoned = tl.max((~finite).to(tl.int32), axis=1) != 0  # (BLOCKS,)
    x = tl.where(finite, x, 0.0)
    code = mft.e8m0_code_from_amax(tl.max(tl.abs(x), axis=1), ELEMENT_EMAX, ELEMENT_MAX, RULE)
    first, second = mft.inverse_e8m0_factors(code)
    scaled = (x * first[:, None]) * second[:, None]
    if IS_FP4:
        elements = _e2m1_value(scaled)
    else:
        elements = mft.decode_e4m3(mft.encode_e4m3(scaled, NATIVE), NATIVE)
    values = elements * mft.e8m0_decode(code)[:, None]
    values = tl.where(poisoned[:, None], _nan_like(values), values)
    mft.store_values(out_ptr, offsets, values, in_range[:, None], OUT_IS_BF16)


@triton.jit
def _nvfp4_kernel(
    x_ptr, amax_ptr, out_ptr, n_blocks, BLOCKS: tl.constexpr, OUT_IS_BF16: tl.constexpr, NATIVE: tl.constexpr
):
    block = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)  # (BLOCKS,)
    in_range = block < n_blocks
    offsets = block[:, None] * 16 + tl.arange(0, 16)[None, :]  # (BLOCKS, 16)
    x = tl.load(x_ptr + offsets, mask=in_range[:, None], other=0.0).to(tl.float32)
    tensor_amax = tl.load(amax_ptr).to(tl.float32)
    tensor_bad = ~mft.is_finite(tensor_amax)
    ones = tl.full((BLOCKS,), 1.0, tl.float32)
    global_scale = tl.math.div_rn(NVFP4_GLOBAL_NUMERATOR * ones, ones * tl.maximum(tensor_amax, NVFP4_AMAX_FLOOR))

    block_amax = tl.max(tl.abs(x), axis=1)  # (BLOCKS,)
    unrounded_scale = tl.math.div_rn(block_amax, ones * mft.E2M1_MAX) * global_scale
    block_scale = mft.decode_e4m3(mft.encode_e4m3(unrounded_scale, NATIVE), NATIVE)  # E4M3 rounding
    block_scale = tl.where(block_scale == 0.0, NVFP4_ZERO_BLOCK_SCALE, block_scale)
    effective = tl.math.div_rn(block_scale, global_scale)
    quotient = mft.divide_exactly(x, mft.reciprocal64(effective)[:, None])
    values = _e2m1_value(quotient) * effective[:, None]
    values = tl.where(tensor_bad, _nan_like(values), values)
    mft.store_values(out_ptr, offsets, values, in_range[:, None], OUT_IS_BF16)


def fake_quantize(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """x (..., K) fake-quantized per `fmt` ("int8", "fp8", "mxfp8", "mxfp4", "nvfp4"), in x's dtype."""
    check_float_tensor(x, "activation")
    source = x.contiguous()
    out = torch.empty_like(source)
    native = mft.native_casts()
    out_arg, out_is_bf16 = mft.output_view(out, native)
    if fmt in ("int8", "fp8"):
        n_cols = source.shape[-1]
        chunk = min(ROW_CHUNK, triton.next_power_of_2(n_cols))
        _per_token_kernel[(source.numel() // n_cols,)](
            source, out_arg, n_cols, IS_INT8=fmt == "int8", OUT_IS_BF16=out_is_bf16, CHUNK=chunk, NATIVE=native,
            enable_fp_fusion=False,  # x * inverse must round before the round-half-even add, as in the reference
        )
    elif fmt in ("mxfp8", "mxfp4"):
        check_last_dim_divisible(source, mx.BLOCK_SIZE, "activation")
        element = "fp4" if fmt == "mxfp4" else "fp8"
        n_blocks = source.numel() // mx.BLOCK_SIZE
        _mx_kernel[(triton.cdiv(n_blocks, MX_BLOCKS),)](
            source, out_arg, n_blocks,
            BLOCKS=MX_BLOCKS, IS_FP4=element == "fp4", ELEMENT_EMAX=mx.ELEMENT_EMAX[element],
            ELEMENT_MAX=mx.ELEMENT_MAX[element], RULE=mft.RULE_IDS[mx.CHECKPOINT_SCALE_RULE],
            OUT_IS_BF16=out_is_bf16, NATIVE=native, num_warps=MX_WARPS,
        )
    elif fmt == "nvfp4":
        check_last_dim_divisible(source, nvfp4.BLOCK_SIZE, "activation")
        amax = torch.linalg.vector_norm(source, ord=float("inf")).reshape(1)  # NaN/Inf propagate
        n_blocks = source.numel() // nvfp4.BLOCK_SIZE
        _nvfp4_kernel[(triton.cdiv(n_blocks, NVFP4_BLOCKS),)](
            source, amax, out_arg, n_blocks, BLOCKS=NVFP4_BLOCKS, OUT_IS_BF16=out_is_bf16, NATIVE=native,
            num_warps=NVFP4_WARPS,
        )
    else:
        raise ValueError(f"activation format must be one of int8, fp8, mxfp8, mxfp4, nvfp4, got {fmt!r}")
    return out.reshape(x.shape)
