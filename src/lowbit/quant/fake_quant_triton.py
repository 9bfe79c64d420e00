"""Fused quantize -> dequantize Triton kernels for activations, one launch per call; bit-identical to the
activation references of the formats' specs (see fake_quant.py for each convention); the kernel that runs a
format follows from its spec's structure (`kernel_family`).

- int8 / fp8 per token: one program per row, two passes over the row (amax, then quantize-dequantize; the
  second pass reads the row back from L2); the row length is a compile-time constant.
- mxfp8 / mxfp4 / nvfp4: each program handles BLOCKS consecutive blocks of the flattened input, which keeps
  the block structure of the weight kernels (mx_triton.py, nvfp4_triton.py) but writes values, not codes.
- nvfp4 needs the tensor's amax first, and takes the weight quantize kernel's block arithmetic (16-byte loads,
  block maxima two elements per instruction, the exact division by each block's divisor) writing values.
  Up to NVFP4_ONE_LAUNCH_MAX_BLOCKS blocks (decode-sized inputs) it is one launch of a program per 64 blocks,
  each of which folds the whole tensor's amax (read back from L2) and then quantizes its blocks, each block's
  divisor computed. Larger inputs (prefill) take two launches built from the weight path's pieces:
  the amax reduction (amax_triton.fold_amax_bits), whose last program to finish derives the global scale and
  tabulates each scale code's exact reciprocal and divisor (nvfp4_triton.scale_code_divisors), then the blocks,
  each block's looked up. Their small state (the amax, a count of finished programs, the tables) stays
  allocated per quantizer, input signature and CUDA stream, and the last program leaves it ready for the next
  call.
No synchronizing checks: a row / block (NVFP4: tensor) holding NaN or Inf is written as NaN.
Format arithmetic (E2M1 / E4M3 / E8M0 rounding, exact division) comes from minifloat_triton, as in the
weight kernels.

`ActivationQuantizer` is the per-call entry point: it keeps one compiled launch per input dtype, width,
device and pointer alignment (triton_launch.Launch), so a call costs an output allocation and a kernel
launch, which is what keeps emulated decode close to BF16 speed.
"""

from collections.abc import Callable

import torch
import triton
import triton.language as tl

from lowbit.quant.formats import (
    amax_triton,
    fp8_layout,
    mx_layout,
    nvfp4_layout,
    nvfp4_triton,
    registry,
    triton_launch,
)
from lowbit.quant.formats import minifloat_triton as mft
from lowbit.quant.formats.backend import check_float_tensor, check_last_dim_divisible
from lowbit.quant.formats.spec import FormatSpec

ROW_CHUNK = 2048
MX_BLOCKS, MX_WARPS = 64, 4
# NVFP4 inputs up to NVFP4_ONE_LAUNCH_MAX_BLOCKS blocks (e.g. 16 decode rows of 6144) take one launch, a program
# per group of blocks, each folding the whole amax NVFP4_ONE_LAUNCH_CHUNK elements a step (H100 sweeps of
# programs x CHUNK x warps: a program per group first; 16 warps and 4096 elements a step 4.1 us at 16 x 6144
# against 6.0 on 8 warps and 2048, and 12.4 with 16 programs looping over the groups on 4 warps)
NVFP4_ONE_LAUNCH_MAX_BLOCKS = 8192
NVFP4_ONE_LAUNCH_CHUNK, NVFP4_ONE_LAUNCH_WARPS = 4096, 16
# the blocks of one program: the weight quantize kernel's 64; the two-launch blocks kernel runs on 4 warps rather
# than its 2 (an H100 sweep of 4096-row bf16 inputs: 35.5 against 39.5 us at 6144 columns, a copy taking 35.2;
# 10.9 against 12.5 at 2048)
NVFP4_GROUP_BLOCKS, NVFP4_TABLE_WARPS = nvfp4_triton.QUANTIZE_BLOCKS, 4
# the int32 slots of the NVFP4 many-program state: the running amax bits (zero between calls), the programs of
# the amax launch that finished (zero between calls), and the last call's amax bits (its NaN/Inf flag)
NVFP4_RUNNING_AMAX, NVFP4_FINISHED_PROGRAMS, NVFP4_TENSOR_AMAX = tl.constexpr(0), tl.constexpr(1), tl.constexpr(2)
NVFP4_STATE_SLOTS = 3
INT8_MAX = tl.constexpr(127.0)
FP8_SCALE_FLOOR = tl.constexpr(fp8_layout.SCALE_FLOOR)


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


