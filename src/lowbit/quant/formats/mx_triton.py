"""Triton kernels for MXFP4 / MXFP8 (see mx.py for the convention); bit-identical to mx.quantize_ref.

Each program handles BLOCKS consecutive 32-element blocks of the flattened weight.
"""

import torch
import triton
import triton.language as tl

from lowbit.quant.formats import minifloat as mf
from lowbit.quant.formats import minifloat_triton as mft
from lowbit.quant.formats import mx_layout as layout
from lowbit.quant.formats.backend import check_out_dtype

# launch parameters from the BLOCKS x num_warps sweep in perf/quant_formats_bench.py (H100, 2026-11-26; FP8
# 2026-12-05: 100% of copy against 75% with (128, 2) since the block maxima became paired)
QUANTIZE_LAUNCH = {"fp4": (128, 4), "fp8": (64, 4)}  # element -> (BLOCKS, num_warps)
# element -> (BLOCKS, num_warps); FP4 from the H100 sweep of its word-per-lane kernel (2026-12-05: 95-97% of copy,
# two words per lane)
DEQUANTIZE_LAUNCH = {"fp4": (64, 4), "fp8": (256, 2)}
E8M0_NAN = tl.constexpr(mf.E8M0_NAN)


@triton.jit
def _quantize_kernel(
    x_ptr,
    data_ptr,
    scale_ptr,
    n_blocks,
    BLOCKS: tl.constexpr,
    IS_FP4: tl.constexpr,
    ELEMENT_EMAX: tl.constexpr,
    ELEMENT_MAX: tl.constexpr,
    RULE: tl.constexpr,
    NATIVE: tl.constexpr,
):
    """Each 32-element block is read as (4, 8): FP4 packs each row of 8 codes into one int32 word
    (data_ptr is then the uint8 output viewed as int32); FP8 stores one byte per element."""
    block = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)  # (BLOCKS,)
    in_range = block < n_blocks
    word = tl.arange(0, 4)[None, :, None]
    offsets = block[:, None, None] * 32 + word * 8 + tl.arange(0, 8)[None, None, :]  # (BLOCKS, 4, 8)
    x = tl.load(x_ptr + offsets, mask=in_range[:, None, None], other=0.0)

    amax_bits = mft.block_amax_bits(x, NATIVE)  # (BLOCKS,)
    poisoned = amax_bits >= mft.F32_INF_BITS  # a NaN or Inf in the block; its elements are replaced below
    amax = mft.bits_to_float(tl.where(poisoned, 0, amax_bits))
    code = mft.e8m0_code_from_amax(amax, ELEMENT_EMAX, ELEMENT_MAX, RULE)
    # 2**(127 - code) is a normal number: the largest finite amax, below 2**128, gives a code of at most 253
    # (FP4's ELEMENT_EMAX of 2, the even rule rounding up), so one exact multiplication scales each element
    # as minifloat.inverse_e8m0_factors' two do: exactly where the result is normal, and results below the normal
    # range lie far below every element format's smallest step, encoding to a signed zero either way
    scaled = x.to(tl.float32) * mft.inverse_e8m0(code)[:, None, None]
    if IS_FP4:
        elements = mft.encode_e2m1(scaled)
    else:
        elements = mft.encode_e4m3(scaled, NATIVE)
    elements = tl.where(poisoned[:, None, None], 0, elements)
    code = tl.where(poisoned, E8M0_NAN, code)

    if IS_FP4:
        word_offsets = block[:, None] * 4 + tl.arange(0, 4)[None, :]
        tl.store(data_ptr + word_offsets, mft.pack_nibbles(elements), mask=in_range[:, None])
    else:
        tl.store(data_ptr + offsets, elements.to(tl.uint8), mask=in_range[:, None, None])
    tl.store(scale_ptr + block, code.to(tl.uint8), mask=in_range)


