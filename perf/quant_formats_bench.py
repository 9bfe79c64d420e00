"""Bandwidth of the quantization-format kernels on CUDA, against a device-to-device copy of the same weight.

    PYTHONPATH=src python perf/quant_formats_bench.py [--rows 8192 --cols 28672]

Effective bandwidth = (bytes read + bytes written by the operation) / median time, where a quantize reads
the bf16 weight once and writes the codes and scales, and a dequantize reads codes and scales and writes
bf16. The copy baseline reads and writes the bf16 weight (2 x 2 bytes per element) in the same run.
"Speedup" is over the pure-torch reference (`*_ref`) run on the same GPU. Timings: triton.testing.do_bench,
median, L2 flushed between repetitions.
"""

import argparse
import platform
from dataclasses import dataclass
from typing import Callable

import torch
import triton
from triton.testing import do_bench

from lowbit.quant.formats import fp8, fp8_triton, integer, integer_triton, mx, mx_triton, nvfp4, nvfp4_triton

TARGET_FRACTION_OF_COPY = 0.80


@dataclass
class Case:
    name: str
    kernel: Callable[[], object]
    reference: Callable[[], object]
    bytes_moved: int


def nbytes(*tensors: torch.Tensor) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def build_cases(w: torch.Tensor) -> list[Case]:
    from lowbit.quant.formats import minifloat_triton as mft

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
    tensor_scale = q_fp8["tensor"].weight_scale
    codes = torch.empty_like(w, dtype=torch.uint8)
    cases.append(Case("fp8 quantize (tensor, cast pass with the scale given)",
                      lambda: fp8_triton._rows_kernel[(w.shape[0],)](
                          w, tensor_scale, codes, w.shape[1], SCALE_GIVEN=True, FAKE_QUANT=False, OUT_IS_BF16=False,
                          CHUNK=fp8_triton.ROW_CHUNK, NATIVE=mft.native_casts()),
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


def sweep_launch_parameters(w: torch.Tensor, copy_gbps: float) -> None:
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
    native = mft.native_casts()

    def launchers(blocks: int, warps: int) -> dict[str, tuple[Callable[[], object], int]]:
        grid16, grid32 = (triton.cdiv(n16, blocks),), (triton.cdiv(n32, blocks),)
        return {
            "nvfp4 quantize": (lambda: nvfp4_triton._quantize_kernel[grid16](
                w, g, packed_words, scale16, n16, BLOCKS=blocks, NATIVE=native, num_warps=warps),
                nbytes(w, packed, scale16)),
            "nvfp4 dequantize": (lambda: nvfp4_triton._dequantize_kernel[grid16](
                q_nv.weight_packed, q_nv.weight_scale.view(torch.uint8), g, out, n16, BLOCKS=blocks,
                OUT_IS_BF16=not native, NATIVE=native, num_warps=warps), nbytes(w, packed, scale16)),
            "mxfp4 quantize": (lambda: mx_triton._quantize_kernel[grid32](
                w, packed_words, scale32, n32, BLOCKS=blocks, IS_FP4=True, ELEMENT_EMAX=2, ELEMENT_MAX=6.0,
                RULE=even, NATIVE=native, num_warps=warps), nbytes(w, packed, scale32)),
            "mxfp8 quantize": (lambda: mx_triton._quantize_kernel[grid32](
                w, codes8, scale32, n32, BLOCKS=blocks, IS_FP4=False, ELEMENT_EMAX=8, ELEMENT_MAX=448.0,
                RULE=even, NATIVE=native, num_warps=warps), nbytes(w, codes8, scale32)),
            "mxfp4 dequantize": (lambda: mx_triton._dequantize_kernel[grid32](
                q_mx4.data, q_mx4.scale, out, n32, BLOCKS=blocks, IS_FP4=True, OUT_IS_BF16=not native,
                NATIVE=native, num_warps=warps), nbytes(w, packed, scale32)),
            # row kernel: CHUNK = 16 * BLOCKS columns per step
            "fp8 quantize (channel)": (lambda: fp8_triton._rows_kernel[(rows,)](
                w, row_scale, codes_fp8, cols, SCALE_GIVEN=False, FAKE_QUANT=False, OUT_IS_BF16=False,
                CHUNK=16 * blocks, NATIVE=native, num_warps=warps), nbytes(w, codes_fp8, row_scale)),
            # group kernel: BLOCKS / 8 groups of 128 per program
            "int4 quantize (group 128)": (lambda: integer_triton._group_kernel[(triton.cdiv(w.numel() // 128,
                                                                                             max(1, blocks // 8)),)](
                w, int4_words, int4_scale, w.numel() // 128, GROUP=128, BLOCKS=max(1, blocks // 8), HALF_RANGE=7.5,
                Q_MIN=-8, Q_MAX=7, PACK_INT4=True, FLOOR=integer.scale_floor(torch.bfloat16),
                DROP=integer_triton.SIGNIFICAND_BITS_DROPPED[torch.bfloat16], num_warps=warps),
                nbytes(w, int4_words, int4_scale)),
            # dequantize kernel: CHUNK = 16 * BLOCKS columns per program
            "int4 dequantize (group 128)": (lambda: integer_triton._dequantize_kernel[(rows, triton.cdiv(
                cols, 16 * blocks))](
                q_int4.data, q_int4.weight_scale, out, cols, cols // 128, GROUP=128, IS_INT4=True,
                OUT_IS_BF16=not native, CHUNK=16 * blocks, num_warps=warps), nbytes(w, int4_words, int4_scale)),
        }

    results: dict[str, list[tuple[float, int, int]]] = {}
    for blocks in (16, 32, 64, 128, 256):
        for warps in (2, 4, 8):
            for name, (launch, moved) in launchers(blocks, warps).items():
                ms = do_bench(launch, return_mode="median")
                results.setdefault(name, []).append((moved / ms / 1e6, blocks, warps))
    print("\nlaunch-parameter sweep (GB/s; best first, top 3):")
    for name, rows in results.items():
        best = sorted(rows, reverse=True)[:3]
        text = ", ".join(f"BLOCKS={b} warps={nw}: {gbps:.0f} ({100 * gbps / copy_gbps:.0f}%)" for gbps, b, nw in best)
        print(f"  {name}: {text}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--cols", type=int, default=28672)
    parser.add_argument("--skip-reference", action="store_true", help="do not time the torch references")
    parser.add_argument("--sweep", action="store_true", help="also sweep BLOCKS x num_warps of the block kernels")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")

    from lowbit.quant.formats.minifloat_triton import native_casts

    print(f"GPU: {torch.cuda.get_device_name()} | torch {torch.__version__} | triton {triton.__version__} | "
          f"python {platform.python_version()} | conversions: {'native' if native_casts() else 'bit arithmetic'}")
    w = torch.randn(args.rows, args.cols, device="cuda", dtype=torch.bfloat16)
    print(f"weight: {args.rows}x{args.cols} bf16 ({nbytes(w) / 1e9:.3f} GB)")

    copy_dst = torch.empty_like(w)
    copy_ms = do_bench(lambda: copy_dst.copy_(w), return_mode="median")
    copy_gbps = 2 * nbytes(w) / copy_ms / 1e6
    print(f"device-to-device copy: {copy_ms:.3f} ms, {copy_gbps:.0f} GB/s (read + write)\n")

    print("| operation | kernel ms | GB/s | % of copy | torch ref ms | speedup |")
    print("|---|---:|---:|---:|---:|---:|")
    below_target = []
    for case in build_cases(w):
        kernel_ms = do_bench(case.kernel, return_mode="median")
        gbps = case.bytes_moved / kernel_ms / 1e6
        fraction = gbps / copy_gbps
        if args.skip_reference:
            ref_text, speedup_text = "-", "-"
        else:
            ref_ms = do_bench(case.reference, warmup=1, rep=1, return_mode="median")
            ref_text, speedup_text = f"{ref_ms:.2f}", f"{ref_ms / kernel_ms:.1f}x"
        print(f"| {case.name} | {kernel_ms:.3f} | {gbps:.0f} | {100 * fraction:.0f}% | {ref_text} | {speedup_text} |")
        if fraction < TARGET_FRACTION_OF_COPY:
            below_target.append(case.name)
        torch.cuda.empty_cache()
    print(f"\nbelow the {TARGET_FRACTION_OF_COPY:.0%}-of-copy target: {', '.join(below_target) or 'none'}")
    api_ms = do_bench(lambda: nvfp4.quantize(w, backend="triton"), return_mode="median")
    print(f"nvfp4.quantize(w, backend='triton') incl. the global amax pass: {api_ms:.3f} ms")
    if args.sweep:
        sweep_launch_parameters(w, copy_gbps)


if __name__ == "__main__":
    main()
