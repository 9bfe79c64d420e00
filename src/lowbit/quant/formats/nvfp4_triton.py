"""Triton kernels for NVFP4 (see nvfp4.py for the convention); bit-identical to nvfp4.quantize_ref.

Each program handles BLOCKS consecutive 16-element blocks of the flattened weight. The wrappers do no
synchronizing value checks (nvfp4.quantize / dequantize do), so they can be timed as kernels.

Quantizing is two launches. A block's divisor, E4M3 scale / global scale, takes one of only 128 values per
tensor (one per non-negative E4M3 code), so a one-program launch first tabulates their fp64 reciprocals
(`_divisor_table_kernel`: the IEEE division and the exact fp64 reciprocal that `divide_exactly` needs, done 128
times instead of once per block), and the quantize kernel looks each block's up by its scale code. That takes
about a tenth of the quantize kernel's instructions away, and the kernel is instruction-bound on an H200
(perf/RESULTS.md). Dequantizing is two launches the same way: the table holds the divisors themselves, for all
256 bytes a stored scale may hold, so each packed word's scale is one load instead of a decode and a division.

`quantize_unchecked_triton` is nvfp4.quantize's whole device side: a one-word zero fill, at most one reduction
launch, the table and the quantize launch, none of them waiting for the GPU:
- no global scale given: `amax_triton.amax_bits` reduces the weight to its amax, and the table launch derives
  the global scale 2688 / max(amax, AMAX_FLOOR) from it and stores it for the quantize kernel;
- a global scale given: the quantize kernel reads it, and programs whose blocks hold a NaN or an Inf record
  that with an atomic (none in a finite weight), so no separate pass over the weight looks for them.
Either way the returned int32 word, viewed as float32, is finite exactly when the weight is; nvfp4.quantize
checks it once, after the launches.
"""

import torch
import triton
import triton.language as tl

from lowbit.quant.formats import amax_triton
from lowbit.quant.formats import minifloat_triton as mft
from lowbit.quant.formats import nvfp4_layout as layout
from lowbit.quant.formats.backend import check_out_dtype

# launch parameters from the BLOCKS x num_warps sweeps in perf/quant_formats_bench.py (H100, 2026-11-26/27;
# dequantize 2026-12-05: 64 and 128 blocks on 4 warps tie at 96% of copy; 128 gives each lane two words, so
# fewer instructions per element)
QUANTIZE_BLOCKS, QUANTIZE_WARPS = 64, 2
DEQUANTIZE_BLOCKS, DEQUANTIZE_WARPS = 128, 4
ZERO_BLOCK_SCALE = tl.constexpr(layout.ZERO_BLOCK_SCALE)
AMAX_FLOOR = tl.constexpr(layout.AMAX_FLOOR)
GLOBAL_SCALE_NUMERATOR = tl.constexpr(layout.GLOBAL_SCALE_NUMERATOR)
ZERO_BLOCK_SCALE_CODE = tl.constexpr(layout.ZERO_BLOCK_SCALE_CODE)
SCALE_CODES = tl.constexpr(128)  # the E4M3 codes of non-negative scales: 0x00 .. 0x7F
DEQUANTIZE_SCALE_CODES = tl.constexpr(256)  # every byte a stored scale may hold
SCALE_CODE_MASK = tl.constexpr(SCALE_CODES.value - 1)


@triton.jit
def global_scale_from_amax(amax):
    """The NVFP4 global scale GLOBAL_SCALE_NUMERATOR / max(amax, AMAX_FLOOR) of a finite fp32 amax (a scalar, or
    one per block)."""
    amax = tl.maximum(amax, AMAX_FLOOR)
    return tl.math.div_rn(tl.full(amax.shape, GLOBAL_SCALE_NUMERATOR, tl.float32), amax)


@triton.jit
def global_scale_from_amax_bits(amax_bits):
    """`global_scale_from_amax` of a tensor's amax bits (amax_triton; a tensor holding NaN/Inf counts as amax 0,
    its output being discarded or written as NaN)."""
    return global_scale_from_amax(amax_triton.finite_amax(amax_bits))


