"""`lowbit quantize`: a Hugging Face checkpoint -> a compressed-tensors checkpoint (vLLM, transformers).

    lowbit quantize model=Qwen/Qwen3-1.7B scheme=nvfp4 out=ckpts/qwen3-1.7b-nvfp4 [device=cuda backend=triton]

Each method takes a `QuantizeRequest` and returns a `ConversionResult`; `METHODS` maps method= names to
"module:function" so that a method's dependencies are imported only when it is chosen.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from lowbit.errors import UsageError

COMMAND = "quantize"
METHODS = {
    "rtn": "lowbit.quant.checkpoint:quantize_checkpoint",  # round to nearest, streamed, no calibration data
    "gptq": "lowbit.quant.gptq:quantize_request",  # GPTQ through llm-compressor, with calibration data
}
# round to nearest through llm-compressor: SmoothQuant, and the schemes only llm-compressor writes (w4a8, w8a8)
CALIBRATED_RTN = "lowbit.quant.gptq:quantize_request"
OPTIONS = ("model", "scheme", "out", "group_size", "targets", "ignore", "device", "backend", "method",
           "overwrite", "max_shard_size", "smoothquant", "calibration", "num_calibration_samples",
           "calibration_max_length", "seed")
EPILOG = """\
options (key=value):
  model=<dir or hub id>   scheme=nvfp4|mxfp4|mxfp8|fp8|fp8-block|int8|w4a16   out=<dir>
  group_size=N            int8: per-channel (default) or 32|64|128; w4a16: 128 (default) or 32
  targets=[regex,...]     modules to quantize (default: every 2-D Linear weight)
  ignore=[regex,...]      modules to keep (default: lm_head, embeddings, norms, MoE routers/gates)
  device=cpu|cuda  backend=ref|triton  method=rtn|gptq  overwrite=true  max_shard_size=2GB
calibrated (llm-compressor; method=gptq, smoothquant=true, or scheme=w4a8|w4a8-no-attn|w8a8|w8a8-no-attn|w8a16|nvfp4a16):
  smoothquant=true  calibration=<jsonl or text file; default HuggingFaceH4/ultrachat_200k>
  num_calibration_samples=512  calibration_max_length=2048  seed=42
Regexes match module names from their start, as compressed-tensors and vLLM match "re:" patterns.
See docs/quantization.md for the layouts and which backends load each scheme.
"""


def add_parser(subparsers) -> callable:
    parser = subparsers.add_parser(COMMAND, help="quantize a checkpoint into a compressed-tensors checkpoint",
                                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("overrides", nargs="*", help="key=value options")
    return run


def needs_llm_compressor(method: str, scheme: str, smoothquant: bool) -> bool:
    from lowbit.quant.schemes import SCHEMES

    return method != "rtn" or smoothquant or scheme not in SCHEMES


def method_function(request):
    if request.method not in METHODS:
        raise UsageError(f"unknown method '{request.method}': choose one of {', '.join(METHODS)}")
    target = METHODS[request.method]
    if request.method == "rtn" and needs_llm_compressor(request.method, request.scheme, request.smoothquant):
        target = CALIBRATED_RTN
    module_name, _, function = target.partition(":")
    return getattr(importlib.import_module(module_name), function)


def _positive_int(values: dict, key: str, default: int, minimum: int = 1) -> int:
    value = values.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UsageError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def build_request(overrides: list[str]):
    from lowbit.quant.checkpoint import QuantizeRequest
    from lowbit.quant.cli_overrides import as_bool, as_list, parse_overrides, require
    from lowbit.quant.safetensors_io import DEFAULT_MAX_SHARD_BYTES, parse_size
    from lowbit.quant.schemes import get_scheme

    values = parse_overrides(overrides, OPTIONS, COMMAND)
    model = require(values, "model", "model=Qwen/Qwen3-1.7B or model=/path/to/checkpoint")
    scheme = require(values, "scheme", "scheme=nvfp4")
    out = require(values, "out", "out=ckpts/qwen3-1.7b-nvfp4")
    group_size = values.get("group_size")
    if group_size is not None and (not isinstance(group_size, int) or isinstance(group_size, bool)):
        raise UsageError(f"group_size must be an integer, got {group_size!r}")
    method = str(values.get("method", "rtn"))
    smoothquant = as_bool(values.get("smoothquant", False), "smoothquant")
    from lowbit.quant.gptq import COMMAND_SCHEMES, calibrated_scheme
    from lowbit.quant.schemes import SCHEMES

    known = list(SCHEMES) + [name for name, _ in COMMAND_SCHEMES if name not in SCHEMES]
    if scheme not in known:
        raise UsageError(f"unknown scheme '{scheme}': choose one of {', '.join(dict.fromkeys(known))}")
    if needs_llm_compressor(method, scheme, smoothquant):
        calibrated_scheme(scheme, group_size)  # validates the pair before anything is loaded
    else:
        scheme = get_scheme(scheme).name
    calibration = values.get("calibration")
    return QuantizeRequest(
        model=model, out=Path(out), scheme=scheme, group_size=group_size,
        targets=as_list(values.get("targets"), "targets"), ignore=as_list(values.get("ignore"), "ignore"),
        device=str(values.get("device", "cpu")), backend=str(values.get("backend", "ref")),
        overwrite=as_bool(values.get("overwrite", False), "overwrite"), method=method,
        max_shard_bytes=parse_size(values.get("max_shard_size", DEFAULT_MAX_SHARD_BYTES)),
        smoothquant=smoothquant, calibration=None if calibration is None else str(calibration),
        num_calibration_samples=_positive_int(values, "num_calibration_samples", 512),
        calibration_max_length=_positive_int(values, "calibration_max_length", 2048),
        seed=_positive_int(values, "seed", 42, minimum=0),
    )


def run(args: argparse.Namespace) -> int:
    request = build_request(args.overrides)
    result = method_function(request)(request)
    print(f"quantized {len(result.quantized)} modules to {request.scheme} ({request.method}) in "
          f"{result.seconds:.1f} s: {result.bytes_read / 1e9:.3f} GB read, {result.bytes_written / 1e9:.3f} GB "
          f"written in {len(result.shards)} shard(s)")
    if result.unquantized:
        print(f"left unquantized (shape not a multiple of the block): {', '.join(result.unquantized)}")
    print(f"checkpoint: {result.out}")
    return 0
