"""GPT-OSS's native MXFP4 expert layout, and the BF16 layout transformers' `GptOssForCausalLM` loads.

openai/gpt-oss checkpoints (config.json `quantization_config: {"quant_method": "mxfp4", ...}`) store each MoE
layer's fused expert weights as two tensors per projection:

    mlp.experts.gate_up_proj_blocks  uint8 (E, 2I, H/32, 16)   E2M1 codes, element 2i in the low nibble
    mlp.experts.gate_up_proj_scales  uint8 (E, 2I, H/32)       E8M0 (2**(code - 127)) per 32 elements
    mlp.experts.down_proj_blocks     uint8 (E, H, I/32, 16)
    mlp.experts.down_proj_scales     uint8 (E, H, I/32)

i.e. an (out_features, in_features) matrix per expert in the OCP MX layout lowbit's `mx` module reads. The
rows of gate_up are interleaved: row 2j is gate unit j, row 2j+1 up unit j. transformers' BF16 parameters
(`GptOssExperts`) are the transposes, kept interleaved (the forward pass splits `[..., ::2]` / `[..., 1::2]`):

    mlp.experts.gate_up_proj  (E, H, 2I)        mlp.experts.down_proj  (E, I, H)

`dequantize_experts` is transformers' own conversion (`integrations/mxfp4.py::convert_moe_packed_tensors`)
computed with `mx.dequantize`: values are exact in fp32 and rounded once to the output dtype.
"""

from __future__ import annotations

import torch

from lowbit.quant.formats import mx

QUANT_METHOD = "mxfp4"
BLOCKS_SUFFIX, SCALES_SUFFIX = "_blocks", "_scales"


def is_native_mxfp4(config: dict) -> bool:
    return (config.get("quantization_config") or {}).get("quant_method") == QUANT_METHOD


def expert_parameter(name: str) -> str | None:
    """`...experts.gate_up_proj` for `...experts.gate_up_proj_blocks` (or `_scales`), else None."""
    for suffix in (BLOCKS_SUFFIX, SCALES_SUFFIX):
        if name.endswith(suffix) and ".experts." in name:
            return name.removesuffix(suffix)
    return None


def dequantize_experts(blocks: torch.Tensor, scales: torch.Tensor, out_dtype: torch.dtype = torch.bfloat16,
                       *, backend: str = "ref") -> torch.Tensor:
    """(E, N, K/32, 16) uint8 blocks + (E, N, K/32) uint8 scales -> (E, K, N) weights in out_dtype."""
    if blocks.dtype != torch.uint8 or scales.dtype != torch.uint8:
        raise ValueError(f"GPT-OSS MXFP4 blocks and scales must be uint8, got {blocks.dtype} and {scales.dtype}")
    if blocks.ndim != 4 or blocks.shape[:-1] != scales.shape or blocks.shape[-1] * 2 != mx.BLOCK_SIZE:
        raise ValueError(f"GPT-OSS MXFP4 blocks {tuple(blocks.shape)} and scales {tuple(scales.shape)} are not "
                         "(E, N, K/32, 16) and (E, N, K/32)")
    experts, rows, groups, _ = blocks.shape
    packed = blocks.reshape(experts, rows, groups * mx.BLOCK_SIZE // 2)  # (E, N, K/2)
    weight = mx.dequantize(mx.MXWeight(packed, scales), "fp4", out_dtype, backend=backend)  # (E, N, K)
    return weight.transpose(1, 2).contiguous()