@triton.jit(do_not_specialize=["n_blocks"])
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
        elements = mft.round_to_e2m1(scaled)
    else:
        elements = mft.decode_e4m3(mft.encode_e4m3(scaled, NATIVE), NATIVE)
    values = elements * mft.e8m0_decode(code)[:, None]
    values = tl.where(poisoned[:, None], _nan_like(values), values)
    mft.store_values(out_ptr, offsets, values, in_range[:, None], OUT_IS_BF16)


@triton.jit
def load_nvfp4_blocks(x_ptr, block, n_blocks):
    """(x, offsets, in range) of the 16-blocks `block` (BLOCKS,): x (BLOCKS, 2, 8) in its dtype, one 16-byte load
    per thread and half block (nvfp4_triton.block_offsets)."""
    in_range = block < n_blocks
    offsets = nvfp4_triton.block_offsets(block)
    return tl.load(x_ptr + offsets, mask=in_range[:, None, None], other=0.0), offsets, in_range


@triton.jit
def nvfp4_block_scale_codes(x, global_scale, NATIVE: tl.constexpr):
    """Each block's E4M3 scale code under `global_scale` (a scalar, or one per block) from x (BLOCKS, 2, 8)."""
    return nvfp4_triton.scale_codes(mft.bits_to_float(mft.block_amax_bits(x, NATIVE)), global_scale, NATIVE)


@triton.jit
def computed_nvfp4_divisors(x, global_scale, NATIVE: tl.constexpr):
    """(reciprocal64, divisor) of each block of x (BLOCKS, 2, 8), computed from its scale code under `global_scale`
    (a scalar, or one per block): what the tables hold for that code."""
    scale_code = nvfp4_block_scale_codes(x, global_scale, NATIVE)
    divisor = nvfp4_triton.scale_divisors(scale_code, global_scale, True, NATIVE)
    return mft.reciprocal64(divisor), divisor


@triton.jit
def store_nvfp4_values(out_ptr, x, offsets, in_range, reciprocal, divisor, bad, OUT_IS_BF16: tl.constexpr):
    """Write x (BLOCKS, 2, 8) divided exactly by each block's divisor, rounded to E2M1 and multiplied back;
    NaN where `bad` (a tensor's flag, or one per block broadcast over its elements)."""
    quotient = mft.divide_exactly(x.to(tl.float32), reciprocal[:, None, None])
    values = mft.round_to_e2m1(quotient) * divisor[:, None, None]
    values = tl.where(bad, _nan_like(values), values)
    mft.store_values(out_ptr, offsets, values, in_range[:, None, None], OUT_IS_BF16)


@triton.jit(do_not_specialize=["n_blocks", "chunks"])
def _nvfp4_one_launch_kernel(
    x_ptr, out_ptr, n_blocks, chunks,
    CHUNK: tl.constexpr, BLOCKS: tl.constexpr, OUT_IS_BF16: tl.constexpr, NATIVE: tl.constexpr,
):
    """Every program folds the whole tensor's amax (its `chunks` of CHUNK elements; a decode-sized input, read
    back from L2), then fake-quantizes its BLOCKS blocks."""
    amax_bits = amax_triton.chunks_amax_bits(x_ptr, n_blocks * 16, 0, chunks, 1, CHUNK, NATIVE)
    global_scale = nvfp4_triton.global_scale_from_amax_bits(amax_bits)
    x, offsets, in_range = load_nvfp4_blocks(x_ptr, tl.program_id(0) * BLOCKS + tl.arange(0, BLOCKS), n_blocks)
    reciprocal, divisor = computed_nvfp4_divisors(x, global_scale, NATIVE)
    store_nvfp4_values(out_ptr, x, offsets, in_range, reciprocal, divisor, amax_triton.nonfinite(amax_bits),
                       OUT_IS_BF16)


