"""Triton kernels for NVFP4 (see nvfp4.py for the convention); bit-identical to nvfp4.quantize_ref.

Each program handles BLOCKS consecutive 16-element blocks of the flattened weight. The wrappers do no
synchronizing value checks (nvfp4.quantize / dequantize do), so they can be timed as kernels.
"""

import torch
import triton
import triton.language as tl

from lowbit.quant.formats import minifloat_triton as mft
from lowbit.quant.formats import nvfp4_layout as layout
from lowbit.quant.formats.backend import check_out_dtype

# launch parameters from the BLOCKS x num_warps sweeps in perf/quant_formats_bench.py (H100, 2026-11-26/27)
QUANTIZE_BLOCKS, QUANTIZE_WARPS = 64, 2
DEQUANTIZE_BLOCKS, DEQUANTIZE_WARPS = 64, 2
ZERO_BLOCK_SCALE = tl.constexpr(layout.ZERO_BLOCK_SCALE)


@triton.jit
def _quantize_kernel(
    x_ptr, global_scale_ptr, packed_ptr, scale_ptr, n_blocks, BLOCKS: tl.constexpr, NATIVE: tl.constexpr
):
    """packed_ptr: the uint8 output viewed as int32, two words (eight codes each) per 16-element block."""
    block = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)  # (BLOCKS,)
    in_range = block < n_blocks
    word = tl.arange(0, 2)[None, :, None]
    offsets = block[:, None, None] * 16 + word * 8 + tl.arange(0, 8)[None, None, :]  # (BLOCKS, 2, 8)
    x = tl.load(x_ptr + offsets, mask=in_range[:, None, None], other=0.0).to(tl.float32)
    global_scale = tl.load(global_scale_ptr)

    block_amax = mft.bits_to_float(tl.max(tl.max(mft.abs_bits(x), axis=2), axis=1))  # (BLOCKS,); x is finite
    e2m1_max = tl.full(block_amax.shape, mft.E2M1_MAX, tl.float32)
    unrounded_scale = tl.math.div_rn(block_amax, e2m1_max) * global_scale
    block_scale = mft.decode_e4m3(mft.encode_e4m3(unrounded_scale, NATIVE), NATIVE)  # E4M3 rounding
    block_scale = tl.where(block_scale == 0.0, ZERO_BLOCK_SCALE, block_scale)
    effective = tl.math.div_rn(block_scale, tl.full(block_scale.shape, 1.0, tl.float32) * global_scale)
    codes = mft.encode_e2m1(mft.divide_exactly(x, mft.reciprocal64(effective)[:, None, None]))  # (BLOCKS, 2, 8)

    word_offsets = block[:, None] * 2 + tl.arange(0, 2)[None, :]
    tl.store(packed_ptr + word_offsets, mft.pack_nibbles(codes), mask=in_range[:, None])
    tl.store(scale_ptr + block, mft.encode_e4m3(block_scale, NATIVE).to(tl.uint8), mask=in_range)


@triton.jit
def _dequantize_kernel(
    packed_ptr, scale_ptr, global_scale_ptr, out_ptr, n_blocks,
    BLOCKS: tl.constexpr, OUT_IS_BF16: tl.constexpr, NATIVE: tl.constexpr,
):
    block = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)
    in_range = block < n_blocks
    packed_offsets = block[:, None] * 8 + tl.arange(0, 8)[None, :]  # (BLOCKS, 8)
    packed = tl.load(packed_ptr + packed_offsets, mask=in_range[:, None], other=0).to(tl.int32)
    scale_code = tl.load(scale_ptr + block, mask=in_range, other=0).to(tl.int32)
    global_scale = tl.load(global_scale_ptr)

    effective = tl.math.div_rn(
        mft.decode_e4m3(scale_code, NATIVE), tl.full(scale_code.shape, 1.0, tl.float32) * global_scale
    )
    low = mft.e2m1_decode(packed & 0xF) * effective[:, None]
    high = mft.e2m1_decode(packed >> 4) * effective[:, None]
    values = tl.reshape(tl.join(low, high), (BLOCKS, 16))
    offsets = block[:, None] * 16 + tl.arange(0, 16)[None, :]
    mft.store_values(out_ptr, offsets, values, in_range[:, None], OUT_IS_BF16)


def quantize_triton(weight: torch.Tensor, global_scale: torch.Tensor) -> layout.NVFP4Weight:
    """Kernel twin of nvfp4.quantize_ref (same validation, no NaN/Inf check: nvfp4.quantize does that)."""
    layout.check_weight(weight)
    global_scale = layout.check_global_scale(global_scale, weight.device, check_value=False)
    x = weight.contiguous()
    n_blocks = x.numel() // layout.BLOCK_SIZE
    packed = torch.empty((*x.shape[:-1], x.shape[-1] // 2), dtype=torch.uint8, device=x.device)
    scale = torch.empty((*x.shape[:-1], x.shape[-1] // layout.BLOCK_SIZE), dtype=torch.uint8, device=x.device)
    grid = (triton.cdiv(n_blocks, QUANTIZE_BLOCKS),)
    _quantize_kernel[grid](
        x, global_scale, packed.view(torch.int32), scale, n_blocks,
        BLOCKS=QUANTIZE_BLOCKS, NATIVE=mft.native_casts(), num_warps=QUANTIZE_WARPS,
    )
    return layout.NVFP4Weight(packed, scale.view(torch.float8_e4m3fn), global_scale)


def dequantize_triton(q: layout.NVFP4Weight, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    layout.check_quantized(q)
    check_out_dtype(out_dtype)
    packed = q.weight_packed.contiguous()
    global_scale = layout.check_global_scale(q.weight_global_scale, packed.device, check_value=False)
    n_blocks = packed.numel() * 2 // layout.BLOCK_SIZE
    out = torch.empty((*packed.shape[:-1], packed.shape[-1] * 2), dtype=out_dtype, device=packed.device)
    grid = (triton.cdiv(n_blocks, DEQUANTIZE_BLOCKS),)
    scale = q.weight_scale.contiguous().view(torch.uint8)
    out_arg, out_is_bf16 = mft.output_view(out)
    _dequantize_kernel[grid](
        packed, scale, global_scale, out_arg, n_blocks,
        BLOCKS=DEQUANTIZE_BLOCKS, OUT_IS_BF16=out_is_bf16, NATIVE=mft.native_casts(), num_warps=DEQUANTIZE_WARPS,
    )
    return out
