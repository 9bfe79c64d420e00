"""max |x| of a whole tensor (or of each of its equal leading slices) in one Triton launch, left on the device.

A per-tensor scale (NVFP4's global scale 2688 / amax, FP8's per-tensor amax / 448) needs the amax before any
element can be quantized. The result stays on the GPU as the int32 bit pattern of the fp32 amax, so the
quantize kernel that follows reads it from device memory and derives the scale itself: no torch reductions,
no host synchronisation on the way.

Bits rather than floats because |x| >= 0 orders like its int32 bits (`minifloat_triton.abs_bits`), so the
partial maxima combine with an integer `atomic_max` into a buffer initialised to 0, and every NaN lands above
+Inf (F32_INF_BITS): bits >= F32_INF_BITS mean the slice holds a NaN or an Inf, which the callers turn into
the references' ValueError after their last launch. Viewed as float32 the bits are the amax itself (+Inf, or
a NaN, for such a slice).

Each program reduces every PROGRAMS-th CHUNK of its slice in registers and makes one atomic, so the atomics
stay few (a fixed number of programs per slice) however large the tensor.
"""

import functools

import torch
import triton
import triton.language as tl

from lowbit.quant.formats import minifloat_triton as mft
from lowbit.quant.formats.launch import launch_parameters
from lowbit.quant.formats.triton_launch import cdiv

CHUNK, WARPS = 4096, 8  # elements per program per step: 16 per thread, two 16-byte loads of bf16 (launch.py: per GPU)
PROGRAMS_PER_SM = 8  # programs per slice on a GPU: 8 x 8 warps fill an SM, many loads in flight
INTERPRETER_PROGRAMS = 4


@triton.jit
def chunks_amax_bits(slice_ptr, slice_numel, first, chunks, step, CHUNK: tl.constexpr, NATIVE: tl.constexpr):
    """int32 bits of max |x| over the chunks first, first + step, ... (below `chunks`) of a slice.

    The offsets come from the loop's chunk index, so where slice_numel is known to be a multiple of 16 (Triton's
    divisibility key) the compiler knows whole 16-byte runs share one mask bit and loads them as vectors; a
    16-bit x keeps a running magnitude maximum in its own dtype (two elements per instruction on a GPU) and
    widens once, after the loop."""
    columns = tl.arange(0, CHUNK)
    running = tl.zeros((CHUNK,), slice_ptr.dtype.element_ty)
    for chunk in range(first, chunks, step):
        offsets = tl.cast(chunk, tl.int64) * CHUNK + columns  # int64: slices may pass 2**31 elements
        running = mft.max_magnitudes(running, tl.load(slice_ptr + offsets, mask=offsets < slice_numel, other=0.0),
                                     NATIVE)
    if running.dtype != tl.float32:  # a 16-bit magnitude (the native maximum leaves a meaningless sign)
        running = mft.abs16_bits(running).to(running.dtype, bitcast=True).to(tl.float32)
    return tl.max(mft.abs_bits(running), axis=0)


@triton.jit
def fold_amax_bits(slice_ptr, amax_bits_ptr, slice_numel, chunks, CHUNK: tl.constexpr, NATIVE: tl.constexpr):
    """Fold this program's chunks of a slice, p, p + P, ... of `chunks` (p its index on axis 0, P the programs
    there), into *amax_bits_ptr with one atomic max."""
    tl.atomic_max(amax_bits_ptr, chunks_amax_bits(slice_ptr, slice_numel, tl.program_id(0), chunks,
                                                  tl.num_programs(0), CHUNK, NATIVE))


@triton.jit(do_not_specialize=["chunks_per_slice"])
def _amax_bits_kernel(x_ptr, amax_bits_ptr, slice_numel, chunks_per_slice, CHUNK: tl.constexpr,
                      NATIVE: tl.constexpr):
    """Program (p, s) folds chunks p, p + P, ... of slice s into amax_bits[s] (P = programs per slice);
    slice_numel stays specialised (`fold_amax_bits`)."""
    slice_index = tl.program_id(1)
    fold_amax_bits(x_ptr + slice_index.to(tl.int64) * slice_numel, amax_bits_ptr + slice_index, slice_numel,
                   chunks_per_slice, CHUNK, NATIVE)


def launch_for(device: torch.device) -> tuple[int, int]:
    """(CHUNK, warps) of an amax launch on `device` (launch.py: per GPU)."""
    return launch_parameters("amax", (CHUNK, WARPS), device)


def programs(slice_numel: int, chunk: int, slices: int, device_index: int) -> int:
    """Programs per slice of an amax launch: enough to fill the GPU, none without a chunk to fold."""
    return max(1, min(cdiv(slice_numel, chunk), cdiv(_programs_per_slice(device_index), slices)))


@functools.cache
def _programs_per_slice(device_index: int) -> int:
    if device_index < 0:  # the interpreter, on CPU tensors
        return INTERPRETER_PROGRAMS
    return PROGRAMS_PER_SM * torch.cuda.get_device_properties(device_index).multi_processor_count


def amax_bits(x: torch.Tensor, slices: int = 1) -> torch.Tensor:
    """int32 (slices,) bits of max |x| over each of `slices` equal consecutive parts of x (contiguous), on
    x's device; two launches (the zero fill and the reduction), no synchronisation."""
    if x.numel() % slices:
        raise ValueError(f"a tensor of {x.numel()} elements does not split into {slices} equal slices")
    x = x.contiguous()
    chunk, warps = launch_for(x.device)
    slice_numel = x.numel() // slices
    bits = torch.zeros(slices, dtype=torch.int32, device=x.device)
    grid = (programs(slice_numel, chunk, slices, x.get_device()), slices)
    _amax_bits_kernel[grid](x, bits, slice_numel, triton.cdiv(slice_numel, chunk), CHUNK=chunk,
                            NATIVE=mft.native_casts(x.device), num_warps=warps)
    return bits


@triton.jit
def nonfinite(amax_bits):
    """Whether amax bits (from `amax_bits`) mark a NaN or an Inf in their slice."""
    return amax_bits >= mft.F32_INF_BITS


@triton.jit
def finite_amax(amax_bits):
    """The fp32 amax of a finite slice (0 for a slice holding NaN/Inf; test with `nonfinite`)."""
    return mft.bits_to_float(tl.where(amax_bits >= mft.F32_INF_BITS, 0, amax_bits))
