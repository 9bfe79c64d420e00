"""Bandwidth of the quantization-format kernels on CUDA, against a device-to-device copy of the same weight.

    PYTHONPATH=src python perf/quant_formats_bench.py [--rows 8192 --cols 28672]
    PYTHONPATH=src python perf/quant_formats_bench.py --smoke    # CPU: every case once, Triton's interpreter

Effective bandwidth = (bytes read + bytes written by the operation) / median time, where a quantize reads
the bf16 weight once and writes the codes and scales, and a dequantize reads codes and scales and writes
bf16. The copy baseline reads and writes the bf16 weight (2 x 2 bytes per element) in the same run.
"Speedup" is over the pure-torch reference (`*_ref`) run on the same GPU. Timings: triton.testing.do_bench,
median, L2 flushed between repetitions.

The second table puts the public entry points of the per-tensor-scaled quantizers, end to end (the amax
reduction, the quantize kernel and the NaN/Inf check that waits for them), beside the same launches without
that wait, beside the quantize kernel alone with its scale given and beside the copy: end to end / kernel
alone, and each as a share of copy bandwidth counting the weight read once (the bytes the operation must
move). Targets: NVFP4 end to end within E2E_TARGET_RATIO of the kernel alone; FP8 per-tensor end to end at
TARGET_FRACTION_OF_COPY of copy.

--smoke runs every case once on a small weight on the CPU (TRITON_INTERPRET=1, set here before triton is
imported): it checks that the script runs; its times mean nothing.
"""

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from typing import Callable

if "--smoke" in sys.argv:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
import triton  # noqa: E402
from triton.testing import do_bench  # noqa: E402

from lowbit.quant.formats import (  # noqa: E402
    amax_triton,
    fp8,
    fp8_triton,
    integer,
    integer_triton,
    mx,
    mx_triton,
    nvfp4,
    nvfp4_triton,
)

TARGET_FRACTION_OF_COPY = 0.80
E2E_TARGET_RATIO = 1.3
SMOKE_SHAPE = (128, 256)  # the smallest weight every format takes (FP8 blocks are 128x128)


@dataclass
class Case:
    name: str
    kernel: Callable[[], object]
    reference: Callable[[], object]
    bytes_moved: int


def nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def fp8_tensor_cast_pass(w: torch.Tensor, codes: torch.Tensor) -> Callable[[], object]:
    """FP8 per-tensor's quantize kernel alone: the row kernel with the tensor's scale given."""
    from lowbit.quant.formats import minifloat_triton as mft

    scale = fp8.quantize_ref(w, "tensor").weight_scale.to(w.device)
    return lambda: fp8_triton._rows_kernel[(w.shape[0],)](
        w, scale, scale, codes, w.shape[1], SCALE=fp8_triton.SCALE_GIVEN, FAKE_QUANT=False, OUT_IS_BF16=False,
        CHUNK=fp8_triton.ROW_CHUNK, NATIVE=mft.native_casts(w.device), num_warps=fp8_triton.ROW_WARPS)


@dataclass
class EndToEnd:
    name: str
    public: Callable[[], object]  # the public entry point, amax and NaN/Inf check included
    kernel: Callable[[], object]  # its quantize kernel alone, scale given
    device_side: Callable[[], object]  # the public call's launches without its host wait for the NaN/Inf check
    bytes_moved: int  # one read of the weight plus the writes
    target: str  # "ratio": public / kernel <= E2E_TARGET_RATIO; "copy": public >= TARGET_FRACTION_OF_COPY

    def meets_target(self, public_ms: float, kernel_ms: float, public_of_copy: float) -> bool:
        if self.target == "ratio":
            return public_ms / kernel_ms <= E2E_TARGET_RATIO
        return public_of_copy >= TARGET_FRACTION_OF_COPY


