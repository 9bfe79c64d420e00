"""NVFP4 weights in the compressed-tensors `nvfp4-pack-quantized` layout that vLLM loads.

Layout (vLLM `CompressedTensorsW4A4Fp4.create_weights`, weight shape (N, K)):
    weight_packed        uint8          (N, K/2)   E2M1 codes, element 2i in the low nibble, 2i+1 in the high
    weight_scale         float8_e4m3fn  (N, K/16)  one scale per 16 consecutive elements of a row
    weight_global_scale  float32        (1,)       a divisor: dequantized = e2m1 * weight_scale / global

Arithmetic, matched to compressed-tensors (`utils/helpers.py::generate_gparam`, `calculate_qparams`;
`lifecycle/forward.py::_quantize`/`_dequantize`), all in fp32 with IEEE round-to-nearest division:
    global      = (448 * 6) / amax(|W|)                          E4M3 max * E2M1 max over the tensor's amax
    block_scale = e4m3( min((block_amax / 6) * global, 448) )    round half to even; a result of 0 becomes
                                                                 0.125, compressed-tensors' E4M3 "eps"
    effective   = block_scale / global
    code        = e2m1( clamp(x / effective, -6, 6) )            round half to even, sign kept
    dequantized = e2m1_value * effective
Where lowbit differs, deliberately:
- amax is floored at 2**-100 (compressed-tensors: fp32 tiny, 2**-126) so that `global` and `effective`
  stay finite normal fp32 numbers; an all-zero tensor therefore gets global = 2688 * 2**100.
- E2M1 rounding is exact round-half-even on the fp32 quotient. compressed-tensors' `cast_to_fp4` first
  rounds the quotient to bfloat16, which differs only for quotients within half a bf16 ulp of a midpoint.
- compressed-tensors computes `block_amax / 6` in the dtype of the observed min/max, so with bf16
  observers it is rounded to bf16 before the multiply. lowbit computes every step in fp32.
- NaN/Inf weights are rejected with ValueError (the global scale's amax detects them).
vLLM fuses q/k/v and gate/up into one matrix with one global scale: use `shared_global_scale` for them.
"""

from collections.abc import Mapping

import torch

from lowbit.quant.formats import minifloat as mf
from lowbit.quant.formats.backend import check_backend, check_finite_amax, check_float_tensor, check_out_dtype
from lowbit.quant.formats.nvfp4_layout import (
    AMAX_FLOOR,
    BLOCK_SIZE,
    GLOBAL_SCALE_NUMERATOR,
    ZERO_BLOCK_SCALE,
    NVFP4Weight,
    check_global_scale,
    check_quantized,
    check_weight,
)
from lowbit.quant.formats.spec import FormatSpec

__all__ = ["AMAX_FLOOR", "BLOCK_SIZE", "GLOBAL_SCALE_NUMERATOR", "ZERO_BLOCK_SCALE", "NVFP4Weight", "SPECS",
           "shared_global_scale", "quantize_ref", "dequantize_ref", "quantize", "dequantize",
           "activation_global_scale", "fake_quantize_activation_ref"]


