"""Instructions per element of the format kernels (the quantize kernels, FP4 and INT4 dequantize, the amax, NVFP4
activation fake-quant), from their SASS, without a GPU.

The 4-bit quantize kernels are instruction-bound on an H200 (perf/RESULTS.md): at its memory bandwidth they must
issue at most about 20 instructions per element. This compiles each kernel as its wrapper launches it (same
constexprs, launch size and warps; pointers 16-byte aligned, as Triton specializes them) for an NVIDIA target
with Triton's own ptxas, disassembles it with the nvdisasm Triton ships, and counts the instructions of the
kernel's straight-line path: its body up to the last EXIT, without the out-of-line slow paths of IEEE division
(taken only for operands outside the normal range). Per element = that count / the elements one thread handles.

    python perf/kernel_instructions.py                 # sm_90 (H100, H200)
    python perf/kernel_instructions.py --arch 100 --sass /tmp/sass    # another target; keep the listings

A static count, not a timing: it says how the kernels' work per element changes, and the GPU benchmark
(perf/quant_formats_bench.py) says what that is worth. The tool also fails (exit 1) when a kernel's machine
code reads a register before anything wrote it (`registers_read_before_written`), a compiler fault that only
the GPU would otherwise show.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lowbit.quant import fake_quant_triton, grouped_act_quant_triton  # noqa: E402
from lowbit.quant.formats import (  # noqa: E402
    amax_triton,
    fp8_layout,
    fp8_triton,
    integer_layout,
    integer_triton,
    mx_triton,
    nvfp4_triton,
)

NVDISASM = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
TORCH_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
# a SASS listing line: /*address*/ [@predicate] OPCODE operands ;
INSTRUCTION = re.compile(r"\s*/\*[0-9a-f]+\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*(.*?)\s*;")


@dataclass(frozen=True)
class KernelCase:
    name: str
    kernel: Any
    signature: dict[str, str]
    constexprs: dict[str, Any]
    num_warps: int
    elements_per_program: int
    multiples_of_16: tuple[str, ...] = ()  # integer arguments every launch passes as multiples of 16 (Triton
    # specializes those as divisible by 16, which lets it vectorise)


def cases(dtype: str = "bf16", native: bool = True) -> list[KernelCase]:
    """The kernels as their wrappers launch them, for weights of `dtype` ("bf16", "fp16", "fp32") in and out, with the
    GPU's own conversions (`native`) or their bit-arithmetic twins (what GPUs older than compute capability 8.9
    run)."""
    nv_blocks, nv_warps = nvfp4_triton.QUANTIZE_BLOCKS, nvfp4_triton.QUANTIZE_WARPS
    nv_signature = {"x_ptr": f"*{dtype}", "global_scale_ptr": "*fp32", "divisor_table_ptr": "*fp64",
                    "nonfinite_bits_ptr": "*i32", "packed_ptr": "*i32", "scale_ptr": "*u8", "n_blocks": "i32"}
    mx_blocks, mx_warps = mx_triton.QUANTIZE_LAUNCH["fp4"]
    mx8_blocks, mx8_warps = mx_triton.QUANTIZE_LAUNCH["fp8"]
    tile_rows, tile_cols = fp8_layout.BLOCK_SHAPE
    int4_groups = integer_triton.GROUP_ELEMENTS_PER_PROGRAM // 128
    bf16_bits_out = not native and dtype == "bf16"  # minifloat_triton.output_view's rule
    return [
        KernelCase("nvfp4 quantize (kernel alone)", nvfp4_triton._quantize_kernel, nv_signature,
                   dict(BLOCKS=nv_blocks, FLAG_NONFINITE=False, NATIVE=native), nv_warps, nv_blocks * 16),
        KernelCase("nvfp4 quantize (NaN/Inf flagged)", nvfp4_triton._quantize_kernel, nv_signature,
                   dict(BLOCKS=nv_blocks, FLAG_NONFINITE=True, NATIVE=native), nv_warps, nv_blocks * 16),
        KernelCase("mxfp4 quantize (even)", mx_triton._quantize_kernel,
                   {"x_ptr": f"*{dtype}", "data_ptr": "*i32", "scale_ptr": "*u8", "n_blocks": "i32"},
                   dict(BLOCKS=mx_blocks, IS_FP4=True, ELEMENT_EMAX=2, ELEMENT_MAX=6.0, RULE=1, NATIVE=native),
                   mx_warps, mx_blocks * 32),
        KernelCase("nvfp4 dequantize", nvfp4_triton._dequantize_kernel,
                   {"packed_ptr": "*i32", "scale_ptr": "*u8", "divisor_table_ptr": "*fp32", "out_ptr": f"*{dtype}",
                    "n_blocks": "i32"},
                   dict(BLOCKS=nvfp4_triton.DEQUANTIZE_BLOCKS, OUT_IS_BF16=bf16_bits_out),
                   nvfp4_triton.DEQUANTIZE_WARPS, nvfp4_triton.DEQUANTIZE_BLOCKS * 16),
        KernelCase("mxfp4 dequantize", mx_triton._dequantize_kernel,
                   {"data_ptr": "*i32", "scale_ptr": "*u8", "out_ptr": f"*{dtype}", "n_blocks": "i32"},
                   dict(BLOCKS=mx_triton.DEQUANTIZE_LAUNCH["fp4"][0], IS_FP4=True, OUT_IS_BF16=bf16_bits_out,
                        NATIVE=native),
                   mx_triton.DEQUANTIZE_LAUNCH["fp4"][1], mx_triton.DEQUANTIZE_LAUNCH["fp4"][0] * 32),
        KernelCase("mxfp8 quantize (even)", mx_triton._quantize_kernel,
                   {"x_ptr": f"*{dtype}", "data_ptr": "*u8", "scale_ptr": "*u8", "n_blocks": "i32"},
                   dict(BLOCKS=mx8_blocks, IS_FP4=False, ELEMENT_EMAX=8, ELEMENT_MAX=448.0, RULE=1, NATIVE=native),
                   mx8_warps, mx8_blocks * 32),
        # one row of ROW_CHUNK columns: each of the kernel's two passes over the row runs once
        KernelCase("fp8 quantize (channel)", fp8_triton._rows_kernel,
                   {"x_ptr": f"*{dtype}", "scale_ptr": "*fp32", "amax_bits_ptr": "*i32", "out_ptr": "*u8"},
                   dict(n_cols=fp8_triton.ROW_CHUNK, SCALE=fp8_triton.SCALE_OF_ROW, FAKE_QUANT=False,
                        OUT_IS_BF16=False, CHUNK=fp8_triton.ROW_CHUNK, NATIVE=native),
                   fp8_triton.ROW_WARPS, fp8_triton.ROW_CHUNK),
        KernelCase("fp8 quantize (block 128x128)", fp8_triton._block_kernel,
                   {"x_ptr": f"*{dtype}", "scale_ptr": "*fp32", "out_ptr": "*u8", "n_cols": "i32"},
                   dict(TILE_ROWS=tile_rows, TILE_COLS=tile_cols, NATIVE=native), fp8_triton.BLOCK_WARPS,
                   tile_rows * tile_cols,
                   multiples_of_16=("n_cols",)),  # the block layout takes multiples of 128 columns only
        KernelCase("int4 quantize (group 128)", integer_triton._group_kernel,
                   {"x_ptr": f"*{dtype}", "out_ptr": "*i32", "scale_ptr": f"*{dtype}", "n_groups": "i32"},
                   dict(GROUP=128, BLOCKS=int4_groups, HALF_RANGE=7.5, Q_MAX=7, PACK_INT4=True,
                        FLOOR=integer_layout.scale_floor(TORCH_DTYPES[dtype]),
                        DROP=integer_triton.SIGNIFICAND_BITS_DROPPED[TORCH_DTYPES[dtype]], NATIVE=native),
                   integer_triton.GROUP_WARPS, int4_groups * 128),
        KernelCase("int4 dequantize (group 128)", integer_triton._dequantize_kernel,
                   {"q_ptr": "*i32", "scale_ptr": f"*{dtype}", "out_ptr": f"*{dtype}", "n_cols": "i32",
                    "n_scale_cols": "i32"},
                   dict(GROUP=128, IS_INT4=True, OUT_IS_BF16=bf16_bits_out, CHUNK=integer_triton.DEQUANT_CHUNK),
                   integer_triton.DEQUANT_WARPS, integer_triton.DEQUANT_CHUNK,
                   multiples_of_16=("n_cols", "n_scale_cols")),  # real widths: multiples of 128 and of 16 groups
        # the per-tensor scales' amax (NVFP4 global, FP8 tensor): the straight line is one step of its loop
        KernelCase("amax (one step)", amax_triton._amax_bits_kernel,
                   {"x_ptr": f"*{dtype}", "amax_bits_ptr": "*i32", "slice_numel": "i32", "chunks_per_slice": "i32"},
                   dict(CHUNK=amax_triton.CHUNK, NATIVE=native), amax_triton.WARPS, amax_triton.CHUNK,
                   multiples_of_16=("slice_numel",)),  # weights' and activations' sizes: Triton specializes them
        # activation fake-quant: decode-sized inputs in one launch (its straight line holds one step of the whole
        # amax, CHUNK elements, then one group of blocks, each block's divisor computed: both counted)
        KernelCase("nvfp4 fake quantize (one launch)", fake_quant_triton._nvfp4_one_launch_kernel,
                   {"x_ptr": f"*{dtype}", "out_ptr": f"*{dtype}", "n_blocks": "i32", "chunks": "i32"},
                   dict(CHUNK=fake_quant_triton.NVFP4_ONE_LAUNCH_CHUNK, BLOCKS=fake_quant_triton.NVFP4_GROUP_BLOCKS,
                        OUT_IS_BF16=bf16_bits_out, NATIVE=native),
                   fake_quant_triton.NVFP4_ONE_LAUNCH_WARPS,
                   fake_quant_triton.NVFP4_ONE_LAUNCH_CHUNK + fake_quant_triton.NVFP4_GROUP_BLOCKS * 16),
        # larger inputs (prefill), after the amax-and-tables launch: each block's divisor looked up
        KernelCase("nvfp4 fake quantize (two launches)", fake_quant_triton._nvfp4_tables_kernel,
                   {"x_ptr": f"*{dtype}", "state_ptr": "*i32", "global_scale_ptr": "*fp32",
                    "reciprocals_ptr": "*fp64", "divisors_ptr": "*fp32", "out_ptr": f"*{dtype}", "n_blocks": "i32"},
                   dict(BLOCKS=fake_quant_triton.NVFP4_GROUP_BLOCKS, OUT_IS_BF16=bf16_bits_out, NATIVE=native),
                   fake_quant_triton.NVFP4_TABLE_WARPS, fake_quant_triton.NVFP4_GROUP_BLOCKS * 16),
        # MoE experts' inputs, one global scale per expert (128 experts: Qwen3-30B-A3B), after their amax launch;
        # each block compares its row with every expert's end
        KernelCase("nvfp4 grouped fake quantize (128 experts)", grouped_act_quant_triton._grouped_nvfp4_kernel,
                   {"x_ptr": f"*{dtype}", "ends_ptr": "*i32", "partial_ptr": "*fp32", "out_ptr": f"*{dtype}",
                    "n_blocks": "i32"},
                   dict(BLOCKS_PER_ROW=2048 // 16, NUM_EXPERTS=128, EXPERTS_POW2=128, SPLIT=1,
                        BLOCKS=grouped_act_quant_triton.BLOCKS, OUT_IS_BF16=bf16_bits_out, NATIVE=native),
                   grouped_act_quant_triton.WARPS, grouped_act_quant_triton.BLOCKS * 16),
    ]


def sass(case: KernelCase, arch: int) -> str:
    """The kernel's SASS for sm_<arch>, compiled as a launch with 16-byte-aligned pointers would be."""
    aligned = {(i,): [["tt.divisibility", 16]] for i, (name, kind) in enumerate(case.signature.items())
               if kind[0] == "*" or name in case.multiples_of_16}
    source = ASTSource(fn=case.kernel, signature=case.signature, constexprs=case.constexprs, attrs=aligned)
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options={"num_warps": case.num_warps})
    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(compiled.asm["cubin"])
        cubin.flush()
        return subprocess.run([str(NVDISASM), "-c", cubin.name], capture_output=True, text=True, check=True).stdout


