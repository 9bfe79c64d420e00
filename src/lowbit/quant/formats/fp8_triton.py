"""Triton kernels for FP8 E4M3 (see fp8.py for the convention); bit-identical to fp8.quantize_ref.

- channel / per-token: one program per row, two passes over the row (amax, then cast; the second pass
  reads the row back from L2); the row length is a compile-time constant (one compile per shape);
- block: one program per 128x128 tile, one pass;
- tensor: `amax_triton.amax_bits` reduces the weight to its amax on the device, then the row kernel, each
  program deriving the scale amax / 448 from it (program 0 stores it): two launches and a zero fill, no
  torch reduction, nothing waiting for the GPU.
A group holding NaN/Inf gets a NaN scale, which fp8.quantize turns into the reference's ValueError; the
wrappers here do no synchronizing checks, so they can be timed as kernels.
"""

import torch
import triton
import triton.language as tl

from lowbit.quant.formats import amax_triton
from lowbit.quant.formats import fp8_layout as layout
from lowbit.quant.formats import minifloat_triton as mft
from lowbit.quant.formats.backend import check_float_tensor, check_out_dtype

# row kernel launch from the CHUNK x num_warps sweep in perf/quant_formats_bench.py (H100, 2026-11-27)
ROW_CHUNK, ROW_WARPS = 4096, 8
# one 128x128 tile per program: 4 warps give 88-89% of copy on the H200 (8: 80%) and 91% on the H100 (8: 90%),
# bf16 and float16 alike (2026-12-05)
BLOCK_WARPS = 4
DEQUANT_CHUNK = 1024
SCALE_FLOOR = tl.constexpr(layout.SCALE_FLOOR)
BLOCK_ROWS = tl.constexpr(layout.BLOCK_SHAPE[0])
BLOCK_COLS = tl.constexpr(layout.BLOCK_SHAPE[1])
GRANULARITY_IDS = {"tensor": 0, "channel": 1, "block": 2}
# where the row kernel takes its scale from (its constexpr SCALE), and the same ids as kernel constants
SCALE_OF_ROW, SCALE_GIVEN, SCALE_OF_TENSOR_AMAX = 0, 1, 2
_GIVEN, _OF_TENSOR_AMAX = tl.constexpr(SCALE_GIVEN), tl.constexpr(SCALE_OF_TENSOR_AMAX)


@triton.jit
def _scale_from_amax(amax, bad):
    scale = tl.maximum(tl.math.div_rn(amax, tl.full(amax.shape, 448.0, tl.float32)), SCALE_FLOOR)
    return tl.where(bad, bits_nan(scale), scale)


@triton.jit
def bits_nan(like):
    return mft.bits_to_float(tl.full(like.shape, mft.F32_QUIET_NAN_BITS, tl.int32))


@triton.jit
def _rows_kernel(
    x_ptr, scale_ptr, amax_bits_ptr, out_ptr, n_cols: tl.constexpr,
    SCALE: tl.constexpr, FAKE_QUANT: tl.constexpr, OUT_IS_BF16: tl.constexpr, CHUNK: tl.constexpr,
    NATIVE: tl.constexpr,
):
    """SCALE: SCALE_OF_ROW (the row's amax / 448, stored per row), SCALE_GIVEN (loaded from scale_ptr) or
    SCALE_OF_TENSOR_AMAX (from the tensor's amax bits at amax_bits_ptr, stored by program 0)."""
    row_start = tl.program_id(0).to(tl.int64) * n_cols
    columns = tl.arange(0, CHUNK)
    if SCALE == _GIVEN:
        scale = tl.load(scale_ptr)
    elif SCALE == _OF_TENSOR_AMAX:
        amax_bits = tl.load(amax_bits_ptr)
        scale = _scale_from_amax(amax_triton.finite_amax(amax_bits), amax_triton.nonfinite(amax_bits))
        tl.store(scale_ptr, scale, mask=tl.program_id(0) == 0)
    else:
        amax_bits = tl.zeros((CHUNK,), tl.int32)
        for start in range(0, n_cols, CHUNK):
            mask = start + columns < n_cols
            x = tl.load(x_ptr + row_start + start + columns, mask=mask, other=0.0).to(tl.float32)
            amax_bits = tl.maximum(amax_bits, mft.abs_bits(x))
        amax_bits = tl.max(amax_bits, axis=0)
        bad = amax_bits >= mft.F32_INF_BITS  # a NaN or Inf in the row
        scale = _scale_from_amax(mft.bits_to_float(tl.where(bad, 0, amax_bits)), bad)
        tl.store(scale_ptr + tl.program_id(0), scale)
    reciprocal = mft.reciprocal64(scale)
    for start in range(0, n_cols, CHUNK):
        mask = start + columns < n_cols
        x = tl.load(x_ptr + row_start + start + columns, mask=mask, other=0.0).to(tl.float32)
        codes = mft.encode_e4m3(mft.divide_exactly(x, reciprocal), NATIVE)
        if FAKE_QUANT:
            values = mft.decode_e4m3(codes, NATIVE) * scale
            mft.store_values(out_ptr, row_start + start + columns, values, mask, OUT_IS_BF16)
        else:
            tl.store(out_ptr + row_start + start + columns, codes.to(tl.uint8), mask=mask)