@triton.jit
def scale_divisors(code, global_scale, FOR_QUANTIZE: tl.constexpr, NATIVE: tl.constexpr):
    """A block's divisor decode(c) / global_scale in IEEE fp32 for each E4M3 scale code c of `code`; FOR_QUANTIZE:
    code 0 stands for ZERO_BLOCK_SCALE (the scale a quantizer stores for an all-zero block)."""
    block_scale = mft.decode_e4m3(code, NATIVE)
    if FOR_QUANTIZE:
        block_scale = tl.where(code == 0, ZERO_BLOCK_SCALE, block_scale)
    return tl.math.div_rn(block_scale, tl.full(block_scale.shape, 1.0, tl.float32) * global_scale)


@triton.jit
def scale_code_divisors(global_scale, FOR_QUANTIZE: tl.constexpr, NATIVE: tl.constexpr):
    """(codes, their `scale_divisors`) for a table, over
    - FOR_QUANTIZE: the SCALE_CODES codes a quantizer computes;
    - else: every byte a stored scale may hold (DEQUANTIZE_SCALE_CODES: negative, zero and NaN codes too)."""
    if FOR_QUANTIZE:
        code = tl.arange(0, SCALE_CODES)
    else:
        code = tl.arange(0, DEQUANTIZE_SCALE_CODES)
    return code, scale_divisors(code, global_scale, FOR_QUANTIZE, NATIVE)


@triton.jit
def _divisor_table_kernel(global_scale_ptr, amax_bits_ptr, table_ptr, GLOBAL_FROM_AMAX: tl.constexpr,
                          FOR_QUANTIZE: tl.constexpr, NATIVE: tl.constexpr):
    """The `scale_code_divisors` of the global scale, into table_ptr:
    - FOR_QUANTIZE: fp64 (SCALE_CODES,), the reciprocal64 of each divisor (what `divide_exactly` takes);
    - else: fp32 (DEQUANTIZE_SCALE_CODES,), the divisors themselves, what the dequantize kernel multiplies by.

    GLOBAL_FROM_AMAX: amax_bits_ptr holds the weight's amax bits (amax_triton); the global scale is derived
    from them and stored to global_scale_ptr, where the quantize kernel reads it. Else it is read from there."""
    if GLOBAL_FROM_AMAX:
        global_scale = global_scale_from_amax_bits(tl.load(amax_bits_ptr))
        tl.store(global_scale_ptr, global_scale)
    else:
        global_scale = tl.load(global_scale_ptr)
    code, divisor = scale_code_divisors(global_scale, FOR_QUANTIZE, NATIVE)
    if FOR_QUANTIZE:
        tl.store(table_ptr + code, mft.reciprocal64(divisor))
    else:
        tl.store(table_ptr + code, divisor)


@triton.jit
def block_offsets(block):
    """(BLOCKS, 2, 8) element offsets of 16-element blocks, one 16-byte load (of 16-bit x) per thread and word."""
    return block[:, None, None] * 16 + tl.arange(0, 2)[None, :, None] * 8 + tl.arange(0, 8)[None, None, :]


@triton.jit
def scale_codes(block_amax, global_scale, NATIVE: tl.constexpr):
    """Each block's E4M3 scale code (>= 0, sign bit clear; 0 for an all-zero block) from its fp32 amax:
    amax / 6 * global_scale rounded to E4M3."""
    e2m1_max = tl.full(block_amax.shape, mft.E2M1_MAX, tl.float32)
    # amax / 6 exactly, as a multiplication: the fp64 reciprocal of the constant 6 is folded at compile time
    unrounded_scale = mft.divide_exactly(block_amax, mft.reciprocal64(e2m1_max)) * global_scale
    return mft.encode_e4m3(unrounded_scale, NATIVE) & SCALE_CODE_MASK


