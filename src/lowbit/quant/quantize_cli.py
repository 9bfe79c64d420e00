"""`lowbit quantize`: a Hugging Face checkpoint -> a compressed-tensors checkpoint (vLLM, transformers).

    lowbit quantize model=Qwen/Qwen3-1.7B scheme=nvfp4 out=ckpts/qwen3-1.7b-nvfp4 [device=cuda backend=triton]

Each method takes a `QuantizeRequest` and returns a `ConversionResult`; `METHODS` registers method= names as
"module:function", so that a method's dependencies are imported only when it is chosen.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lowbit.command import Command
from lowbit.errors import UsageError
from lowbit.registry import Registry, import_target

METHODS = Registry("method", {
    "rtn": "lowbit.quant.checkpoint:quantize_checkpoint",  # round to nearest, streamed, no calibration data
    "gptq": "lowbit.quant.gptq:quantize_request",  # GPTQ through llm-compressor, with calibration data
})
# round to nearest through llm-compressor: SmoothQuant, and the schemes only llm-compressor writes (w4a8, w8a8)
CALIBRATED_RTN = "lowbit.quant.gptq:quantize_request"
OPTIONS = {
    "model": str, "scheme": str, "out": str, "group_size": int, "targets": str | list[str],
    "ignore": str | list[str], "device": str, "backend": str, "method": str, "overwrite": bool,
    "max_shard_size": str | int, "smoothquant": bool, "calibration": str, "num_calibration_samples": int,
    "calibration_max_length": int, "seed": int, "allow_partial": bool,
}
EPILOG = """\
options (key=value):
  model=<dir or hub id>   scheme=nvfp4|mxfp4|mxfp8|fp8|fp8-block|int8|w4a16   out=<dir>
  group_size=N            int8: per-channel (default) or 32|64|128; w4a16: 128 (default) or 32
  targets=[regex,...]     modules to quantize (default: every 2-D Linear weight)
  ignore=[regex,...]      modules to keep (default: lm_head, embeddings, norms, MoE routers/gates)
  device=cpu|cuda  backend=ref|triton  method=rtn|gptq  overwrite=true  max_shard_size=2GB
  allow_partial=true      keep modules whose shape is not a multiple of the scheme's block unquantized
                          (without it such a model is refused; the modules kept are listed either way)
calibrated (llm-compressor; method=gptq, smoothquant=true, or scheme=w4a8|w4a8-no-attn|w8a8|w8a8-no-attn|w8a16|nvfp4a16):
  smoothquant=true  calibration=<jsonl or text file; default HuggingFaceH4/ultrachat_200k>
  num_calibration_samples=512  calibration_max_length=2048  seed=42
Regexes match module names from their start, as compressed-tensors and vLLM match "re:" patterns.
See docs/quantization.md for the layouts and which backends load each scheme.
"""


COMMAND = Command("quantize", "quantize a checkpoint into a compressed-tensors checkpoint",
                  run="lowbit.quant.quantize_cli:run", options=EPILOG)


def needs_llm_compressor(method: str, scheme: str, smoothquant: bool) -> bool:
    from lowbit.quant.schemes import SCHEMES

    return method != "rtn" or smoothquant or scheme not in SCHEMES


def method_function(request):
    if request.method == "rtn" and needs_llm_compressor(request.method, request.scheme, request.smoothquant):
        return import_target(CALIBRATED_RTN)
    return METHODS.get(request.method)


# the smallest value of an integer option (its type is checked by lowbit.overrides)
MINIMUMS = {"num_calibration_samples": 1, "calibration_max_length": 1, "seed": 0}


def build_request(overrides: list[str]):
    """The QuantizeRequest of `lowbit quantize` options; options not given keep QuantizeRequest's defaults."""
    from lowbit.overrides import parse_options, require
    from lowbit.quant.checkpoint import QuantizeRequest
    from lowbit.quant.safetensors_io import parse_size
    from lowbit.registry import unknown_name

    values = parse_options(overrides, OPTIONS, COMMAND.name)
    model = require(values, "model", "model=Qwen/Qwen3-1.7B or model=/path/to/checkpoint")
    scheme = require(values, "scheme", "scheme=nvfp4")
    out = require(values, "out", "out=ckpts/qwen3-1.7b-nvfp4")
    group_size = values.get("group_size")
    method = values.setdefault("method", QuantizeRequest.method)
    if method not in METHODS:
        raise unknown_name("method", method, METHODS.names())
    smoothquant = values.get("smoothquant", QuantizeRequest.smoothquant)
    for key, minimum in MINIMUMS.items():
        if values.get(key, minimum) < minimum:
            raise UsageError(f"{key} must be an integer >= {minimum}, got {values[key]}")
    from lowbit.quant.gptq import COMMAND_NAMES, calibrated_scheme
    from lowbit.quant.schemes import SCHEMES, resolve_scheme

    resolved = resolve_scheme(scheme, group_size)  # a format's spelling (int4_g32) names its scheme and group
    if resolved is not None:
        scheme, values["group_size"] = resolved[0].name, resolved[1]
    elif scheme not in COMMAND_NAMES:
        known = list(SCHEMES) + [name for name in COMMAND_NAMES if name not in SCHEMES]
        raise UsageError(f"unknown scheme '{scheme}': choose one of {', '.join(known)}")
    if needs_llm_compressor(method, scheme, smoothquant):
        calibrated_scheme(scheme, values.get("group_size"))  # validates the pair before anything is loaded
    for key in ("targets", "ignore"):
        if isinstance(values.get(key), str):
            values[key] = [values[key]]
    if "max_shard_size" in values:
        values["max_shard_bytes"] = parse_size(values.pop("max_shard_size"))
    return QuantizeRequest(**{**values, "model": model, "out": Path(out), "scheme": scheme})


def run(args: argparse.Namespace) -> int:
    request = build_request(args.overrides)
    result = method_function(request)(request)
    print(f"quantized {len(result.quantized)} modules to {request.scheme} ({request.method}) in "
          f"{result.seconds:.1f} s: {result.bytes_read / 1e9:.3f} GB read, {result.bytes_written / 1e9:.3f} GB "
          f"written in {len(result.shards)} shard(s)")
    if result.unquantized:
        print(f"left unquantized ({len(result.unquantized)} modules, shape not a multiple of the block; "
              f"allow_partial=true): {', '.join(result.unquantized)}")
    print(f"checkpoint: {result.out}")
    return 0
