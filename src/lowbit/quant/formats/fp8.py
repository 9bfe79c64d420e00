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

from collections.abc import Mapping

import torch

from lowbit.quant.formats import minifloat as mf
from lowbit.quant.formats.backend import check_backend, check_finite_amax, check_float_tensor, check_out_dtype
from lowbit.quant.formats.fp8_layout import (
    BLOCK_SHAPE,
    GRANULARITIES,
    SCALE_FLOOR,
    FP8Weight,
    check_weight,
    granularity_of,
    group_amax,
    scale_from_amax,
)
from lowbit.quant.formats.spec import FormatSpec

__all__ = ["BLOCK_SHAPE", "GRANULARITIES", "SCALE_FLOOR", "FP8Weight", "SPECS", "granularity_of", "group_amax",
           "scale_from_amax", "expand_scale", "quantize_ref", "dequantize_ref", "quantize", "dequantize",
           "fake_quantize_per_token_ref", "fake_quantize_per_token", "fake_quantize_activation_ref"]


def expand_scale(scale: torch.Tensor, shape: torch.Size, granularity: str) -> torch.Tensor:
    """Broadcast a weight_scale to the weight's shape."""
    if granularity == "block":
        return scale.repeat_interleave(BLOCK_SHAPE[0], 0).repeat_interleave(BLOCK_SHAPE[1], 1)
    return scale.expand(shape) if granularity == "channel" else scale.reshape(1, 1).expand(shape)


def quantize_ref(weight: torch.Tensor, granularity: str = "channel") -> FP8Weight:
    check_weight(weight, granularity)
    amax = group_amax(weight, granularity)
    check_finite_amax(amax, "weight")
    scale = scale_from_amax(amax)
    codes = mf.quantize_e4m3(weight.to(torch.float32) / expand_scale(scale, weight.shape, granularity))
    return FP8Weight(codes.view(torch.float8_e4m3fn), scale)


def dequantize_ref(q: FP8Weight, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    check_out_dtype(out_dtype)
    granularity = granularity_of(q)
    values = q.weight.to(torch.float32) * expand_scale(q.weight_scale, q.weight.shape, granularity)
    return mf.to_output_dtype(values, out_dtype)


def fake_quantize_activation_ref(x: torch.Tensor) -> torch.Tensor:
    """Each row of x (..., hidden) to E4M3 with scale amax_row / 448 and back, in x's dtype; a row holding
    NaN/Inf comes out as NaN (the activation fake-quant convention: no synchronizing check)."""
    rows = x.reshape(-1, x.shape[-1]).to(torch.float32)
    bad = ~torch.isfinite(rows).all(dim=1, keepdim=True)
    rows = torch.where(torch.isfinite(rows), rows, torch.zeros_like(rows))
    scale = scale_from_amax(rows.abs().amax(dim=1, keepdim=True))
    codes = mf.quantize_e4m3(rows / scale)
    values = codes.view(torch.float8_e4m3fn).to(torch.float32) * scale
    values = torch.where(bad, torch.full_like(values, float("nan")), values)
    return mf.to_output_dtype(values.reshape(x.shape), x.dtype)


def fake_quantize_per_token_ref(x: torch.Tensor) -> torch.Tensor:
    """fake_quantize_activation_ref that raises ValueError on NaN/Inf instead."""
    check_float_tensor(x, "activation")
    amax = torch.linalg.vector_norm(x.reshape(-1, x.shape[-1]), ord=float("inf"), dim=1, keepdim=True)
    check_finite_amax(amax, "activation")
    return fake_quantize_activation_ref(x)


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


# -- fake quantization and checkpoint tensors (the entry points of the specs) ---------------------------------


def fake_quantize_weight(weight: torch.Tensor, backend: str, global_scale: torch.Tensor | None) -> torch.Tensor:
    """Per-channel FP8 weights, dequantized."""
    return dequantize(quantize(weight, "channel", backend=backend), weight.dtype, backend=backend)


def _encoder(granularity: str):
    def encode(weight, group_size, backend, global_scale):
        q = quantize(weight, granularity, backend=backend)
        return {"weight": q.weight, "weight_scale": q.weight_scale}
    return encode


def decode(tensors: Mapping[str, torch.Tensor], out_dtype: torch.dtype, backend: str) -> torch.Tensor:
    """Any granularity, told apart by weight_scale's shape."""
    scale = tensors["weight_scale"].to(torch.float32)
    if scale.numel() == 1:
        scale = scale.reshape(1)
    return dequantize(FP8Weight(tensors["weight"], scale), out_dtype, backend=backend)


_E4M3_WEIGHTS = dict(element="E4M3", element_bits=8, numeric_type="float", scale="float32", scale_bits=32,
                     checkpoint_format="float-quantized", stored={"weight": torch.float8_e4m3fn}, decode=decode)
SPECS = (
    FormatSpec("fp8", "FP8 E4M3 per output channel", block_size=None, aliases=("fp8_dynamic",),
               labels=("w8a8_fp8",), encode=_encoder("channel"), fake_quantize_weight=fake_quantize_weight,
               activation="FP8 E4M3, dynamic per token, scale amax/448",
               fake_quantize_activation=fake_quantize_activation_ref, row_local=True, **_E4M3_WEIGHTS),
    FormatSpec("fp8-block", "FP8 E4M3 in 128x128 blocks", block_size=BLOCK_SHAPE[1], block_rows=BLOCK_SHAPE[0],
               encode=_encoder("block"), **_E4M3_WEIGHTS),
)