@triton.jit
def _quantize_kernel(
    x_ptr, global_scale_ptr, divisor_table_ptr, nonfinite_bits_ptr, packed_ptr, scale_ptr, n_blocks,
    BLOCKS: tl.constexpr, FLAG_NONFINITE: tl.constexpr, NATIVE: tl.constexpr,
):
    """packed_ptr: the uint8 output viewed as int32, two words (eight codes each) per 16-element block;
    divisor_table_ptr: `_divisor_table_kernel`'s table for this global scale. FLAG_NONFINITE: atomic_max the
    bits of a block's NaN/Inf into nonfinite_bits_ptr (zero-initialised), if it meets any."""
    block = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)  # (BLOCKS,)
    in_range = block < n_blocks
    offsets = block_offsets(block)
    x = tl.load(x_ptr + offsets, mask=in_range[:, None, None], other=0.0)
    global_scale = tl.load(global_scale_ptr)

    block_bits = mft.block_amax_bits(x, NATIVE)  # (BLOCKS,)
    if FLAG_NONFINITE:  # one predicated atomic per block, taken only by blocks holding a NaN or an Inf
        tl.atomic_max(nonfinite_bits_ptr + tl.zeros_like(block_bits), block_bits,
                      mask=amax_triton.nonfinite(block_bits), sem="relaxed")
    # the codes of a weight holding NaN/Inf are discarded
    scale_code = scale_codes(mft.bits_to_float(block_bits), global_scale, NATIVE)
    reciprocal = tl.load(divisor_table_ptr + scale_code)  # of the divisor block scale / global scale
    codes = mft.encode_e2m1(mft.divide_exactly(x.to(tl.float32), reciprocal[:, None, None]))

    word_offsets = block[:, None] * 2 + tl.arange(0, 2)[None, :]
    tl.store(packed_ptr + word_offsets, mft.pack_nibbles(codes), mask=in_range[:, None])
    stored_code = tl.where(scale_code == 0, ZERO_BLOCK_SCALE_CODE, scale_code)
    tl.store(scale_ptr + block, stored_code.to(tl.uint8), mask=in_range)


