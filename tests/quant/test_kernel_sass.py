"""The format kernels' GPU code, compiled without a GPU: perf/kernel_instructions.py has Triton's bundled ptxas
turn each kernel, as its wrapper launches it, into machine code, so what the interpreter never runs is at least
assembled on every CI run: on sm_90 the native paths (the inline `max.NaN.xorsign.abs` on bf16x2 / f16x2 into the
instruction it is meant to be), and on older GPUs (V100, T4, A100) the bit-arithmetic paths they take instead.
The tool runs in a subprocess: the test session's Triton is the interpreter."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]
NVDISASM = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "nvdisasm"
pytestmark = pytest.mark.skipif(not NVDISASM.is_file(), reason="this triton build ships no nvdisasm (CUDA tools)")
KERNELS = 14  # the rows perf/kernel_instructions.py reports: seven quantize kernels, three dequantize, the amax and
# NVFP4 activation fake-quant (one launch, two launches, grouped by expert)


def compile_kernels(tmp_path: Path, *options: str) -> list[str]:
    """Run the tool; the table rows it prints (its listings go to tmp_path / "sass")."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run([sys.executable, str(ROOT / "perf" / "kernel_instructions.py"), *options,
                             "--sass", str(tmp_path / "sass")], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if re.match(r"\| [^|]+ \| \d+ \|", line)]
    assert len(rows) == KERNELS, result.stdout
    return rows


@pytest.mark.parametrize("dtype", ["bf16", "fp16", "fp32"])
def test_quantize_kernels_assemble_for_sm90_with_packed_maxima(dtype, tmp_path):
    """The tool's exit status also says no kernel reads a register before writing it (see the next test)."""
    rows = compile_kernels(tmp_path, "--dtype", dtype)
    for row in rows:
        per_element = float(row.split("|")[4])  # kernel | per thread | elements | per element | opcodes
        assert 5 < per_element < 64, row  # a parse that caught the kernel's body, not a fragment or a stub
    listings = sorted((tmp_path / "sass").glob("*.sass"))
    assert len(listings) == KERNELS
    expected = {"bf16": {"HMNMX2.BF16_V2.NAN.XORSIGN"}, "fp16": {"HMNMX2.NAN.XORSIGN"}, "fp32": set()}[dtype]
    for listing in listings:
        text = listing.read_text()
        if "dequantize" in listing.name:
            assert "STG.E.128" in text, listing.name  # the weight written in 16-byte stores
            continue
        assert "LDG.E.128" in text and "LDG.E.U16" not in text, listing.name  # the weight read in 16-byte loads
        if listing.name != "fp8_quantize_channel.sass":  # block maxima (FP8's row maxima are taken in fp32)
            maxima = set(re.findall(r"\b(HMNMX2[A-Z0-9_.]*)", text))
            assert maxima == expected, (listing.name, maxima)


@pytest.mark.parametrize("arch, dtype", [(70, "fp16"), (75, "fp16"), (80, "bf16")])
def test_older_gpus_compile_the_bit_arithmetic_paths(arch, dtype, tmp_path):
    """What native_casts picks below compute capability 8.9, where Triton has no E4M3 type."""
    compile_kernels(tmp_path, "--arch", str(arch), "--dtype", dtype, "--bit-casts")
    for listing in sorted((tmp_path / "sass").glob("*.sass")):
        text = listing.read_text()
        assert "HMNMX2" not in text and "E4M3" not in text, listing.name


TABLE_KERNEL = """
import sys
sys.path.insert(0, {perf!r})
import kernel_instructions as ki
from lowbit.quant.formats import nvfp4_triton
for arch, native in ((90, True), (80, False)):
    for from_amax, for_quantize in ((False, True), (True, True), (False, False)):
        case = ki.KernelCase("table", nvfp4_triton._divisor_table_kernel,
                             {{"global_scale_ptr": "*fp32", "amax_bits_ptr": "*i32",
                               "table_ptr": "*fp64" if for_quantize else "*fp32"}},
                             dict(GLOBAL_FROM_AMAX=from_amax, FOR_QUANTIZE=for_quantize, NATIVE=native), 4, 128)
        listing = ki.sass(case, arch)
        stores = [op for op in ki.straight_line(listing) if op.startswith("STG")]
        print(arch, from_amax, for_quantize, "E4M3" in listing, len(stores))
"""