def _kernel_instructions(listing: str) -> list[re.Match]:
    """The kernel's own instructions, from its entry up to its first subroutine (INSTRUCTION's matches: the
    predicate, opcode and operands groups)."""
    matches: list[re.Match] = []
    for line in listing.splitlines():
        if line.lstrip().startswith(".weak") and matches:
            break
        match = INSTRUCTION.match(line)
        if match:
            matches.append(match)
    return matches


def straight_line(listing: str) -> list[str]:
    """Opcodes of the kernel body: from its entry to its last EXIT, stopping at the first subroutine."""
    opcodes = [match.group(2) for match in _kernel_instructions(listing)]
    last_exit = max(i for i, op in enumerate(opcodes) if op == "EXIT")
    return opcodes[: last_exit + 1]


REGISTER = re.compile(r"\bR(\d+)\b")
PAIR_DESTINATIONS = re.compile(r"^(?:DMUL|DADD|DFMA|F2F\.F64|I2F\.F64|IMAD\.WIDE|CS2R(?!\.32))|\.64\b")


def _operands(text: str) -> list[str]:
    """An instruction's operands, split at the commas outside brackets."""
    return [operand.strip() for operand in re.split(r",(?![^\[]*\])", text) if operand.strip()]


def _merges_into_itself(opcode: str) -> bool:
    """PRMT or F2FP...MERGE_C naming its destination as a source: a 16-bit write into half of the register,
    the other half kept whatever it holds (how ptxas writes 16-bit values); not a read of the value."""
    return opcode.startswith("PRMT") or "MERGE_C" in opcode


