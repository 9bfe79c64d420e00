"""FP4 dequantize kernels decode every packed byte with every block scale exactly as the references do (on the GPU
with its conversions, on the CPU in Triton's interpreter)."""

import pytest
import torch
from quant_cases import DEVICE, assert_values_equal

from lowbit.quant.formats import mx, nvfp4
from lowbit.quant.formats.mx_layout import MXWeight
from lowbit.quant.formats.nvfp4_layout import NVFP4Weight

ALL_BYTES = torch.arange(256, dtype=torch.int32).to(torch.uint8)


def every_byte_under_every_scale(scale_codes: torch.Tensor, bytes_per_block: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(packed, scales): each scale code heads blocks that together hold all 256 byte values, in shuffled order."""
    blocks_per_scale = 256 // bytes_per_block
    generator = torch.Generator().manual_seed(0)
    packed = torch.stack([ALL_BYTES[torch.randperm(256, generator=generator)] for _ in scale_codes])
    scales = scale_codes.repeat_interleave(blocks_per_scale).reshape(len(scale_codes), blocks_per_scale)
    return packed, scales


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("global_scale", [1.0, 2688 / 3.7, 2688 / 1e-3])
def test_nvfp4_dequantize_decodes_every_byte_under_every_block_scale(global_scale, out_dtype):
    finite_e4m3 = torch.tensor([c for c in range(256) if c & 0x7F != 0x7F], dtype=torch.int32).to(torch.uint8)
    packed, scales = every_byte_under_every_scale(finite_e4m3, 8)
    q = NVFP4Weight(packed.to(DEVICE), scales.view(torch.float8_e4m3fn).to(DEVICE),
                    torch.tensor([global_scale], dtype=torch.float32, device=DEVICE))
    assert_values_equal(nvfp4.dequantize(q, out_dtype, backend="triton"), nvfp4.dequantize(q, out_dtype))


@pytest.mark.parametrize("out_dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_mxfp4_dequantize_decodes_every_byte_under_every_scale(out_dtype):
    packed, scales = every_byte_under_every_scale(torch.arange(256, dtype=torch.int32).to(torch.uint8), 16)
    q = MXWeight(packed.to(DEVICE), scales.to(DEVICE))
    assert_values_equal(mx.dequantize(q, "fp4", out_dtype, backend="triton"), mx.dequantize(q, "fp4", out_dtype))