@triton.jit
def _block_kernel(
    x_ptr, scale_ptr, out_ptr, n_cols, TILE_ROWS: tl.constexpr, TILE_COLS: tl.constexpr, NATIVE: tl.constexpr
):
    tile_row, tile_col = tl.program_id(0), tl.program_id(1)
    rows = tile_row.to(tl.int64) * TILE_ROWS + tl.arange(0, TILE_ROWS)
    cols = tile_col.to(tl.int64) * TILE_COLS + tl.arange(0, TILE_COLS)
    offsets = rows[:, None] * n_cols + cols[None, :]  # (TILE_ROWS, TILE_COLS)
    x = tl.load(x_ptr + offsets)  # kept in its dtype until the division: half the registers of fp32 for 16-bit x
    runs = tl.reshape(x, (TILE_ROWS, TILE_COLS // 8, 8))  # a thread's 16-byte loads, halved two elements at a time
    amax_bits = tl.max(mft.block_amax_bits(runs, NATIVE), axis=0)
    bad = amax_bits >= mft.F32_INF_BITS  # a NaN or Inf in the tile
    scale = _scale_from_amax(mft.bits_to_float(tl.where(bad, 0, amax_bits)), bad)
    codes = mft.encode_e4m3(mft.divide_exactly(x.to(tl.float32), mft.reciprocal64(scale)), NATIVE)
    tl.store(out_ptr + offsets, codes.to(tl.uint8))
    tl.store(scale_ptr + tile_row * tl.num_programs(1) + tile_col, scale)


@triton.jit
def _dequantize_kernel(
    q_ptr, scale_ptr, out_ptr, n_cols, n_scale_cols,
    GRANULARITY: tl.constexpr, OUT_IS_BF16: tl.constexpr, CHUNK: tl.constexpr, NATIVE: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1).to(tl.int64) * CHUNK + tl.arange(0, CHUNK)
    mask = cols < n_cols
    codes = tl.load(q_ptr + row * n_cols + cols, mask=mask, other=0).to(tl.int32)
    if GRANULARITY == 0:
        scale = tl.load(scale_ptr)
    elif GRANULARITY == 1:
        scale = tl.load(scale_ptr + row)
    else:
        scale = tl.load(scale_ptr + (row // BLOCK_ROWS) * n_scale_cols + cols // BLOCK_COLS, mask=mask, other=1.0)
    mft.store_values(out_ptr, row * n_cols + cols, mft.decode_e4m3(codes, NATIVE) * scale, mask, OUT_IS_BF16)


def quantize_triton(weight: torch.Tensor, granularity: str = "channel") -> layout.FP8Weight:
    layout.check_weight(weight, granularity)
    x = weight.contiguous()
    rows, cols = x.shape
    codes = torch.empty((rows, cols), dtype=torch.uint8, device=x.device)
    native = mft.native_casts(x.device)
    if granularity == "block":
        tile_rows, tile_cols = layout.BLOCK_SHAPE
        scale = torch.empty((rows // tile_rows, cols // tile_cols), dtype=torch.float32, device=x.device)
        _block_kernel[scale.shape](
            x, scale, codes, cols, TILE_ROWS=tile_rows, TILE_COLS=tile_cols, NATIVE=native, num_warps=BLOCK_WARPS
        )
    elif granularity == "channel":
        scale = torch.empty((rows, 1), dtype=torch.float32, device=x.device)
        _rows_kernel[(rows,)](
            x, scale, scale, codes, cols, SCALE=SCALE_OF_ROW, FAKE_QUANT=False, OUT_IS_BF16=False,
            CHUNK=ROW_CHUNK, NATIVE=native, num_warps=ROW_WARPS,
        )
    else:
        scale = torch.empty(1, dtype=torch.float32, device=x.device)  # NaN/Inf give a NaN scale
        _rows_kernel[(rows,)](
            x, scale, amax_triton.amax_bits(x), codes, cols, SCALE=SCALE_OF_TENSOR_AMAX, FAKE_QUANT=False,
            OUT_IS_BF16=False, CHUNK=ROW_CHUNK, NATIVE=native, num_warps=ROW_WARPS,
        )
    return layout.FP8Weight(codes.view(torch.float8_e4m3fn), scale)


def dequantize_triton(q: layout.FP8Weight, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    check_out_dtype(out_dtype)
    granularity = layout.granularity_of(q)
    codes = q.weight.contiguous().view(torch.uint8)
    rows, cols = codes.shape
    scale = q.weight_scale.contiguous()
    out = torch.empty((rows, cols), dtype=out_dtype, device=codes.device)
    native = mft.native_casts(codes.device)
    out_arg, out_is_bf16 = mft.output_view(out, native)
    grid = (rows, triton.cdiv(cols, DEQUANT_CHUNK))
    _dequantize_kernel[grid](
        codes, scale, out_arg, cols, scale.shape[-1],
        GRANULARITY=GRANULARITY_IDS[granularity], OUT_IS_BF16=out_is_bf16, CHUNK=DEQUANT_CHUNK,
        NATIVE=native,
    )
    return out


def fake_quantize_per_token_triton(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fake-quantized x, per-row scales (rows, 1)); a NaN scale marks a row holding NaN/Inf."""
    check_float_tensor(x, "activation")
    rows = x.reshape(-1, x.shape[-1]).contiguous()
    scale = torch.empty((rows.shape[0], 1), dtype=torch.float32, device=x.device)
    out = torch.empty_like(rows)
    native = mft.native_casts(rows.device)
    out_arg, out_is_bf16 = mft.output_view(out, native)
    _rows_kernel[(rows.shape[0],)](
        rows, scale, scale, out_arg, rows.shape[1], SCALE=SCALE_OF_ROW, FAKE_QUANT=True, OUT_IS_BF16=out_is_bf16,
        CHUNK=ROW_CHUNK, NATIVE=native, num_warps=ROW_WARPS,
    )
    return out.reshape(x.shape), scale