@triton.jit
def _dequantize_kernel(
    data_ptr, scale_ptr, out_ptr, n_blocks,
    BLOCKS: tl.constexpr, IS_FP4: tl.constexpr, OUT_IS_BF16: tl.constexpr, NATIVE: tl.constexpr,
):
    if IS_FP4:  # data_ptr: the uint8 codes viewed as int32, four words per block, one word per lane
        word, in_range = mft.words_per_lane(tl.program_id(0).to(tl.int64) * (4 * BLOCKS), 4 * BLOCKS, 4 * n_blocks)
        scale = mft.e8m0_decode(tl.load(scale_ptr + word // 4, mask=in_range, other=0).to(tl.int32))
        mft.dequantize_e2m1_words(data_ptr, out_ptr, word, in_range, scale, OUT_IS_BF16)
    else:
        block = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)
        in_range = block < n_blocks
        scale = mft.e8m0_decode(tl.load(scale_ptr + block, mask=in_range, other=0).to(tl.int32))  # (BLOCKS,)
        offsets = block[:, None] * 32 + tl.arange(0, 32)[None, :]  # (BLOCKS, 32)
        codes = tl.load(data_ptr + offsets, mask=in_range[:, None], other=0).to(tl.int32)
        values = mft.decode_e4m3(codes, NATIVE) * scale[:, None]
        mft.store_values(out_ptr, offsets, values, in_range[:, None], OUT_IS_BF16)


def quantize_triton(
    weight: torch.Tensor, element: str = "fp4", scale_rule: str = layout.CHECKPOINT_SCALE_RULE
) -> layout.MXWeight:
    layout.check_options(element, scale_rule)
    layout.check_weight(weight)
    x = weight.contiguous()
    n_blocks = x.numel() // layout.BLOCK_SIZE
    is_fp4 = element == "fp4"
    data_columns = x.shape[-1] // 2 if is_fp4 else x.shape[-1]
    data = torch.empty((*x.shape[:-1], data_columns), dtype=torch.uint8, device=x.device)
    scale = torch.empty((*x.shape[:-1], x.shape[-1] // layout.BLOCK_SIZE), dtype=torch.uint8, device=x.device)
    blocks, warps = QUANTIZE_LAUNCH[element]
    _quantize_kernel[(triton.cdiv(n_blocks, blocks),)](
        x, data.view(torch.int32) if is_fp4 else data, scale, n_blocks,
        BLOCKS=blocks, IS_FP4=is_fp4, ELEMENT_EMAX=layout.ELEMENT_EMAX[element],
        ELEMENT_MAX=layout.ELEMENT_MAX[element],
        RULE=mft.RULE_IDS[scale_rule], NATIVE=mft.native_casts(x.device), num_warps=warps,
    )
    return layout.MXWeight(data if is_fp4 else data.view(torch.float8_e4m3fn), scale)


def dequantize_triton(
    q: layout.MXWeight, element: str = "fp4", out_dtype: torch.dtype = torch.bfloat16
) -> torch.Tensor:
    layout.check_options(element, layout.CHECKPOINT_SCALE_RULE)
    columns = layout.check_quantized(q, element)
    check_out_dtype(out_dtype)
    data = q.data.contiguous().view(torch.uint8)
    out = torch.empty((*data.shape[:-1], columns), dtype=out_dtype, device=data.device)
    n_blocks = out.numel() // layout.BLOCK_SIZE
    native = mft.native_casts(data.device)
    out_arg, out_is_bf16 = mft.output_view(out, native)
    blocks, warps = DEQUANTIZE_LAUNCH[element]
    _dequantize_kernel[(triton.cdiv(n_blocks, blocks),)](
        data.view(torch.int32) if element == "fp4" else data, q.scale.contiguous(), out_arg, n_blocks,
        BLOCKS=blocks, IS_FP4=element == "fp4", OUT_IS_BF16=out_is_bf16, NATIVE=native,
        num_warps=warps,
    )
    return out