@triton.jit
def _dequantize_kernel(
    packed_ptr, scale_ptr, divisor_table_ptr, out_ptr, n_blocks, BLOCKS: tl.constexpr, OUT_IS_BF16: tl.constexpr,
):
    """packed_ptr: the uint8 codes viewed as int32, two words (eight codes each) per 16-element block, one word
    per lane (`minifloat_triton.words_per_lane`); divisor_table_ptr: `_divisor_table_kernel`'s dequantize table
    for this global scale, which each word's scale code indexes."""
    word, in_range = mft.words_per_lane(tl.program_id(0).to(tl.int64) * (2 * BLOCKS), 2 * BLOCKS, 2 * n_blocks)
    scale_code = tl.load(scale_ptr + word // 2, mask=in_range, other=0).to(tl.int32)
    mft.dequantize_e2m1_words(packed_ptr, out_ptr, word, in_range, tl.load(divisor_table_ptr + scale_code),
                              OUT_IS_BF16)


def divisor_table(global_scale: torch.Tensor, amax_bits: torch.Tensor, *, global_from_amax: bool,
                  for_quantize: bool, native: bool) -> torch.Tensor:
    """The table the quantize kernel (for_quantize) or the dequantize kernel takes (`_divisor_table_kernel`); with
    global_from_amax it also stores the global scale derived from amax_bits into global_scale."""
    if for_quantize:
        table = torch.empty(SCALE_CODES.value, dtype=torch.float64, device=global_scale.device)
    else:
        table = torch.empty(DEQUANTIZE_SCALE_CODES.value, dtype=torch.float32, device=global_scale.device)
    _divisor_table_kernel[(1,)](global_scale, amax_bits, table, GLOBAL_FROM_AMAX=global_from_amax,
                                FOR_QUANTIZE=for_quantize, NATIVE=native, num_warps=4)
    return table


def _quantize(x: torch.Tensor, global_scale: torch.Tensor, amax_bits: torch.Tensor, *, global_from_amax: bool,
              flag_nonfinite: bool) -> layout.NVFP4Weight:
    native = mft.native_casts(x.device)
    table = divisor_table(global_scale, amax_bits, global_from_amax=global_from_amax, for_quantize=True, native=native)
    n_blocks = x.numel() // layout.BLOCK_SIZE
    packed = torch.empty((*x.shape[:-1], x.shape[-1] // 2), dtype=torch.uint8, device=x.device)
    scale = torch.empty((*x.shape[:-1], x.shape[-1] // layout.BLOCK_SIZE), dtype=torch.uint8, device=x.device)
    grid = (triton.cdiv(n_blocks, QUANTIZE_BLOCKS),)
    _quantize_kernel[grid](
        x, global_scale, table, amax_bits, packed.view(torch.int32), scale, n_blocks,
        BLOCKS=QUANTIZE_BLOCKS, FLAG_NONFINITE=flag_nonfinite, NATIVE=native, num_warps=QUANTIZE_WARPS,
    )
    return layout.NVFP4Weight(packed, scale.view(torch.float8_e4m3fn), global_scale)


def quantize_triton(weight: torch.Tensor, global_scale: torch.Tensor) -> layout.NVFP4Weight:
    """Kernel twin of nvfp4.quantize_ref: the quantize kernel alone (same validation, no NaN/Inf check)."""
    layout.check_weight(weight)
    global_scale = layout.check_global_scale(global_scale, weight.device, check_value=False)
    return _quantize(weight.contiguous(), global_scale, global_scale, global_from_amax=False, flag_nonfinite=False)


def quantize_unchecked_triton(
    weight: torch.Tensor, global_scale: torch.Tensor | None = None
) -> tuple[layout.NVFP4Weight, torch.Tensor]:
    """(nvfp4.quantize's result, int32 (1,) word finite as float32 exactly when weight is), with the global
    scale from the weight's amax when none is given; no synchronisation (see the module docstring)."""
    layout.check_weight(weight)
    x = weight.contiguous()
    if global_scale is None:
        amax_bits = amax_triton.amax_bits(x)
        global_scale = torch.empty(1, dtype=torch.float32, device=x.device)
        return _quantize(x, global_scale, amax_bits, global_from_amax=True, flag_nonfinite=False), amax_bits
    global_scale = layout.check_global_scale(global_scale, x.device, check_value=False)
    nonfinite_bits = torch.zeros(1, dtype=torch.int32, device=x.device)
    return _quantize(x, global_scale, nonfinite_bits, global_from_amax=False, flag_nonfinite=True), nonfinite_bits


def dequantize_triton(q: layout.NVFP4Weight, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    layout.check_quantized(q)
    check_out_dtype(out_dtype)
    packed = q.weight_packed.contiguous()
    global_scale = layout.check_global_scale(q.weight_global_scale, packed.device, check_value=False)
    n_blocks = packed.numel() * 2 // layout.BLOCK_SIZE
    out = torch.empty((*packed.shape[:-1], packed.shape[-1] * 2), dtype=out_dtype, device=packed.device)
    grid = (triton.cdiv(n_blocks, DEQUANTIZE_BLOCKS),)
    scale = q.weight_scale.contiguous().view(torch.uint8)
    native = mft.native_casts(packed.device)
    # no amax is read where the global scale is given: its pointer argument takes the global scale's
    table = divisor_table(global_scale, global_scale, global_from_amax=False, for_quantize=False, native=native)
    out_arg, out_is_bf16 = mft.output_view(out, native)
    _dequantize_kernel[grid](
        packed.view(torch.int32), scale, table, out_arg, n_blocks,
        BLOCKS=DEQUANTIZE_BLOCKS, OUT_IS_BF16=out_is_bf16, num_warps=DEQUANTIZE_WARPS,
    )
    return out
