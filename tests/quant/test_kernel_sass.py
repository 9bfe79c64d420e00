"""The quantize kernels' GPU code path, compiled without a GPU: perf/kernel_instructions.py has Triton's bundled
ptxas turn each kernel, as its wrapper launches it with native conversions, into sm_90 code, so the inline PTX
the interpreter never runs (`max.NaN.xorsign.abs` on bf16x2 / f16x2) is at least assembled, into the instruction
it is meant to be, on every CI run. The tool runs in a subprocess: this session's Triton is the interpreter."""

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
KERNELS = 6  # the rows perf/kernel_instructions.py reports: four quantize kernels, two dequantize kernels


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_quantize_kernels_assemble_for_sm90_with_packed_maxima(dtype, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    result = subprocess.run([sys.executable, str(ROOT / "perf" / "kernel_instructions.py"), "--dtype", dtype,
                             "--sass", str(tmp_path / "sass")], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ") and "quantize " in line]
    assert len(rows) == KERNELS, result.stdout
    for row in rows:
        per_element = float(row.split("|")[4])  # kernel | per thread | elements | per element | opcodes
        assert 5 < per_element < 40, row  # a parse that caught the kernel's body, not a fragment or a stub
    listings = sorted((tmp_path / "sass").glob("*.sass"))
    assert len(listings) == KERNELS
    expected = "HMNMX2.BF16_V2.NAN.XORSIGN" if dtype == "bf16" else "HMNMX2.NAN.XORSIGN"
    for listing in listings:
        text = listing.read_text()
        if listing.name.startswith(("nvfp4_quantize", "mxfp4_quantize", "int4_quantize")):
            maxima = set(re.findall(r"\b(HMNMX2[A-Z0-9_.]*)", text))
            assert maxima == {expected}, (listing.name, maxima)
            assert "LDG.E.128" in text, listing.name  # the weight read in 16-byte loads
        else:
            assert "STG.E.128" in text, listing.name  # the weight written in 16-byte stores
