"""Triton kernels for INT8 / INT4 (see integer.py for the convention); bit-identical to the references.

- per-group (INT8 or INT4, power-of-two group): one program per BLOCKS consecutive groups, one pass;
- per-channel INT8: one program per row, two passes (amax, then cast); row length is a compile-time constant;
- dequantize: one program per (row, chunk of columns).
Rounding: the fp32 scale is floored and rounded to the scale dtype in the kernel (integer arithmetic on its
bits, see `_round_significand`), so storing it in that dtype is exact whatever the cast's rounding; codes
are the correctly rounded x / scale (minifloat_triton.divide_exactly), then half to even with the 1.5 * 2**23
trick (|q| <= 128 here, `_biased_codes`); INT4 packs the sums' bits and subtracts the trick's bias once per word.
A group holding NaN/Inf gets a NaN scale, which integer.quantize_* turns into the reference's ValueError.
"""

import torch
import triton
import triton.language as tl

from lowbit.quant.formats import integer_layout as layout
from lowbit.quant.formats import minifloat_triton as mft
from lowbit.quant.formats.backend import check_matrix, check_out_dtype, check_packed
from lowbit.quant.formats.launch import launch_parameters

# per-group kernel: elements per program and warps (H100 sweep, 2026-12-05: INT4 group 128 at 99% of copy on 1 or
# 2 warps, against 93% with 2048 on 4, whose warps split each group's words and met in shared memory for its
# maximum). One warp: nothing crosses warps, no barrier, 10.4 instructions per element against 15.5 on 2 warps
# (sm_90 SASS), which matters where the kernel is issue-bound (the H200)
GROUP_ELEMENTS_PER_PROGRAM, GROUP_WARPS = 1024, 1
ROW_CHUNK = 2048
DEQUANT_CHUNK, DEQUANT_WARPS = 1024, 4  # columns per program; other GPUs' choices for INT4 in launch.py
INT4_OFFSET = tl.constexpr(layout.INT4_OFFSET)
# fp32 significand bits a scale dtype lacks (fp32 23 mantissa bits, bf16 7, fp16 10)
SIGNIFICAND_BITS_DROPPED = {torch.float32: 0, torch.bfloat16: 16, torch.float16: 13}


@triton.jit
def _round_significand(x, DROP: tl.constexpr):
    """Positive normal fp32 x rounded half to even to 23 - DROP mantissa bits, in integer arithmetic (Triton's
    interpreter truncates a bf16 cast). A carry into the exponent is the correct result; no overflow here."""
    bits = mft.float_bits(x)
    bits = (bits + ((1 << (DROP - 1)) - 1) + ((bits >> DROP) & 1)) >> DROP
    return mft.bits_to_float(bits << DROP)


@triton.jit
def _scale(amax, bad, HALF_RANGE: tl.constexpr, FLOOR: tl.constexpr, DROP: tl.constexpr):
    """amax / HALF_RANGE in fp32, floored at the scale dtype's smallest normal, rounded to that dtype (floor
    first is the same: the floor is a value of the dtype). NaN where the group held NaN/Inf."""
    scale = tl.maximum(tl.math.div_rn(amax, tl.full(amax.shape, HALF_RANGE, tl.float32)), FLOOR)
    if DROP > 0:
        scale = _round_significand(scale, DROP)
    return tl.where(bad, mft.bits_to_float(tl.full(amax.shape, mft.F32_QUIET_NAN_BITS, tl.int32)), scale)


@triton.jit
def _biased_codes(x, reciprocal, Q_MAX: tl.constexpr, OFFSET: tl.constexpr):
    """int32 fp32 bits whose value minus ROUND_HALF_EVEN_MAGIC_BITS is the code of x / scale (IEEE fp32 quotient,
    see mft.divide_exactly) rounded half to even, clamped to at most Q_MAX, plus an even OFFSET.

    Adding 1.5 * 2**23 + OFFSET to the quotient rounds it to an integer held in the sum's low bits (an even
    OFFSET keeps the parity that half-to-even looks at), so there is no float-to-int conversion and the clamp is
    integer. Only the upper bound is clamped: the scale is at least amax / HALF_RANGE rounded down by at most
    2**-8 (bf16), so |quotient| <= HALF_RANGE * 1.004 < -Q_MIN + 0.5 and the lowest code is never passed (NaN
    in a NaN group, whose codes are discarded)."""
    q = mft.divide_exactly(x, reciprocal)
    biased = mft.float_bits(q + (mft.ROUND_HALF_EVEN_MAGIC + OFFSET))
    return tl.minimum(biased, mft.ROUND_HALF_EVEN_MAGIC_BITS + (Q_MAX + OFFSET))