def registers_read_before_written(listing: str) -> list[str]:
    """Instructions of the kernel body (entry to last EXIT, in program order) that read a general register no
    earlier instruction wrote: an uninitialised read, which no correct compilation makes. ptxas 12.8 made one
    for sm_90 (the upper half of an F2FP...MERGE_C taken from a register never written), so a kernel can be
    wrong on the GPU while its PTX and the interpreter are right. Approximate by design: a write anywhere
    earlier in the listing counts, a 16-bit write merging into its own register is no read, nor is a spill to
    local memory (ptxas spills registers that only a predicated write defines, such as a cross-warp reduction's
    shared-memory load in the lanes that take part), and checking stops at the first subroutine call."""
    written: set[int] = set()
    found: list[str] = []
    for match in _kernel_instructions(listing):
        predicate, opcode, rest = match.groups()
        if opcode.startswith("CALL"):
            break
        if opcode.startswith("STL"):  # a spill: of a value a predicated write may leave undefined, harmlessly
            continue
        operands = _operands(rest.replace(".reuse", ""))
        if operands and re.fullmatch(r"!?U?P(T|\d+)", operands[0]):  # a predicate written beside the register
            operands = operands[1:]
        destination = REGISTER.fullmatch(operands[0]) if operands else None
        for operand in operands[1:] if destination else operands:
            if destination and operand == destination.group(0) and _merges_into_itself(opcode):
                continue
            if any(int(r) not in written for r in REGISTER.findall(operand)):
                found.append(match.group(0).strip())
                break
        if destination:
            width = 4 if ".128" in opcode else 2 if PAIR_DESTINATIONS.search(opcode) else 1
            written.update(range(int(destination.group(1)), int(destination.group(1)) + width))
        if opcode == "EXIT" and not predicate:
            break
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", type=int, default=90, help="compute capability x 10 (90: H100 / H200)")
    parser.add_argument("--dtype", choices=sorted(TORCH_DTYPES), default="bf16", help="the weights' dtype")
    parser.add_argument("--bit-casts", action="store_true",
                        help="compile the bit-arithmetic conversions (LOWBIT_TRITON_BIT_CASTS=1; GPUs before sm_89)")
    parser.add_argument("--sass", type=Path, help="also write each kernel's SASS listing into this folder")
    args = parser.parse_args()
    print(f"sm_{args.arch}, {args.dtype} weights, {'bit-arithmetic' if args.bit_casts else 'native'} conversions, "
          f"triton {triton.__version__}")
    print("| kernel | instructions per thread | elements per thread | per element | most frequent |")
    print("|---|---:|---:|---:|---|")
    miscompiled: list[str] = []
    for case in cases(args.dtype, native=not args.bit_casts):
        listing = sass(case, args.arch)
        miscompiled += [f"{case.name}: {line}" for line in registers_read_before_written(listing)]
        if args.sass:
            args.sass.mkdir(parents=True, exist_ok=True)
            (args.sass / (re.sub(r"\W+", "_", case.name).strip("_") + ".sass")).write_text(listing)
        opcodes = straight_line(listing)
        per_thread = case.elements_per_program / (32 * case.num_warps)
        frequent = collections.Counter(op.split(".")[0] for op in opcodes).most_common(5)
        print(f"| {case.name} | {len(opcodes)} | {per_thread:.0f} | {len(opcodes) / per_thread:.1f} | "
              f"{', '.join(f'{op} {n}' for op, n in frequent)} |")
    for line in miscompiled:
        print(f"reads a register no instruction wrote (a miscompilation): {line}", file=sys.stderr)
    return 1 if miscompiled else 0


if __name__ == "__main__":
    raise SystemExit(main())
