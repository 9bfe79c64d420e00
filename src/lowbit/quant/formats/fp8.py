"""FP8 E4M3 weights (per-tensor, per-channel, 128x128 blocks) and dynamic per-token activation fake-quant.

Layout (compressed-tensors `float-quantized`, vLLM `CompressedTensorsW8A8Fp8.create_weights`):
    weight        float8_e4m3fn  (N, K)
    weight_scale  float32        tensor: (1,)   channel: (N, 1)   block: (N/128, K/128)
Arithmetic (compressed-tensors `calculate_qparams` + `_quantize`): scale = amax / 448 over the group,
code = e4m3(clamp(x / scale, -448, 448)) with round half to even; dequantized = code * scale.
lowbit floors the scale at 2**-126 (compressed-tensors replaces only an exact 0 by an eps), so an
all-zero group stores scale 2**-126 and codes 0. NaN/Inf weights are rejected with ValueError.
Block granularity needs N and K divisible by 128 (vLLM's block FP8 kernels assume full blocks).
Activations: `fake_quantize_per_token` quantizes each row of x (..., hidden) with its own amax / 448 and
returns the dequantized values in x's dtype, as vLLM's dynamic per-token FP8 activation quantization.
"""

from typing import NamedTuple

import torch

from lowbit.quant.formats import minifloat as mf
from lowbit.quant.formats.backend import (
    check_backend,
    check_finite_amax,
    check_float_tensor,
    check_matrix,
    check_out_dtype,
    check_packed,
)

GRANULARITIES = ("tensor", "channel", "block")
BLOCK_SHAPE = (128, 128)
SCALE_FLOOR = 2.0**-126


class FP8Weight(NamedTuple):
    weight: torch.Tensor  # float8_e4m3fn (N, K)
    weight_scale: torch.Tensor  # float32, shape per granularity (see module docstring)


def _check_weight(weight: torch.Tensor, granularity: str) -> None:
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


def expand_scale(scale: torch.Tensor, shape: torch.Size, granularity: str) -> torch.Tensor:
    """Broadcast a weight_scale to the weight's shape."""
    if granularity == "block":
        return scale.repeat_interleave(BLOCK_SHAPE[0], 0).repeat_interleave(BLOCK_SHAPE[1], 1)
    return scale.expand(shape) if granularity == "channel" else scale.reshape(1, 1).expand(shape)


def quantize_ref(weight: torch.Tensor, granularity: str = "channel") -> FP8Weight:
    _check_weight(weight, granularity)
    amax = group_amax(weight, granularity)
    check_finite_amax(amax, "weight")
    scale = scale_from_amax(amax)
    codes = mf.quantize_e4m3(weight.to(torch.float32) / expand_scale(scale, weight.shape, granularity))
    return FP8Weight(codes.view(torch.float8_e4m3fn), scale)


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


def dequantize_ref(q: FP8Weight, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    check_out_dtype(out_dtype)
    granularity = granularity_of(q)
    values = q.weight.to(torch.float32) * expand_scale(q.weight_scale, q.weight.shape, granularity)
    return values.to(out_dtype)


def fake_quantize_per_token_ref(x: torch.Tensor) -> torch.Tensor:
    """Quantize each row of x (..., hidden) to E4M3 with scale amax_row / 448, return dequantized x.dtype."""
    check_float_tensor(x, "activation")
    rows = x.reshape(-1, x.shape[-1]).to(torch.float32)
    amax = torch.linalg.vector_norm(rows, ord=float("inf"), dim=1, keepdim=True)
    check_finite_amax(amax, "activation")
    scale = scale_from_amax(amax)
    codes = mf.quantize_e4m3(rows / scale)
    return (codes.view(torch.float8_e4m3fn).to(torch.float32) * scale).reshape(x.shape).to(x.dtype)


def quantize(weight: torch.Tensor, granularity: str = "channel", *, backend: str = "ref") -> FP8Weight:
    check_backend(backend, weight)
    if backend == "triton":
        from lowbit.quant.formats import fp8_triton

        q = fp8_triton.quantize_triton(weight, granularity)
        check_finite_amax(q.weight_scale, "weight")  # the kernels mark NaN/Inf groups with a NaN scale
        return q
    return quantize_ref(weight, granularity)


def dequantize(q: FP8Weight, out_dtype: torch.dtype = torch.bfloat16, *, backend: str = "ref") -> torch.Tensor:
    check_backend(backend, q.weight)
    if backend == "triton":
        from lowbit.quant.formats import fp8_triton

        return fp8_triton.dequantize_triton(q, out_dtype)
    return dequantize_ref(q, out_dtype)


def fake_quantize_per_token(x: torch.Tensor, *, backend: str = "ref") -> torch.Tensor:
    check_backend(backend, x)
    if backend == "triton":
        from lowbit.quant.formats import fp8_triton

        out, scale = fp8_triton.fake_quantize_per_token_triton(x)
        check_finite_amax(scale, "activation")
        return out
    return fake_quantize_per_token_ref(x)
