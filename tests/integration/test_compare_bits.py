"""Bits per weight for the report: from a checkpoint's quantization metadata, else from the precision label."""

from __future__ import annotations

import pytest

from lowbit.report.bits import bits_per_weight


@pytest.mark.parametrize(("label", "bits"), [
    ("bf16", 16), ("FP16", 16), ("fp8", 8 + 32 / 4096), ("int8", 8 + 32 / 4096), ("W8A8", 8 + 32 / 4096),
    ("mxfp8", 8.25), ("NVFP4", 4.5), ("mxfp4", 4.25), ("int4-g128", 4.125), ("gptq", 4.125), ("w4a8", 4.125),
])
def test_precision_labels(label, bits):
    result = bits_per_weight(label, None)
    assert result.bits == pytest.approx(bits, abs=1e-4) and result.source == "precision label"


def _compressed_tensors(weights: dict, checkpoint_format: str) -> dict:
    return {"quant_method": "compressed-tensors", "format": checkpoint_format,
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": weights}}}


@pytest.mark.parametrize(("config", "bits"), [
    # NVFP4: E2M1 elements, an E4M3 scale per 16
    (_compressed_tensors({"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16},
                         "nvfp4-pack-quantized"), 4.5),
    # MXFP4: an E8M0 scale per 32
    (_compressed_tensors({"num_bits": 4, "type": "float", "strategy": "group", "group_size": 32},
                         "mxfp4-pack-quantized"), 4.25),
    # INT4 g128 with 16-bit scales, and with an explicit fp32 scale dtype
    (_compressed_tensors({"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128}, "pack-quantized"),
     4.125),
    (_compressed_tensors({"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128,
                          "scale_dtype": "torch.float32"}, "pack-quantized"), 4.25),
    # asymmetric INT4 g128 also stores a 4-bit zero point per group
    (_compressed_tensors({"num_bits": 4, "type": "int", "strategy": "group", "group_size": 128, "symmetric": False},
                         "pack-quantized"), 4 + 20 / 128),
    # FP8 per channel (rows of 4096 assumed), per tensor, and 128x128 blocks
    (_compressed_tensors({"num_bits": 8, "type": "float", "strategy": "channel"}, "float-quantized"), 8 + 32 / 4096),
    (_compressed_tensors({"num_bits": 8, "type": "float", "strategy": "tensor"}, "float-quantized"), 8.0),
    (_compressed_tensors({"num_bits": 8, "type": "float", "strategy": "block", "block_structure": [128, 128]},
                         "float-quantized"), 8 + 32 / 16384),
    # native configs: GPT-OSS MXFP4 and fine-grained FP8
    ({"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn"]}, 4.25),
    ({"quant_method": "fp8", "weight_block_size": [128, 128]}, 8 + 32 / 16384),
])
def test_quantization_metadata_wins_over_the_label(config, bits):
    result = bits_per_weight("some-label", config)
    assert result.bits == pytest.approx(bits, abs=1e-4) and result.source == "quantization_config"


def test_unknown_precisions_are_not_guessed():
    assert bits_per_weight("w3-experimental", None).bits is None
    mixed = {"quant_method": "compressed-tensors", "format": "mixed-precision", "config_groups": {
        "a": {"weights": {"num_bits": 4, "strategy": "group", "group_size": 128}},
        "b": {"weights": {"num_bits": 8, "strategy": "channel"}}}}
    assert bits_per_weight("w3-experimental", mixed).bits is None  # mixed schemes: no single number
    assert bits_per_weight("nvfp4", {"quant_method": "something-new"}).bits == 4.5  # falls back to the label


@pytest.mark.parametrize(("scheme", "group_size", "scale_dtypes", "bits"), [
    ("w4a16", None, {"bfloat16"}, 4.125),  # g128, scales in the model's bfloat16
    ("w4a16", 32, {"float16"}, 4.5),
    ("w4a16", None, {"float32"}, 4.25),  # a float32 source model keeps float32 scales
    ("int8", 128, {"bfloat16"}, 8.125),
    ("int8", None, {"float32"}, 8 + 32 / 4096),  # per-channel scales stay float32
    ("nvfp4", None, {"float8_e4m3fn"}, 4.5),
    ("w4a16", None, {"bfloat16", "float32"}, None),  # scales of two widths: no single number
])
def test_lowbit_checkpoint_metadata_counts_the_scales_as_written(scheme, group_size, scale_dtypes, bits):
    import torch

    from lowbit.quant.checkpoint import QuantizeRequest
    from lowbit.quant.quantize_plan import quantization_config

    request = QuantizeRequest(model="source", out="out", scheme=scheme, group_size=group_size)
    config = quantization_config(request, [], "source", {getattr(torch, d) for d in scale_dtypes})
    result = bits_per_weight(f"{scheme}-rtn", config)
    if bits is None:  # the metadata gives no number (and this label is not in the table)
        assert result.bits is None and result.source != "quantization_config"
    else:
        assert result.bits == pytest.approx(bits, abs=1e-4) and result.source == "quantization_config"