@triton.jit
def _group_kernel(
    x_ptr, out_ptr, scale_ptr, n_groups,
    GROUP: tl.constexpr, BLOCKS: tl.constexpr, HALF_RANGE: tl.constexpr,
    Q_MAX: tl.constexpr, PACK_INT4: tl.constexpr, FLOOR: tl.constexpr, DROP: tl.constexpr,
    NATIVE: tl.constexpr,
):
    """Each group is read as (GROUP / 8, 8): INT4 packs each row of 8 codes into one int32 word. The scale is
    a value of scale_ptr's dtype (FLOOR, DROP: see _scale), stored exactly."""
    group = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)  # (BLOCKS,)
    in_range = group < n_groups
    word = tl.arange(0, GROUP // 8)[None, :, None]
    offsets = group[:, None, None] * GROUP + word * 8 + tl.arange(0, 8)[None, None, :]  # (BLOCKS, GROUP/8, 8)
    x = tl.load(x_ptr + offsets, mask=in_range[:, None, None], other=0.0)
    amax_bits = mft.block_amax_bits(x, NATIVE)  # (BLOCKS,)
    x = x.to(tl.float32)
    bad = amax_bits >= mft.F32_INF_BITS  # a NaN or Inf in the group: NaN scale (quantize_* raises)
    scale = _scale(mft.bits_to_float(tl.where(bad, 0, amax_bits)), bad, HALF_RANGE, FLOOR, DROP)
    reciprocal = mft.reciprocal64(scale)[:, None, None]
    if PACK_INT4:
        biased = _biased_codes(x, reciprocal, Q_MAX, INT4_OFFSET)  # nibble + ROUND_HALF_EVEN_MAGIC_BITS
        word_offsets = group[:, None] * (GROUP // 8) + tl.arange(0, GROUP // 8)[None, :]
        words = mft.pack_biased_nibbles(biased, mft.ROUND_HALF_EVEN_MAGIC_BITS)
        tl.store(out_ptr + word_offsets, words, mask=in_range[:, None])
    else:
        q = _biased_codes(x, reciprocal, Q_MAX, 0) - mft.ROUND_HALF_EVEN_MAGIC_BITS
        tl.store(out_ptr + offsets, q.to(tl.int8), mask=in_range[:, None, None])
    tl.store(scale_ptr + group, scale.to(scale_ptr.dtype.element_ty), mask=in_range)


@triton.jit
def _channel_kernel(x_ptr, out_ptr, scale_ptr, n_cols: tl.constexpr, HALF_RANGE: tl.constexpr, CHUNK: tl.constexpr,
                    FLOOR: tl.constexpr):
    """fp32 scale per row (the per-channel scale dtype)."""
    row_start = tl.program_id(0).to(tl.int64) * n_cols
    columns = tl.arange(0, CHUNK)
    amax_bits = tl.zeros((CHUNK,), tl.int32)
    for start in range(0, n_cols, CHUNK):
        x = tl.load(x_ptr + row_start + start + columns, mask=start + columns < n_cols, other=0.0).to(tl.float32)
        amax_bits = tl.maximum(amax_bits, mft.abs_bits(x))
    amax_bits = tl.max(amax_bits, axis=0)
    bad = amax_bits >= mft.F32_INF_BITS
    scale = _scale(mft.bits_to_float(tl.where(bad, 0, amax_bits)), bad, HALF_RANGE, FLOOR, 0)
    tl.store(scale_ptr + tl.program_id(0), scale)
    reciprocal = mft.reciprocal64(scale)
    for start in range(0, n_cols, CHUNK):
        mask = start + columns < n_cols
        x = tl.load(x_ptr + row_start + start + columns, mask=mask, other=0.0).to(tl.float32)
        q = _biased_codes(x, reciprocal, 127, 0) - mft.ROUND_HALF_EVEN_MAGIC_BITS
        tl.store(out_ptr + row_start + start + columns, q.to(tl.int8), mask=mask)


@triton.jit
def _dequantize_kernel(
    q_ptr, scale_ptr, out_ptr, n_cols, n_scale_cols,
    GROUP: tl.constexpr, IS_INT4: tl.constexpr, OUT_IS_BF16: tl.constexpr, CHUNK: tl.constexpr,
):
    """Columns are handled as (CHUNK / 8, 8) runs of 8: INT4 loads each run's int32 word once and unpacks its 8
    nibbles. Where GROUP is a multiple of 8 (INT4 always) no group splits a run, and each run loads its scale
    once instead of once per column."""
    row = tl.program_id(0).to(tl.int64)
    run = tl.program_id(1).to(tl.int64) * (CHUNK // 8) + tl.arange(0, CHUNK // 8)  # (CHUNK / 8,)
    cols = run[:, None] * 8 + tl.arange(0, 8)[None, :]  # (CHUNK / 8, 8)
    mask = cols < n_cols
    if IS_INT4:  # n_cols is a multiple of 8
        words = tl.load(q_ptr + row * (n_cols // 8) + run, mask=run < n_cols // 8, other=0)
        q = ((words[:, None] >> (tl.arange(0, 8) * 4)[None, :]) & 0xF) - INT4_OFFSET
    else:
        q = tl.load(q_ptr + row * n_cols + cols, mask=mask, other=0).to(tl.int32)
    scale_row = scale_ptr + row * n_scale_cols
    if GROUP % 8 == 0:
        scale = tl.load(scale_row + run * 8 // GROUP, mask=run * 8 < n_cols, other=1.0).to(tl.float32)[:, None]
    else:
        scale = tl.load(scale_row + cols // GROUP, mask=mask, other=1.0).to(tl.float32)
    mft.store_values(out_ptr, row * n_cols + cols, q.to(tl.float32) * scale, mask, OUT_IS_BF16)


def _check_group_for_kernel(group: int) -> None:
    if group & (group - 1) or group < 8:
        raise ValueError(f"the Triton kernel needs a power-of-two group size >= 8, got {group}; use backend='ref'")


def quantize_int8_triton(weight: torch.Tensor, group_size: int | None = None) -> layout.IntWeight:
    check_matrix(weight, "weight")
    group = layout.group_size_of(weight, group_size)
    x = weight.contiguous()
    rows, cols = x.shape
    q = torch.empty((rows, cols), dtype=torch.int8, device=x.device)
    if group_size is None:
        scale = torch.empty((rows, 1), dtype=layout.CHANNEL_SCALE_DTYPE, device=x.device)
        _channel_kernel[(rows,)](x, q, scale, cols, HALF_RANGE=127.5, CHUNK=ROW_CHUNK,
                                 FLOOR=layout.scale_floor(layout.CHANNEL_SCALE_DTYPE))
    else:
        _check_group_for_kernel(group)
        scale = _launch_groups(x, q, group, layout.INT8_RANGE, pack_int4=False)
    return layout.IntWeight(q, scale)


def quantize_int4_triton(weight: torch.Tensor, group_size: int = 128) -> layout.IntWeight:
    check_matrix(weight, "weight")
    layout.check_int4_group_size(group_size)
    group = layout.group_size_of(weight, group_size)
    x = weight.contiguous()
    rows, cols = x.shape
    words = torch.empty((rows, cols // layout.INT4_PER_INT32), dtype=torch.int32, device=x.device)
    scale = _launch_groups(x, words, group, layout.INT4_RANGE, pack_int4=True)
    return layout.IntWeight(words, scale)


def _launch_groups(x, out, group: int, q_range: tuple[int, int], pack_int4: bool) -> torch.Tensor:
    """Quantize x's groups into out; returns the (N, K/G) scales in layout.group_scale_dtype(x.dtype)."""
    scale_dtype = layout.group_scale_dtype(x.dtype)
    scale = torch.empty((x.shape[0], x.shape[1] // group), dtype=scale_dtype, device=x.device)
    n_groups = x.numel() // group
    blocks = max(1, GROUP_ELEMENTS_PER_PROGRAM // group)
    _group_kernel[(triton.cdiv(n_groups, blocks),)](
        x, out, scale, n_groups,
        GROUP=group, BLOCKS=blocks, HALF_RANGE=(q_range[1] - q_range[0]) / 2,
        Q_MAX=q_range[1], PACK_INT4=pack_int4,
        FLOOR=layout.scale_floor(scale_dtype), DROP=SIGNIFICAND_BITS_DROPPED[scale_dtype],
        NATIVE=mft.native_casts(x.device), num_warps=GROUP_WARPS,
    )
    return scale


def dequantize_triton(q: layout.IntWeight, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Dequantize INT8 (int8 data) or INT4 (int32 packed data) to out_dtype."""
    check_out_dtype(out_dtype)
    is_int4 = q.data.dtype == torch.int32
    check_packed(q.data, torch.int32 if is_int4 else torch.int8, "data")
    rows = q.data.shape[0]
    cols = q.data.shape[1] * (layout.INT4_PER_INT32 if is_int4 else 1)
    layout.check_scale(q.weight_scale, rows, cols)
    scale = q.weight_scale.contiguous()
    out = torch.empty((rows, cols), dtype=out_dtype, device=q.data.device)
    out_arg, out_is_bf16 = mft.output_view(out)
    default = (DEQUANT_CHUNK, DEQUANT_WARPS)
    chunk, warps = launch_parameters("int4 dequantize", default, out.device) if is_int4 else default
    _dequantize_kernel[(rows, triton.cdiv(cols, chunk))](
        q.data.contiguous(), scale, out_arg, cols, scale.shape[1],
        GROUP=cols // scale.shape[1], IS_INT4=is_int4, OUT_IS_BF16=out_is_bf16, CHUNK=chunk, num_warps=warps,
    )
    return out
