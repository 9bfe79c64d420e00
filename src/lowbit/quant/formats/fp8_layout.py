"""FP8's stored layout, scale arithmetic and checks, shared by the torch reference (fp8.py) and the Triton
kernels (fp8_triton.py); see fp8.py for the convention."""

from typing import NamedTuple

import torch

from lowbit.quant.formats import minifloat as mf
from lowbit.quant.formats.backend import check_matrix, check_packed

GRANULARITIES = ("tensor", "channel", "block")
BLOCK_SHAPE = (128, 128)
SCALE_FLOOR = 2.0**-126


class FP8Weight(NamedTuple):
    weight: torch.Tensor  # float8_e4m3fn (N, K)
    weight_scale: torch.Tensor  # float32, shape per granularity (see fp8.py)


def check_weight(weight: torch.Tensor, granularity: str) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
    check_matrix(weight, "weight")
    if granularity == "block" and (weight.shape[0] % BLOCK_SHAPE[0] or weight.shape[1] % BLOCK_SHAPE[1]):
        raise ValueError(
            f"weight shape {tuple(weight.shape)} is not a multiple of the {BLOCK_SHAPE} block; "
            "use granularity='channel' or pad the weight"
        )


def group_amax(weight: torch.Tensor, granularity: str) -> torch.Tensor:
    """fp32 amax per scale group, shaped like weight_scale (max |x| is exact in the weight's own dtype)."""
    if granularity == "tensor":
        amax = torch.linalg.vector_norm(weight, ord=float("inf")).reshape(1)
    elif granularity == "channel":
        amax = torch.linalg.vector_norm(weight, ord=float("inf"), dim=1, keepdim=True)
    else:
        rows, cols = weight.shape[0] // BLOCK_SHAPE[0], weight.shape[1] // BLOCK_SHAPE[1]
        tiles = weight.reshape(rows, BLOCK_SHAPE[0], cols, BLOCK_SHAPE[1])
        amax = torch.linalg.vector_norm(tiles, ord=float("inf"), dim=(1, 3))
    return amax.to(torch.float32)


def scale_from_amax(amax: torch.Tensor) -> torch.Tensor:
    return torch.clamp(mf.true_divide(amax, mf.E4M3_MAX), min=SCALE_FLOOR)


def granularity_of(q: FP8Weight) -> str:
    """Infer the granularity from weight_scale's shape."""
    check_packed(q.weight, torch.float8_e4m3fn, "weight")
    check_packed(q.weight_scale, torch.float32, "weight_scale")
    rows, cols = q.weight.shape
    shape = tuple(q.weight_scale.shape)
    if shape in ((1,), (1, 1)) and q.weight_scale.numel() == 1 and (rows, cols) != (1, 1):
        return "tensor"
    if shape == (rows, 1):
        return "channel"
    if shape == (rows // BLOCK_SHAPE[0], cols // BLOCK_SHAPE[1]):
        return "block"
    raise ValueError(f"weight_scale shape {shape} fits no FP8 granularity for weight {(rows, cols)}")
