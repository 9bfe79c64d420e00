"""The integer formats' stored layout, scale dtypes and checks, shared by the torch reference (integer.py) and
the Triton kernels (integer_triton.py); see integer.py for the convention."""

from typing import NamedTuple

import torch

INT8_RANGE = (-128, 127)
INT4_RANGE = (-8, 7)
INT4_OFFSET = 8
INT4_PER_INT32 = 8
INT4_GROUP_SIZES = (32, 128)
SCALE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
CHANNEL_SCALE_DTYPE = torch.float32


class IntWeight(NamedTuple):
    data: torch.Tensor  # int8 (N, K) for INT8; int32 (N, K/8) packed for INT4
    weight_scale: torch.Tensor  # (N, K/G) in group_scale_dtype(weight dtype); float32 (N, 1) for per-channel


def group_scale_dtype(weight_dtype: torch.dtype) -> torch.dtype:
    """The dtype of group-wise scales for weights of `weight_dtype`: its own when 16-bit, else float32."""
    return weight_dtype if weight_dtype in (torch.bfloat16, torch.float16) else torch.float32


def scale_floor(scale_dtype: torch.dtype) -> float:
    """The smallest scale kept: the smallest positive normal of the scale dtype (2**-126, or 2**-14 for fp16)."""
    return torch.finfo(scale_dtype).tiny


def group_size_of(weight: torch.Tensor, group_size: int | None) -> int:
    """The elements per scale along a row: `group_size`, or the whole row (per-channel) for None."""
    if group_size is None:
        return weight.shape[1]
    if not isinstance(group_size, int) or group_size <= 0:
        raise ValueError(f"group_size must be a positive int or None (per-channel), got {group_size!r}")
    if weight.shape[1] % group_size != 0:
        raise ValueError(
            f"weight in_features {weight.shape[1]} is not divisible by group_size {group_size}; "
            "choose a group size that divides it or use per-channel (group_size=None)"
        )
    return group_size


def check_int4_group_size(group_size: int) -> None:
    if group_size not in INT4_GROUP_SIZES:
        raise ValueError(f"INT4 group_size must be one of {INT4_GROUP_SIZES}, got {group_size!r}")


def check_scale(scale: torch.Tensor, rows: int, cols: int) -> None:
    """A weight_scale of one of SCALE_DTYPES whose shape fits a (rows, cols) weight."""
    if not isinstance(scale, torch.Tensor) or scale.dtype not in SCALE_DTYPES:
        got = scale.dtype if isinstance(scale, torch.Tensor) else type(scale).__name__
        raise ValueError(f"weight_scale must be a float32, bfloat16 or float16 tensor as produced by quantize(), "
                         f"got {got}")
    if scale.ndim != 2 or scale.shape[0] != rows or cols % scale.shape[1] != 0:
        raise ValueError(
            f"weight_scale {tuple(scale.shape)} does not fit weight {(rows, cols)}; pass one quantize() result"
        )
