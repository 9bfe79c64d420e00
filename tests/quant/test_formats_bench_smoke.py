"""perf/quant_formats_bench.py, which the GPU runs record figures with, launches the kernels by their raw
signatures in its launch-parameter sweep (its tables go through the wrappers, which the format tests cover); its
--smoke mode runs each sweep launch once on a small weight through Triton's interpreter, so a kernel whose
signature changes breaks CI, not a GPU session."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[2]
SWEPT_KERNELS = ["nvfp4 quantize", "amax (whole tensor)", "nvfp4 dequantize", "mxfp4 quantize", "mxfp8 quantize",
                 "mxfp4 dequantize", "fp8 quantize (channel)", "int4 quantize (group 128)",
                 "int4 dequantize (group 128)"]


def test_every_sweep_launch_runs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "perf" / "quant_formats_bench.py"), "--smoke", "--sweep", "--sweep-alone",
         "--sweep-blocks", "16", "--sweep-warps", "2"],
        capture_output=True, text=True, timeout=600, env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "device fill (write only)" in result.stdout and "| operation |" not in result.stdout
    sweep = result.stdout.split("launch-parameter sweep", 1)[1]
    for kernel in SWEPT_KERNELS:
        assert f"  {kernel}: BLOCKS=16 warps=2: " in sweep, kernel