@triton.jit(do_not_specialize=["n_blocks", "chunks"])
def _nvfp4_amax_tables_kernel(
    x_ptr, state_ptr, global_scale_ptr, reciprocals_ptr, divisors_ptr, n_blocks, chunks,
    CHUNK: tl.constexpr, NATIVE: tl.constexpr,
):
    """Every program folds its chunks into the running amax (amax_triton.fold_amax_bits) and counts itself
    finished; the last one takes the amax, resets the running slots for the next call, keeps the amax bits for
    the blocks kernel's NaN/Inf flag and writes the global scale, then each scale code's reciprocal64 and
    divisor (nvfp4_triton.scale_code_divisors, as the weight quantize kernel's table and as the factor that
    dequantizes)."""
    amax_triton.fold_amax_bits(x_ptr, state_ptr + NVFP4_RUNNING_AMAX, n_blocks * 16, chunks, CHUNK, NATIVE)
    tl.debug_barrier()  # the fold's atomic before the count's release, whichever thread made it
    finished = tl.atomic_add(state_ptr + NVFP4_FINISHED_PROGRAMS, 1, sem="acq_rel")
    if finished == tl.num_programs(0) - 1:  # acquired: every program's maximum is in the running amax
        amax_bits = tl.atomic_xchg(state_ptr + NVFP4_RUNNING_AMAX, 0, sem="acq_rel")
        tl.store(state_ptr + NVFP4_FINISHED_PROGRAMS, 0)
        tl.store(state_ptr + NVFP4_TENSOR_AMAX, amax_bits)
        global_scale = nvfp4_triton.global_scale_from_amax_bits(amax_bits)
        tl.store(global_scale_ptr, global_scale)
        code, divisor = nvfp4_triton.scale_code_divisors(global_scale, True, NATIVE)
        tl.store(reciprocals_ptr + code, mft.reciprocal64(divisor))
        tl.store(divisors_ptr + code, divisor)


@triton.jit(do_not_specialize=["n_blocks"])
def _nvfp4_tables_kernel(
    x_ptr, state_ptr, global_scale_ptr, reciprocals_ptr, divisors_ptr, out_ptr, n_blocks,
    BLOCKS: tl.constexpr, OUT_IS_BF16: tl.constexpr, NATIVE: tl.constexpr,
):
    """Fake-quantize BLOCKS 16-blocks per program with the global scale and tables `_nvfp4_amax_tables_kernel`
    wrote, each block's reciprocal and divisor looked up by its scale code; a tensor holding NaN/Inf is written
    as NaN."""
    x, offsets, in_range = load_nvfp4_blocks(x_ptr, tl.program_id(0).to(tl.int64) * BLOCKS + tl.arange(0, BLOCKS),
                                             n_blocks)
    scale_code = nvfp4_block_scale_codes(x, tl.load(global_scale_ptr), NATIVE)
    bad = amax_triton.nonfinite(tl.load(state_ptr + NVFP4_TENSOR_AMAX))
    store_nvfp4_values(out_ptr, x, offsets, in_range, tl.load(reciprocals_ptr + scale_code),
                       tl.load(divisors_ptr + scale_code), bad, OUT_IS_BF16)


def nvfp4_state(device: torch.device) -> tuple[torch.Tensor, ...]:
    """What the two NVFP4 launches of larger inputs share on one stream: (the state slots, zeroed; the global scale;
    each scale code's reciprocal64; its divisor)."""
    return (torch.zeros(NVFP4_STATE_SLOTS, dtype=torch.int32, device=device),
            torch.empty(1, dtype=torch.float32, device=device),
            torch.empty(nvfp4_triton.SCALE_CODES.value, dtype=torch.float64, device=device),
            torch.empty(nvfp4_triton.SCALE_CODES.value, dtype=torch.float32, device=device))


INT32_ELEMENTS, ONE_LAUNCH, TWO_LAUNCHES = "int32", "one launch", "two launches"
PER_TOKEN, MX_BLOCKS_KERNEL, NVFP4_KERNEL = "per token", "mx blocks", "nvfp4 blocks"