def compiled_rows(script: str, tmp_path: Path) -> list[list[str]]:
    """The lines `script` (formatted with perf=the perf folder) prints, split, compiled outside the interpreter."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update(TRITON_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT / "src"))
    result = subprocess.run([sys.executable, "-c", script.format(perf=str(ROOT / "perf"))],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return [line.split() for line in result.stdout.splitlines()]


def test_the_nvfp4_divisor_table_kernel_compiles_natively_and_in_bit_arithmetic(tmp_path):
    rows = compiled_rows(TABLE_KERNEL, tmp_path)
    # sm_90 decodes the scale codes with the E4M3 conversion, sm_80 in integer arithmetic; each stores its table,
    # and from the amax also the global scale
    assert rows == [["90", "False", "True", "True", "1"], ["90", "True", "True", "True", "2"],
                    ["90", "False", "False", "True", "1"],
                    ["80", "False", "True", "False", "1"], ["80", "True", "True", "False", "2"],
                    ["80", "False", "False", "False", "1"]]


AMAX_TABLES_KERNEL = """
import sys
sys.path.insert(0, {perf!r})
import kernel_instructions as ki
from lowbit.quant import fake_quant_triton as fqt
from lowbit.quant.formats import amax_triton
for arch, native in ((90, True), (80, False), (70, False)):
    case = ki.KernelCase("amax and tables", fqt._nvfp4_amax_tables_kernel,
                         {{"x_ptr": "*bf16", "state_ptr": "*i32", "global_scale_ptr": "*fp32",
                           "reciprocals_ptr": "*fp64", "divisors_ptr": "*fp32", "n_blocks": "i32", "chunks": "i32"}},
                         dict(CHUNK=amax_triton.CHUNK, NATIVE=native), amax_triton.WARPS, amax_triton.CHUNK)
    listing = ki.sass(case, arch)
    body = ki.straight_line(listing)
    atomics = sorted({{op.split(".")[2] for op in body if op.startswith("ATOMG") and ".GPU" in op}})
    stores = [op for op in body if op.startswith("STG")]
    print(arch, ",".join(atomics), any(op.startswith("BAR.SYNC") for op in body), len(stores),
          len(ki.registers_read_before_written(listing)))
"""


def test_the_nvfp4_amax_and_tables_kernel_compiles_with_its_gpu_scope_atomics(tmp_path):
    """The activation amax-and-tables launch on sm_90 and, in bit arithmetic, sm_80 and sm_70: the running
    maximum, the count of finished programs and the last program's exchange are GPU-scope atomics after a
    barrier; the last program stores the count's reset, the amax bits, the global scale and both tables."""
    rows = compiled_rows(AMAX_TABLES_KERNEL, tmp_path)
    assert rows == [[arch, "ADD,EXCH,MAX", "True", "5", "0"] for arch in ("90", "80", "70")]


# ptxas 12.8's code for the NVFP4 quantize kernel on float32 weights before encode_e4m3 converted in its own
# inline assembly (abridged): the second block's scale code, R5's upper half, came from R6, computed from R7,
# which nothing wrote. On an H100 half of the block scales were garbage; the PTX and the interpreter were right.
MISCOMPILED = """
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   S2R R3, SR_TID.X ;
        /*0060*/                   CS2R R12, SRZ ;
        /*04c0*/                   F2F.F64.F32 R28, R13 ;
        /*04d0*/                   LOP3.LUT R6, R7, 0xffff, RZ, 0xc0, !PT ;
        /*04e0*/                   IMAD.SHL.U32 R7, R3.reuse, 0x2, RZ ;
        /*0510*/                   SHF.R.U32.HI R6, RZ, 0x8, R6 ;
        /*0670*/                   F2FP.SATFINITE.E4M3.F32.PACK_AB_MERGE_C R5, R28, R29, R6 ;
        /*0690*/                   PRMT R7, R5, 0x7610, R7 ;
        /*0780*/                   LOP3.LUT R5, R5, 0x7f007f, RZ, 0xc0, !PT ;
        /*07a0*/                   SHFL.BFLY PT, R9, R5, 0x1, 0x1f ;
        /*0800*/                   STG.E.U8 desc[UR6][R12.64], R9 ;
        /*0810*/                   EXIT ;
"""


def test_the_register_check_finds_the_read_ptxas_miscompiled():
    sys.path.insert(0, str(ROOT / "perf"))
    import kernel_instructions

    found = kernel_instructions.registers_read_before_written(MISCOMPILED)
    assert found == ["/*04d0*/                   LOP3.LUT R6, R7, 0xffff, RZ, 0xc0, !PT ;"]
    # once R7 is written first, the rest reads only what earlier instructions wrote: register pairs (F2F.F64,
    # CS2R), a predicate before the destination (SHFL) and 16-bit merges into the destination itself (PRMT)
    repaired = MISCOMPILED.replace("/*04c0*/", "/*04b0*/ MOV R7, RZ ;\n        /*04c0*/")
    assert kernel_instructions.registers_read_before_written(repaired) == []
