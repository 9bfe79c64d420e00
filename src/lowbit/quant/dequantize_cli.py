"""`lowbit dequantize`: a compressed-tensors or GPT-OSS MXFP4 checkpoint -> a BF16 checkpoint.

GPT-OSS experts stored per expert (`lowbit quantize method=gptq`) come back in transformers' fused layout.

    lowbit dequantize in=ckpts/qwen3-1.7b-nvfp4 out=ckpts/qwen3-1.7b-nvfp4-bf16
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lowbit.command import Command

OPTIONS = {"in": str, "out": str, "device": str, "backend": str, "overwrite": bool, "max_shard_size": str | int}
COMMAND = Command(
    "dequantize", "write a BF16 checkpoint that plain transformers loads", run="lowbit.quant.dequantize_cli:run",
    options="options: in=<dir> out=<dir> [device=cpu|cuda backend=ref|triton overwrite=true max_shard_size=2GB]")


def run(args: argparse.Namespace) -> int:
    from lowbit.overrides import parse_options, require
    from lowbit.quant.checkpoint import dequantize_checkpoint
    from lowbit.quant.safetensors_io import parse_size

    values = parse_options(args.overrides, OPTIONS, COMMAND.name)
    source = require(values, "in", "in=ckpts/qwen3-1.7b-nvfp4")
    out = require(values, "out", "out=ckpts/qwen3-1.7b-nvfp4-bf16")
    options = {key: values[key] for key in ("overwrite", "device", "backend") if key in values}
    if "max_shard_size" in values:
        options["max_shard_bytes"] = parse_size(values["max_shard_size"])
    result = dequantize_checkpoint(source, Path(out), **options)  # options not given: its defaults
    print(f"dequantized {len(result.quantized)} tensors to bfloat16 in {result.seconds:.1f} s "
          f"({result.bytes_written / 1e9:.3f} GB in {len(result.shards)} shard(s))")
    if result.fused_experts:
        print(f"fused the per-expert projections of {len(result.fused_experts)} GPT-OSS experts blocks into "
              "gate_up_proj / down_proj (the layout transformers and vLLM load)")
    print(f"checkpoint: {result.out}")
    return 0
