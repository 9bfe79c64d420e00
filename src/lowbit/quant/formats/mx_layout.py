"""MX's stored layout, options and checks, shared by the torch reference (mx.py) and the Triton kernels
(mx_triton.py); see mx.py for the convention."""

from typing import NamedTuple

import torch

from lowbit.quant.formats import minifloat as mf
from lowbit.quant.formats.backend import check_float_tensor, check_last_dim_divisible, check_packed

BLOCK_SIZE = 32
SCALE_RULES = ("floor", "even", "rceil")
CHECKPOINT_SCALE_RULE = "even"
ELEMENTS = ("fp4", "fp8")
ELEMENT_EMAX = {"fp4": mf.E2M1_EMAX, "fp8": mf.E4M3_EMAX}
ELEMENT_MAX = {"fp4": mf.E2M1_MAX, "fp8": mf.E4M3_MAX}


class MXWeight(NamedTuple):
    data: torch.Tensor  # fp4: uint8 (..., K/2) packed E2M1; fp8: float8_e4m3fn (..., K)
    scale: torch.Tensor  # uint8 (..., K/32) E8M0 codes


def check_options(element: str, scale_rule: str) -> None:
    if element not in ELEMENTS:
        raise ValueError(f"element must be one of {ELEMENTS} (MXFP4 / MXFP8), got {element!r}")
    if scale_rule not in SCALE_RULES:
        raise ValueError(f"scale_rule must be one of {SCALE_RULES}, got {scale_rule!r}")


def check_weight(weight: torch.Tensor) -> None:
    check_float_tensor(weight, "weight")
    check_last_dim_divisible(weight, BLOCK_SIZE, "weight")


def check_quantized(q: MXWeight, element: str) -> int:
    """Validate a quantized pair; return the number of weight elements per row."""
    check_packed(q.data, torch.uint8 if element == "fp4" else torch.float8_e4m3fn, "data")
    check_packed(q.scale, torch.uint8, "scale")
    columns = q.data.shape[-1] * (2 if element == "fp4" else 1)
    if columns != q.scale.shape[-1] * BLOCK_SIZE:
        raise ValueError(
            f"data {tuple(q.data.shape)} and scale {tuple(q.scale.shape)} do not describe the same {element} "
            "weight; pass the tensors of one quantize() result with the same element"
        )
    return columns