def build_end_to_end(w: torch.Tensor) -> list[EndToEnd]:
    g = nvfp4.shared_global_scale(w)
    q_nv = nvfp4_triton.quantize_triton(w, g)
    nv_bytes = nbytes(w, q_nv.weight_packed, q_nv.weight_scale)
    codes = torch.empty_like(w, dtype=torch.uint8)
    return [
        EndToEnd("nvfp4.quantize(w) (amax + quantize + check)", lambda: nvfp4.quantize(w, backend="triton"),
                 lambda: nvfp4_triton.quantize_triton(w, g), lambda: nvfp4_triton.quantize_unchecked_triton(w),
                 nv_bytes, "ratio"),
        EndToEnd("nvfp4.quantize(w, global_scale) (quantize + check)",
                 lambda: nvfp4.quantize(w, g, backend="triton"), lambda: nvfp4_triton.quantize_triton(w, g),
                 lambda: nvfp4_triton.quantize_unchecked_triton(w, g), nv_bytes, "ratio"),
        EndToEnd("fp8.quantize(w, 'tensor') (amax + cast + check)", lambda: fp8.quantize(w, "tensor", backend="triton"),
                 fp8_tensor_cast_pass(w, codes), lambda: fp8_triton.quantize_triton(w, "tensor"),
                 nbytes(w, codes), "copy"),
    ]


def build_cases(w: torch.Tensor) -> list[Case]:
    g = nvfp4.shared_global_scale(w)
    q_nv = nvfp4_triton.quantize_triton(w, g)
    q_mx4 = mx_triton.quantize_triton(w, "fp4", "even")
    q_mx8 = mx_triton.quantize_triton(w, "fp8", "even")
    q_fp8 = {gran: fp8_triton.quantize_triton(w, gran) for gran in fp8.GRANULARITIES}
    w_bytes = nbytes(w)
    cases = [
        Case("nvfp4 quantize (given global scale)", lambda: nvfp4_triton.quantize_triton(w, g),
             lambda: nvfp4.quantize_ref(w, g), w_bytes + nbytes(q_nv.weight_packed, q_nv.weight_scale)),
        Case("nvfp4 dequantize -> bf16", lambda: nvfp4_triton.dequantize_triton(q_nv),
             lambda: nvfp4.dequantize_ref(q_nv), nbytes(q_nv.weight_packed, q_nv.weight_scale) + w_bytes),
        Case("mxfp4 quantize (even)", lambda: mx_triton.quantize_triton(w, "fp4", "even"),
             lambda: mx.quantize_ref(w, "fp4", "even"), w_bytes + nbytes(*q_mx4)),
        Case("mxfp4 dequantize -> bf16", lambda: mx_triton.dequantize_triton(q_mx4, "fp4"),
             lambda: mx.dequantize_ref(q_mx4, "fp4"), nbytes(*q_mx4) + w_bytes),
        Case("mxfp8 quantize (even)", lambda: mx_triton.quantize_triton(w, "fp8", "even"),
             lambda: mx.quantize_ref(w, "fp8", "even"), w_bytes + nbytes(*q_mx8)),
        Case("mxfp8 dequantize -> bf16", lambda: mx_triton.dequantize_triton(q_mx8, "fp8"),
             lambda: mx.dequantize_ref(q_mx8, "fp8"), nbytes(*q_mx8) + w_bytes),
    ]
    for gran in fp8.GRANULARITIES:
        q = q_fp8[gran]
        cases.append(Case(f"fp8 quantize ({gran})", lambda gran=gran: fp8_triton.quantize_triton(w, gran),
                          lambda gran=gran: fp8.quantize_ref(w, gran), w_bytes + nbytes(*q)))
    codes = torch.empty_like(w, dtype=torch.uint8)
    cases.append(Case("fp8 quantize (tensor, cast pass with the scale given)", fp8_tensor_cast_pass(w, codes),
                      lambda: fp8.quantize_ref(w, "tensor"), w_bytes + nbytes(codes)))
    q = q_fp8["channel"]
    cases.append(Case("fp8 dequantize (channel) -> bf16", lambda: fp8_triton.dequantize_triton(q),
                      lambda: fp8.dequantize_ref(q), nbytes(*q) + w_bytes))
    q_int4 = integer_triton.quantize_int4_triton(w, 128)
    cases.append(Case("int4 quantize (group 128)", lambda: integer_triton.quantize_int4_triton(w, 128),
                      lambda: integer.quantize_int4_ref(w, 128), w_bytes + nbytes(*q_int4)))
    cases.append(Case("int4 dequantize (group 128) -> bf16", lambda: integer_triton.dequantize_triton(q_int4),
                      lambda: integer.dequantize_int4_ref(q_int4), nbytes(*q_int4) + w_bytes))
    return cases


