"""NVFP4 fake quantization of all MoE experts' input rows with one global scale per expert, in two launches
whatever the number of experts; bit-identical to grouped_act_quant.fake_quantize_grouped_ref.

x (rows, K) holds the rows sorted by expert, expert e owning rows ends[e-1]:ends[e] (grouped_mm's offsets).
1. `_expert_amax_kernel`, SPLIT programs per expert: program (e, s) reads every SPLIT-th ROWS-row tile of
   expert e and writes the amax of its finite values, or +Inf when a value is NaN/Inf, to partial[e, s]. An
   expert's rows are spread over its SPLIT programs, so a hot expert in a long prefill does not serialise
   the launch; an expert without rows writes 0. SPLIT grows with the rows per expert (a power of two up to
   MAX_SPLIT; 1 in decode, where most experts have no rows), one compiled pair of kernels per value.
2. `_grouped_nvfp4_kernel` quantizes BLOCKS consecutive 16-blocks of the flattened x per program (the dense
   NVFP4 kernels' block arithmetic, fake_quant_triton's nvfp4 helpers, each block's divisor computed): each
   block finds its row's expert among `ends`, takes the max of the expert's SPLIT partials as the expert's amax
   and so its global scale 2688 / amax; an expert whose amax is +Inf (NaN/Inf among its rows) comes out as NaN,
   as in the reference.
The expert's amax is exact whatever the split (max is order-free), so the result does not depend on SPLIT.
Launches go through triton_launch.Launch (one compiled kernel per signature, no per-call dispatch).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from lowbit.quant import fake_quant_triton as fqt
from lowbit.quant.formats import minifloat_triton as mft
from lowbit.quant.formats import nvfp4_layout, nvfp4_triton, triton_launch
from lowbit.quant.formats.backend import check_float_tensor, check_last_dim_divisible
from lowbit.quant.formats.spec import FormatSpec

MAX_SPLIT = 8  # amax programs per expert
AMAX_ROWS, AMAX_CHUNK, AMAX_WARPS = 4, 512, 4
BLOCKS, WARPS = 128, 4  # one block, and so one lookup of its expert among all `ends`, per thread
BLOCK = nvfp4_layout.BLOCK_SIZE
NO_EXPERT_END = tl.constexpr(triton_launch.INT32_MAX)  # padding of `ends` up to a power of two: never reached


@triton.jit
def _expert_amax_kernel(
    x_ptr, ends_ptr, partial_ptr,
    N_COLS: tl.constexpr, SPLIT: tl.constexpr, ROWS: tl.constexpr, CHUNK: tl.constexpr,
):
    program = tl.program_id(0)
    expert, part = program // SPLIT, program % SPLIT
    end = tl.load(ends_ptr + expert)
    start = tl.load(ends_ptr + expert - 1, mask=expert > 0, other=0)
    rows, columns = tl.arange(0, ROWS), tl.arange(0, CHUNK)
    amax = tl.zeros((ROWS, CHUNK), tl.float32)
    bad = tl.zeros((ROWS, CHUNK), tl.int32)
    for first in range(start + part * ROWS, end, SPLIT * ROWS):
        row = first + rows
        row_start = row.to(tl.int64) * N_COLS
        for column in range(0, N_COLS, CHUNK):
            mask = (row < end)[:, None] & (column + columns < N_COLS)[None, :]
            x = tl.load(x_ptr + row_start[:, None] + column + columns[None, :], mask=mask, other=0.0)
            x = x.to(tl.float32)
            finite = mft.is_finite(x)
            bad = tl.maximum(bad, (~finite).to(tl.int32))
            amax = tl.maximum(amax, tl.where(finite, tl.abs(x), 0.0))
    expert_amax = tl.max(tl.max(amax, axis=1), axis=0) + tl.zeros((1,), tl.float32)
    expert_bad = tl.max(tl.max(bad, axis=1), axis=0) != 0
    inf = mft.bits_to_float(tl.full((1,), mft.F32_INF_BITS, tl.int32))
    tl.store(partial_ptr + program + tl.arange(0, 1), tl.where(expert_bad, inf, expert_amax))


@triton.jit(do_not_specialize=["n_blocks"])
def _grouped_nvfp4_kernel(
    x_ptr, ends_ptr, partial_ptr, out_ptr, n_blocks,
    BLOCKS_PER_ROW: tl.constexpr, NUM_EXPERTS: tl.constexpr, EXPERTS_POW2: tl.constexpr, SPLIT: tl.constexpr,
    BLOCKS: tl.constexpr, OUT_IS_BF16: tl.constexpr, NATIVE: tl.constexpr,
):
    block = tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS)  # (BLOCKS,)
    row = block // BLOCKS_PER_ROW
    experts = tl.arange(0, EXPERTS_POW2)
    ends = tl.load(ends_ptr + experts, mask=experts < NUM_EXPERTS, other=NO_EXPERT_END)
    expert = tl.sum((ends[None, :] <= row[:, None]).to(tl.int32), axis=1)  # experts ending at or before the row
    routed = expert < NUM_EXPERTS
    parts = tl.load(partial_ptr + expert[:, None] * SPLIT + tl.arange(0, SPLIT)[None, :], mask=routed[:, None],
                    other=0.0)  # (BLOCKS, SPLIT)
    expert_amax = tl.max(parts, axis=1)
    expert_bad = ~mft.is_finite(expert_amax)
    global_scale = nvfp4_triton.global_scale_from_amax(tl.where(expert_bad, 0.0, expert_amax))  # (BLOCKS,)
    x, offsets, in_range = fqt.load_nvfp4_blocks(x_ptr, block, n_blocks)
    reciprocal, divisor = fqt.computed_nvfp4_divisors(x, global_scale, NATIVE)
    fqt.store_nvfp4_values(out_ptr, x, offsets, in_range, reciprocal, divisor, expert_bad[:, None, None],
                           OUT_IS_BF16)


def amax_split(rows: int, num_experts: int) -> int:
    """Amax programs per expert: enough for the ROWS-row tiles of an expert with an even share of the rows."""
    tiles_per_expert = triton_launch.cdiv(rows, num_experts * AMAX_ROWS)
    return min(MAX_SPLIT, triton_launch.next_power_of_2(tiles_per_expert))


class GroupedQuantizer:
    """(x (rows, K) sorted by expert, ends (E,) int32) -> x NVFP4 fake-quantized with per-expert global scales.

    Compiled once per signature (K, E, SPLIT, dtypes, device, pointer alignment); a call then allocates the
    output and the (E * SPLIT,) partial amaxes and makes two launches.
    """

    def __init__(self, fmt: FormatSpec):
        if fqt.kernel_family(fmt) != fqt.NVFP4_KERNEL:
            raise ValueError(f"format {fmt.name} is row-local: quantize its rows with fake_quant_triton directly")
        self.spec = fmt
        # signature -> (launches, whether they use the GPU's own instructions), as in ActivationQuantizer
        self._plans: dict[tuple, tuple[Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], None],
                                       bool]] = {}

    def __call__(self, x: torch.Tensor, ends: torch.Tensor) -> torch.Tensor:
        source = x.contiguous()
        out = torch.empty_like(source)
        if source.numel() == 0:
            return out
        split = amax_split(source.shape[0], ends.shape[-1])
        partial = torch.empty(ends.shape[-1] * split, device=source.device, dtype=torch.float32)
        aligned = all(t.data_ptr() % triton_launch.ALIGNMENT == 0 for t in (source, ends))
        key = (source.ndim, source.shape[-1], source.dtype, source.get_device(), tuple(ends.shape), ends.dtype,
               aligned, source.numel() > triton_launch.INT32_MAX, split)
        entry = self._plans.get(key)
        if entry is None:
            native = mft.native_casts(source.device)
            plan = self._plan(source, ends, partial, mft.output_view(out, native)[0], split, native)
            entry = self._plans[key] = (plan, native)
        plan, native = entry
        plan(source, ends, partial, mft.output_view(out, native)[0])
        return out

    def _plan(self, source: torch.Tensor, ends: torch.Tensor, partial: torch.Tensor, out_arg: torch.Tensor,
              split: int, native: bool) -> Callable:
        check_float_tensor(source, "activation")
        check_last_dim_divisible(source, BLOCK, "activation")
        if source.ndim != 2 or ends.ndim != 1 or ends.dtype != torch.int32:
            raise ValueError(f"grouped fake-quant takes x (rows, K) and int32 ends (experts,), got x "
                             f"{tuple(source.shape)} and ends {ends.dtype} {tuple(ends.shape)}")
        n_cols, num_experts = source.shape[1], ends.shape[0]
        direct = source.numel() <= triton_launch.INT32_MAX
        amax = triton_launch.Launch(_expert_amax_kernel, (source, ends, partial), dict(
            N_COLS=n_cols, SPLIT=split, ROWS=AMAX_ROWS, CHUNK=min(AMAX_CHUNK, triton.next_power_of_2(n_cols))),
            direct=direct, num_warps=AMAX_WARPS)
        blocks = triton_launch.Launch(
            _grouped_nvfp4_kernel, (source, ends, partial, out_arg, source.numel() // BLOCK), dict(
                BLOCKS_PER_ROW=n_cols // BLOCK, NUM_EXPERTS=num_experts,
                EXPERTS_POW2=triton.next_power_of_2(num_experts), SPLIT=split, BLOCKS=BLOCKS,
                OUT_IS_BF16=out_arg.dtype == torch.int16, NATIVE=native),
            direct=direct, num_warps=WARPS)

        def run(x: torch.Tensor, ends: torch.Tensor, partial: torch.Tensor, out: torch.Tensor) -> None:
            n_blocks = x.numel() // BLOCK
            amax(num_experts * split, x, ends, partial)
            blocks(triton_launch.cdiv(n_blocks, BLOCKS), x, ends, partial, out, n_blocks)

        return run