def kernel_family(spec: FormatSpec) -> str:
    """Which of this module's kernels fake-quantizes activations in `spec`, from its structure: one scale per
    row (per token), E8M0-scaled blocks (MX), or E4M3-scaled blocks under a global scale (NVFP4)."""
    if spec.fake_quantize_activation is not None:
        if spec.block_size is None and spec.element in ("INT8", "E4M3"):
            return PER_TOKEN
        if spec.scale == "E8M0" and spec.element in ("E2M1", "E4M3"):
            return MX_BLOCKS_KERNEL
        if spec.shared_global_scale is not None and spec.element == "E2M1" and spec.scale == "E4M3":
            return NVFP4_KERNEL
    raise ValueError(f"format {spec.name} has no Triton activation kernel; use backend='ref'")


class ActivationQuantizer:
    """x (..., K) -> its quantized-dequantized copy in one format, in x's dtype (CUDA, or the interpreter).

    Validation and kernel compilation happen once per input signature (width, dtype, device, pointer
    alignment, size class); later calls only allocate the output and launch (see triton_launch).
    direct_launch=False keeps Triton's per-call dispatch (`kernel[grid](...)`), for comparison.
    """

    def __init__(self, fmt: str | FormatSpec, *, direct_launch: bool = True):
        self.spec = fmt if isinstance(fmt, FormatSpec) else registry.activation_format(fmt, "activation format")
        self.fmt = self.spec.name
        self.family = kernel_family(self.spec)
        self.direct_launch = direct_launch
        # signature -> (launch, whether it uses the GPU's own instructions: mft.native_casts, decided once per
        # signature, since the environment lookup costs a microsecond)
        self._plans: dict[tuple, tuple[Callable[[torch.Tensor, torch.Tensor, int], None], bool]] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        source = x.contiguous()
        out = torch.empty_like(source)
        numel = source.numel()
        if numel == 0:
            return out
        key = (source.shape[-1], source.dtype, source.get_device(), source.data_ptr() % triton_launch.ALIGNMENT == 0,
               self._size_class(numel))
        entry = self._plans.get(key)
        if entry is None:
            native = mft.native_casts(source.device)
            entry = self._plans[key] = (self._plan(source, mft.output_view(out, native)[0], native, key[-1]), native)
        plan, native = entry
        plan(source, mft.output_view(out, native)[0], numel)
        return out

    def _size_class(self, numel: int) -> str:
        if numel > triton_launch.INT32_MAX:
            return INT32_ELEMENTS  # integer arguments would need int64: Triton's regular launch path
        if self.family == NVFP4_KERNEL and numel <= NVFP4_ONE_LAUNCH_MAX_BLOCKS * self.spec.block_size:
            return ONE_LAUNCH
        return TWO_LAUNCHES

    def _plan(self, source: torch.Tensor, out_arg: torch.Tensor, native: bool, size_class: str) -> Callable:
        check_float_tensor(source, "activation")
        direct = self.direct_launch and size_class != INT32_ELEMENTS
        out_is_bf16 = out_arg.dtype == torch.int16
        if self.family == PER_TOKEN:
            n_cols = source.shape[-1]
            launch = triton_launch.Launch(
                _per_token_kernel, (source, out_arg), dict(
                    n_cols=n_cols, IS_INT8=self.spec.element == "INT8", OUT_IS_BF16=out_is_bf16,
                    CHUNK=min(ROW_CHUNK, triton.next_power_of_2(n_cols)), NATIVE=native),
                direct=direct,
                enable_fp_fusion=False,  # x * inverse must round before the round-half-even add, as in the reference
            )
            return lambda x, out, numel: launch(numel // n_cols, x, out)
        block = self.spec.block_size
        check_last_dim_divisible(source, block, "activation")
        example = (source, out_arg, source.numel() // block)
        if self.family == MX_BLOCKS_KERNEL:
            element = "fp4" if self.spec.element == "E2M1" else "fp8"
            launch = triton_launch.Launch(_mx_kernel, example, dict(
                BLOCKS=MX_BLOCKS, IS_FP4=element == "fp4", ELEMENT_EMAX=mx_layout.ELEMENT_EMAX[element],
                ELEMENT_MAX=mx_layout.ELEMENT_MAX[element], RULE=mft.RULE_IDS[mx_layout.CHECKPOINT_SCALE_RULE],
                OUT_IS_BF16=out_is_bf16, NATIVE=native), direct=direct, num_warps=MX_WARPS)
            return lambda x, out, numel: launch(triton_launch.cdiv(numel // block, MX_BLOCKS), x, out, numel // block)
        constexprs = dict(BLOCKS=NVFP4_GROUP_BLOCKS, OUT_IS_BF16=out_is_bf16, NATIVE=native)
        if size_class == ONE_LAUNCH:
            return self._nvfp4_one_launch(example, constexprs, direct)
        return self._nvfp4_two_launches(source, out_arg, constexprs, direct)

    def _nvfp4_one_launch(self, example: tuple, constexprs: dict, direct: bool) -> Callable:
        """One launch, a program per group of blocks, each with the whole amax."""
        chunk, block = NVFP4_ONE_LAUNCH_CHUNK, self.spec.block_size
        launch = triton_launch.Launch(_nvfp4_one_launch_kernel, (*example, 1), dict(constexprs, CHUNK=chunk),
                                      direct=direct, num_warps=NVFP4_ONE_LAUNCH_WARPS)

        def one_launch(x: torch.Tensor, out: torch.Tensor, numel: int) -> None:
            n_blocks = numel // block
            launch(triton_launch.cdiv(n_blocks, NVFP4_GROUP_BLOCKS), x, out, n_blocks, triton_launch.cdiv(numel, chunk))

        return one_launch

    def _nvfp4_two_launches(self, source: torch.Tensor, out_arg: torch.Tensor, constexprs: dict,
                            direct: bool) -> Callable:
        """The amax-and-tables launch, then the blocks launch, each with its state on the caller's stream."""
        device, block = source.device, self.spec.block_size
        chunk, amax_warps = amax_triton.launch_for(device)

        example_state = nvfp4_state(device)
        n_blocks = source.numel() // block
        amax_launch = triton_launch.Launch(
            _nvfp4_amax_tables_kernel, (source, *example_state, n_blocks, triton.cdiv(source.numel(), chunk)),
            dict(CHUNK=chunk, NATIVE=constexprs["NATIVE"]), direct=direct, num_warps=amax_warps)
        launch = triton_launch.Launch(_nvfp4_tables_kernel, (source, *example_state, out_arg, n_blocks),
                                      constexprs, direct=direct, num_warps=NVFP4_TABLE_WARPS)
        # CUDA stream -> (its state tensors, kept alive here, and the arguments both launches take for them)
        states: dict[int, tuple[tuple[torch.Tensor, ...], tuple]] = {}

        def state_on(stream: int) -> tuple:
            state = states.get(stream)
            if state is None:
                tensors = example_state if not states else nvfp4_state(device)
                state = states[stream] = (tensors, launch.pointer_args(tensors))
            return state[1]

        def two_launches(x: torch.Tensor, out: torch.Tensor, numel: int) -> None:
            state = state_on(triton_launch.current_stream(x.get_device()))
            amax_launch(amax_triton.programs(numel, chunk, 1, x.get_device()), x, *state, numel // block,
                        triton_launch.cdiv(numel, chunk))
            launch(triton_launch.cdiv(numel // block, NVFP4_GROUP_BLOCKS), x, *state, out, numel // block)

        return two_launches


_QUANTIZERS: dict[tuple[str, bool], ActivationQuantizer] = {}


def fake_quantize(x: torch.Tensor, fmt: str | FormatSpec) -> torch.Tensor:
    """x (..., K) fake-quantized per the activation format `fmt`, in x's dtype."""
    check_float_tensor(x, "activation")
    spec = fmt if isinstance(fmt, FormatSpec) else registry.activation_format(fmt, "activation format")
    key = (spec.name, mft.native_casts_allowed())
    quantizer = _QUANTIZERS.get(key)
    if quantizer is None:
        quantizer = _QUANTIZERS[key] = ActivationQuantizer(spec)
    return quantizer(x)