def sweep_launch_parameters(w: torch.Tensor, copy_gbps: float, time_ms: Callable[..., float],
                            blocks_options: list[int], warps_options: list[int], only: list[str]) -> None:
    """Time the block kernels over BLOCKS (blocks per program) x num_warps, to pick the defaults."""
    from lowbit.quant.formats import minifloat_triton as mft

    g = nvfp4.shared_global_scale(w)
    n16, n32 = w.numel() // 16, w.numel() // 32
    packed = torch.empty(w.numel() // 2, dtype=torch.uint8, device=w.device)
    packed_words = packed.view(torch.int32)  # FP4 quantize kernels store whole int32 words
    rows, cols = w.shape
    codes_fp8 = torch.empty_like(w, dtype=torch.uint8)
    row_scale = torch.empty((rows, 1), dtype=torch.float32, device=w.device)
    int4_words = torch.empty((rows, cols // 8), dtype=torch.int32, device=w.device)
    int4_scale = torch.empty((rows, cols // 128), dtype=torch.bfloat16, device=w.device)  # the weight's dtype
    q_int4 = integer_triton.quantize_int4_triton(w, 128)
    codes8 = torch.empty(w.numel(), dtype=torch.uint8, device=w.device)
    scale16 = torch.empty(n16, dtype=torch.uint8, device=w.device)
    scale32 = torch.empty(n32, dtype=torch.uint8, device=w.device)
    out, _ = mft.output_view(torch.empty_like(w))
    q_nv = nvfp4_triton.quantize_triton(w, g)
    q_mx4 = mx_triton.quantize_triton(w, "fp4", "even")
    even = mft.RULE_IDS["even"]
    native = mft.native_casts(w.device)
    amax_bits = torch.zeros(1, dtype=torch.int32, device=w.device)
    nv_table = nvfp4_triton.divisor_table(g, amax_bits, global_from_amax=False, for_quantize=True, native=native)
    nv_dequantize_table = nvfp4_triton.divisor_table(g, g, global_from_amax=False, for_quantize=False, native=native)
    amax_programs = amax_triton._programs_per_slice(w.get_device())

    def launchers(blocks: int, warps: int) -> dict[str, tuple[Callable[[], object], int]]:
        grid16, grid32 = (triton.cdiv(n16, blocks),), (triton.cdiv(n32, blocks),)
        return {
            "nvfp4 quantize": (lambda: nvfp4_triton._quantize_kernel[grid16](
                w, g, nv_table, amax_bits, packed_words, scale16, n16, BLOCKS=blocks, FLAG_NONFINITE=False,
                NATIVE=native, num_warps=warps), nbytes(w, packed, scale16)),
            # amax reduction: CHUNK = 64 * BLOCKS elements per step, programs as amax_triton launches them
            "amax (whole tensor)": (lambda: amax_triton._amax_bits_kernel[(amax_programs, 1)](
                w, amax_bits, w.numel(), triton.cdiv(w.numel(), 64 * blocks), CHUNK=64 * blocks, NATIVE=native,
                num_warps=warps),
                nbytes(w)),
            "nvfp4 dequantize": (lambda: nvfp4_triton._dequantize_kernel[grid16](
                q_nv.weight_packed.view(torch.int32), q_nv.weight_scale.view(torch.uint8), nv_dequantize_table, out,
                n16, BLOCKS=blocks, OUT_IS_BF16=not native, num_warps=warps), nbytes(w, packed, scale16)),
            "mxfp4 quantize": (lambda: mx_triton._quantize_kernel[grid32](
                w, packed_words, scale32, n32, BLOCKS=blocks, IS_FP4=True, ELEMENT_EMAX=2, ELEMENT_MAX=6.0,
                RULE=even, NATIVE=native, num_warps=warps), nbytes(w, packed, scale32)),
            "mxfp8 quantize": (lambda: mx_triton._quantize_kernel[grid32](
                w, codes8, scale32, n32, BLOCKS=blocks, IS_FP4=False, ELEMENT_EMAX=8, ELEMENT_MAX=448.0,
                RULE=even, NATIVE=native, num_warps=warps), nbytes(w, codes8, scale32)),
            "mxfp4 dequantize": (lambda: mx_triton._dequantize_kernel[grid32](
                q_mx4.data.view(torch.int32), q_mx4.scale, out, n32, BLOCKS=blocks, IS_FP4=True, OUT_IS_BF16=not native,
                NATIVE=native, num_warps=warps), nbytes(w, packed, scale32)),
            # row kernel: CHUNK = 16 * BLOCKS columns per step
            "fp8 quantize (channel)": (lambda: fp8_triton._rows_kernel[(rows,)](
                w, row_scale, row_scale, codes_fp8, cols, SCALE=fp8_triton.SCALE_OF_ROW, FAKE_QUANT=False,
                OUT_IS_BF16=False, CHUNK=16 * blocks, NATIVE=native, num_warps=warps),
                nbytes(w, codes_fp8, row_scale)),
            # group kernel: BLOCKS / 8 groups of 128 per program
            "int4 quantize (group 128)": (lambda: integer_triton._group_kernel[(triton.cdiv(w.numel() // 128,
                                                                                             max(1, blocks // 8)),)](
                w, int4_words, int4_scale, w.numel() // 128, GROUP=128, BLOCKS=max(1, blocks // 8), HALF_RANGE=7.5,
                Q_MAX=7, PACK_INT4=True, FLOOR=integer.scale_floor(torch.bfloat16),
                DROP=integer_triton.SIGNIFICAND_BITS_DROPPED[torch.bfloat16], NATIVE=native, num_warps=warps),
                nbytes(w, int4_words, int4_scale)),
            # dequantize kernel: CHUNK = 16 * BLOCKS columns per program
            "int4 dequantize (group 128)": (lambda: integer_triton._dequantize_kernel[(rows, triton.cdiv(
                cols, 16 * blocks))](
                q_int4.data, q_int4.weight_scale, out, cols, cols // 128, GROUP=128, IS_INT4=True,
                OUT_IS_BF16=not native, CHUNK=16 * blocks, num_warps=warps), nbytes(w, int4_words, int4_scale)),
        }

    results: dict[str, list[tuple[float, int, int]]] = {}
    for blocks in blocks_options:
        for warps in warps_options:
            for name, (launch, moved) in launchers(blocks, warps).items():
                if only and not any(part in name for part in only):
                    continue
                ms = time_ms(launch)
                results.setdefault(name, []).append((moved / ms / 1e6, blocks, warps))
    print("\nlaunch-parameter sweep (GB/s; best first, top 5):")
    for name, rows in results.items():
        best = sorted(rows, reverse=True)[:5]
        text = ", ".join(f"BLOCKS={b} warps={nw}: {gbps:.0f} ({100 * gbps / copy_gbps:.0f}%)" for gbps, b, nw in best)
        print(f"  {name}: {text}")


def timer(smoke: bool) -> Callable[..., float]:
    """ms per call: do_bench's median on the GPU; in a smoke run one call after one warm-up call."""
    if not smoke:
        return lambda fn, **kwargs: do_bench(fn, return_mode="median", **kwargs)

    def once(fn: Callable[[], object], **_: object) -> float:
        fn()
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    return once


def print_kernel_table(w: torch.Tensor, copy_gbps: float, time_ms: Callable[..., float],
                       skip_reference: bool) -> None:
    print("| operation | kernel ms | GB/s | % of copy | torch ref ms | speedup |")
    print("|---|---:|---:|---:|---:|---:|")
    below_target = []
    for case in build_cases(w):
        kernel_ms = time_ms(case.kernel)
        gbps = case.bytes_moved / kernel_ms / 1e6
        fraction = gbps / copy_gbps
        if skip_reference:
            ref_text, speedup_text = "-", "-"
        else:
            ref_ms = time_ms(case.reference, warmup=1, rep=1)
            ref_text, speedup_text = f"{ref_ms:.2f}", f"{ref_ms / kernel_ms:.1f}x"
        print(f"| {case.name} | {kernel_ms:.3f} | {gbps:.0f} | {100 * fraction:.0f}% | {ref_text} | {speedup_text} |")
        if fraction < TARGET_FRACTION_OF_COPY:
            below_target.append(case.name)
        if w.is_cuda:
            torch.cuda.empty_cache()
    print(f"\nbelow the {TARGET_FRACTION_OF_COPY:.0%}-of-copy target: {', '.join(below_target) or 'none'}")


def print_end_to_end_table(w: torch.Tensor, copy_gbps: float, time_ms: Callable[..., float], smoke: bool) -> None:
    print("\nPublic quantize end to end against its kernel alone (scale given) and the copy; "
          "% of copy counts one read of the weight:")
    print("| entry point | end-to-end ms | its launches alone ms | kernel alone ms | end to end / kernel | "
          "end to end % of copy | kernel % of copy | target |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for row in build_end_to_end(w):
        public_ms, device_ms, kernel_ms = time_ms(row.public), time_ms(row.device_side), time_ms(row.kernel)
        public_of_copy = row.bytes_moved / public_ms / 1e6 / copy_gbps
        kernel_of_copy = row.bytes_moved / kernel_ms / 1e6 / copy_gbps
        target = (f"<= {E2E_TARGET_RATIO}x of kernel" if row.target == "ratio"
                  else f">= {TARGET_FRACTION_OF_COPY:.0%} of copy")
        verdict = ("met" if row.meets_target(public_ms, kernel_ms, public_of_copy) else "not met") if not smoke else "-"
        print(f"| {row.name} | {public_ms:.3f} | {device_ms:.3f} | {kernel_ms:.3f} | {public_ms / kernel_ms:.2f}x | "
              f"{100 * public_of_copy:.0f}% | {100 * kernel_of_copy:.0f}% | {target}: {verdict} |")
    amax_ms = time_ms(lambda: amax_triton.amax_bits(w))
    print(f"amax_triton.amax_bits(w) alone (zero fill + reduction, one read): {amax_ms:.3f} ms, "
          f"{nbytes(w) / amax_ms / 1e6:.0f} GB/s ({100 * nbytes(w) / amax_ms / 1e6 / copy_gbps:.0f}% of copy)")


def _integers(text: str) -> list[int]:
    return [int(item) for item in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--cols", type=int, default=28672)
    parser.add_argument("--skip-reference", action="store_true", help="do not time the torch references")
    parser.add_argument("--sweep", action="store_true", help="also sweep BLOCKS x num_warps of the block kernels")
    parser.add_argument("--sweep-blocks", type=_integers, default=[16, 32, 64, 128, 256],
                        help="BLOCKS values the sweep tries (comma-separated)")
    parser.add_argument("--sweep-warps", type=_integers, default=[2, 4, 8],
                        help="num_warps values the sweep tries (comma-separated)")
    parser.add_argument("--sweep-only", nargs="*", default=[],
                        help="sweep only the kernels whose names contain one of these, e.g. dequantize")
    parser.add_argument("--sweep-alone", action="store_true",
                        help="with --sweep: time only the launch parameters (no kernel or end-to-end table)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"run every case once on a {SMOKE_SHAPE[0]}x{SMOKE_SHAPE[1]} weight on the CPU")
    args = parser.parse_args()
    if args.smoke:
        (args.rows, args.cols), device = SMOKE_SHAPE, "cpu"
    elif torch.cuda.is_available():
        device = "cuda"
    else:
        raise SystemExit("this benchmark needs a CUDA GPU (or --smoke, which only checks that it runs)")

    from lowbit.quant.formats.minifloat_triton import native_casts

    name = (torch.cuda.get_device_name() if device == "cuda"
            else "CPU, Triton interpreter (smoke run: times mean nothing)")
    print(f"device: {name} | torch {torch.__version__} | triton {triton.__version__} | "
          f"python {platform.python_version()} | "
          f"conversions: {'native' if native_casts(torch.device(device)) else 'bit arithmetic'}")
    w = torch.randn(args.rows, args.cols, device=device, dtype=torch.bfloat16)
    print(f"weight: {args.rows}x{args.cols} bf16 ({nbytes(w) / 1e9:.3f} GB)")
    time_ms = timer(args.smoke)

    copy_dst = torch.empty_like(w)
    copy_ms = time_ms(lambda: copy_dst.copy_(w))
    copy_gbps = 2 * nbytes(w) / copy_ms / 1e6
    print(f"device-to-device copy: {copy_ms:.3f} ms, {copy_gbps:.0f} GB/s (read + write)")
    # the dequantize kernels write 3.6x the bytes they read: the write-only rate says what that mix can reach
    fill_ms = time_ms(lambda: copy_dst.fill_(1.0))
    print(f"device fill (write only): {fill_ms:.3f} ms, {nbytes(w) / fill_ms / 1e6:.0f} GB/s "
          f"({100 * nbytes(w) / fill_ms / 1e6 / copy_gbps:.0f}% of copy)\n")

    if not (args.sweep and args.sweep_alone):
        print_kernel_table(w, copy_gbps, time_ms, args.skip_reference)
        print_end_to_end_table(w, copy_gbps, time_ms, args.smoke)
    if args.sweep:
        sweep_launch_parameters(w, copy_gbps, time_ms, args.sweep_blocks, args.sweep_warps, args.sweep_only)


if __name__ == "__main__":
    main()
