"""`lowbit dequantize`: a compressed-tensors or GPT-OSS MXFP4 checkpoint -> a BF16 checkpoint.

GPT-OSS experts stored per expert (`lowbit quantize method=gptq`) come back in transformers' fused layout.

    lowbit dequantize in=ckpts/qwen3-1.7b-nvfp4 out=ckpts/qwen3-1.7b-nvfp4-bf16
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMAND = "dequantize"
OPTIONS = ("in", "out", "device", "backend", "overwrite", "max_shard_size")


def add_parser(subparsers) -> callable:
    parser = subparsers.add_parser(
        COMMAND, help="write a BF16 checkpoint that plain transformers loads",
        epilog="options: in=<dir> out=<dir> [device=cpu|cuda backend=ref|triton overwrite=true max_shard_size=2GB]")
    parser.add_argument("overrides", nargs="*", help="key=value options")
    return run


def run(args: argparse.Namespace) -> int:
    from lowbit.quant.checkpoint import dequantize_checkpoint
    from lowbit.quant.cli_overrides import as_bool, parse_overrides, require
    from lowbit.quant.safetensors_io import DEFAULT_MAX_SHARD_BYTES, parse_size

    values = parse_overrides(args.overrides, OPTIONS, COMMAND)
    source = require(values, "in", "in=ckpts/qwen3-1.7b-nvfp4")
    out = require(values, "out", "out=ckpts/qwen3-1.7b-nvfp4-bf16")
    result = dequantize_checkpoint(
        source, Path(out), overwrite=as_bool(values.get("overwrite", False), "overwrite"),
        device=str(values.get("device", "cpu")), backend=str(values.get("backend", "ref")),
        max_shard_bytes=parse_size(values.get("max_shard_size", DEFAULT_MAX_SHARD_BYTES)))
    print(f"dequantized {len(result.quantized)} tensors to bfloat16 in {result.seconds:.1f} s "
          f"({result.bytes_written / 1e9:.3f} GB in {len(result.shards)} shard(s))")
    if result.fused_experts:
        print(f"fused the per-expert projections of {len(result.fused_experts)} GPT-OSS experts blocks into "
              "gate_up_proj / down_proj (the layout transformers and vLLM load)")
    print(f"checkpoint: {result.out}")
    return 0