def _amax(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(x, ord=float("inf")).to(torch.float32)


def shared_global_scale(*weights: torch.Tensor) -> torch.Tensor:
    """One float32 (1,) global scale 2688 / max(amax) for tensors vLLM fuses (q/k/v, gate/up), or one tensor."""
    if not weights:
        raise ValueError("shared_global_scale needs at least one weight tensor")
    for i, weight in enumerate(weights):
        check_float_tensor(weight, f"weights[{i}]")
    amax = torch.stack([_amax(w).to(weights[0].device) for w in weights]).max()
    check_finite_amax(amax, "a weight")
    amax = torch.clamp(amax, min=AMAX_FLOOR)
    return (torch.tensor(GLOBAL_SCALE_NUMERATOR, dtype=torch.float32, device=amax.device) / amax).reshape(1)


def quantize_ref(weight: torch.Tensor, global_scale: torch.Tensor) -> NVFP4Weight:
    """Pure-torch NVFP4 quantization of a finite weight (..., K), K % 16 == 0, with a given global scale."""
    check_weight(weight)
    global_scale = check_global_scale(global_scale, weight.device)
    blocks = weight.to(torch.float32).reshape(-1, BLOCK_SIZE)  # (num_blocks, 16)
    block_amax = blocks.abs().amax(dim=1)
    unrounded_scale = mf.true_divide(block_amax, mf.E2M1_MAX) * global_scale
    block_scale = mf.round_magnitude(unrounded_scale, mf.E4M3_MBITS, mf.E4M3_EMIN, mf.E4M3_MAX)
    block_scale = torch.where(block_scale == 0, torch.full_like(block_scale, ZERO_BLOCK_SCALE), block_scale)
    effective = block_scale / global_scale
    codes = mf.quantize_e2m1(blocks / effective[:, None])  # (num_blocks, 16)
    packed = mf.pack_fp4(codes).reshape(*weight.shape[:-1], weight.shape[-1] // 2)
    scale_bytes = mf.e4m3_code(block_scale).to(torch.uint8)
    scale = scale_bytes.view(torch.float8_e4m3fn).reshape(*weight.shape[:-1], weight.shape[-1] // BLOCK_SIZE)
    return NVFP4Weight(packed, scale, global_scale)


def dequantize_ref(q: NVFP4Weight, out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Pure-torch inverse: (..., K/2) packed codes -> (..., K) values in out_dtype."""
    check_quantized(q)
    check_out_dtype(out_dtype)
    global_scale = check_global_scale(q.weight_global_scale, q.weight_packed.device)
    codes = mf.unpack_fp4(q.weight_packed).reshape(-1, BLOCK_SIZE)
    block_scale = q.weight_scale.reshape(-1).to(torch.float32)
    effective = block_scale / global_scale
    values = mf.e2m1_decode(codes) * effective[:, None]
    out_shape = (*q.weight_packed.shape[:-1], q.weight_packed.shape[-1] * 2)
    return mf.to_output_dtype(values.reshape(out_shape), out_dtype)


def quantize(weight: torch.Tensor, global_scale: torch.Tensor | None = None, *, backend: str = "ref") -> NVFP4Weight:
    """NVFP4-quantize `weight`; without `global_scale` one is computed from this tensor alone.

    A given global scale (e.g. shared by q/k/v) skips the amax pass, so NaN/Inf are then checked here.
    On the Triton backend the device work is one amax launch (none with a given scale), the one-program divisor
    table and the quantize launch, and the NaN/Inf and global-scale checks read their results once, after them
    (nvfp4_triton.py).
    """
    check_backend(backend, weight)
    check_weight(weight)
    if backend == "triton":
        from lowbit.quant.formats import nvfp4_triton

        q, finite_word = nvfp4_triton.quantize_unchecked_triton(weight, global_scale)
        checked = torch.cat((finite_word.view(torch.float32), q.weight_global_scale)).cpu()  # the one wait
        check_finite_amax(checked[:1], "a weight" if global_scale is None else "weight")
        if global_scale is not None:
            check_global_scale(checked[1:], checked.device)
        return q
    if global_scale is None:
        global_scale = shared_global_scale(weight)
    else:
        check_finite_amax(_amax(weight), "weight")
    return quantize_ref(weight, global_scale)


def dequantize(q: NVFP4Weight, out_dtype: torch.dtype = torch.bfloat16, *, backend: str = "ref") -> torch.Tensor:
    check_backend(backend, q.weight_packed)
    if backend == "triton":
        from lowbit.quant.formats import nvfp4_triton

        check_global_scale(q.weight_global_scale, q.weight_packed.device)
        return nvfp4_triton.dequantize_triton(q, out_dtype)
    return dequantize_ref(q, out_dtype)


# -- fake quantization and checkpoint tensors (the entry points of the spec) ----------------------------------


def activation_global_scale(amax: torch.Tensor) -> torch.Tensor:
    """float32 (1,) global scale 2688 / amax with AMAX_FLOOR; NaN/Inf amax give a NaN/0 scale."""
    amax = torch.clamp(amax.to(torch.float32).reshape(1), min=AMAX_FLOOR)
    return torch.full_like(amax, GLOBAL_SCALE_NUMERATOR) / amax


def fake_quantize_activation_ref(x: torch.Tensor) -> torch.Tensor:
    """x quantized with a dynamic global scale over the whole tensor and dequantized; NaN/Inf give all NaN."""
    amax = torch.linalg.vector_norm(x, ord=float("inf"))
    if not bool(torch.isfinite(amax)):
        return torch.full_like(x, float("nan"))
    return dequantize_ref(quantize_ref(x, activation_global_scale(amax)), x.dtype)


def fake_quantize_weight(weight: torch.Tensor, backend: str, global_scale: torch.Tensor | None) -> torch.Tensor:
    return dequantize(quantize(weight, global_scale, backend=backend), weight.dtype, backend=backend)


def encode(weight: torch.Tensor, group_size: int | None, backend: str,
           global_scale: torch.Tensor | None) -> dict[str, torch.Tensor]:
    q = quantize(weight, global_scale, backend=backend)
    return {"weight_packed": q.weight_packed, "weight_scale": q.weight_scale,
            "weight_global_scale": q.weight_global_scale}


def decode(tensors: Mapping[str, torch.Tensor], out_dtype: torch.dtype, backend: str) -> torch.Tensor:
    q = NVFP4Weight(tensors["weight_packed"], tensors["weight_scale"], tensors["weight_global_scale"])
    return dequantize(q, out_dtype, backend=backend)


SPECS = (
    FormatSpec(
        "nvfp4", "NVFP4 16-blocks, E4M3 scales, global scale shared by q/k/v and by gate/up",
        element="E2M1", element_bits=4, numeric_type="float", scale="E4M3", scale_bits=8, block_size=BLOCK_SIZE,
        pack=2, shared_global_scale=shared_global_scale, labels=("nvfp4a16",), checkpoint_format="nvfp4-pack-quantized",
        checkpoint_scale_dtype="torch.float8_e4m3fn",
        stored={"weight_packed": torch.uint8, "weight_global_scale": None}, encode=encode, decode=decode,
        fake_quantize_weight=fake_quantize_weight,
        activation="NVFP4 E2M1, dynamic 16-blocks with E4M3 scales, dynamic per-tensor global scale 2688/amax",
        fake_quantize_activation=fake_quantize_activation_ref,
    ),
)
