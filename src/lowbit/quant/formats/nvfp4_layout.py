"""NVFP4's stored layout and its checks, shared by the torch reference (nvfp4.py) and the Triton kernels
(nvfp4_triton.py); see nvfp4.py for the convention."""

from typing import NamedTuple

import torch

from lowbit.quant.formats import minifloat as mf
from lowbit.quant.formats.backend import check_float_tensor, check_last_dim_divisible, check_packed

BLOCK_SIZE = 16
GLOBAL_SCALE_NUMERATOR = mf.E4M3_MAX * mf.E2M1_MAX  # 2688
AMAX_FLOOR = 2.0**-100
ZERO_BLOCK_SCALE = 0.125  # compressed-tensors replaces a zero E4M3 scale with torch.finfo(e4m3fn).eps
ZERO_BLOCK_SCALE_CODE = 0x20  # its E4M3 byte: exponent field 4 (2**(4 - 7)), mantissa 0


class NVFP4Weight(NamedTuple):
    weight_packed: torch.Tensor  # uint8 (..., K/2)
    weight_scale: torch.Tensor  # float8_e4m3fn (..., K/16)
    weight_global_scale: torch.Tensor  # float32 (1,)


def check_global_scale(global_scale: torch.Tensor, device: torch.device, check_value: bool = True) -> torch.Tensor:
    """The global scale as float32 (1,) on `device`; check_value=False skips the (synchronizing) value check."""
    if not isinstance(global_scale, torch.Tensor) or global_scale.numel() != 1:
        raise ValueError("global_scale must be a one-element tensor; compute it with shared_global_scale()")
    global_scale = global_scale.to(device=device, dtype=torch.float32).reshape(1)
    if check_value and (not bool(torch.isfinite(global_scale).all()) or float(global_scale) <= 0):
        raise ValueError(f"global_scale must be finite and positive, got {float(global_scale)}")
    return global_scale


def check_weight(weight: torch.Tensor) -> None:
    check_float_tensor(weight, "weight")
    check_last_dim_divisible(weight, BLOCK_SIZE, "weight")


def check_quantized(q: NVFP4Weight) -> None:
    check_packed(q.weight_packed, torch.uint8, "weight_packed")
    check_packed(q.weight_scale, torch.float8_e4m3fn, "weight_scale")
    if q.weight_packed.shape[-1] * 2 != q.weight_scale.shape[-1] * BLOCK_SIZE:
        raise ValueError(
            f"weight_packed {tuple(q.weight_packed.shape)} and weight_scale {tuple(q.weight_scale.shape)} "
            "do not describe the same weight; pass the tensors of one quantize() result"
        )
