"""MXFP4 and MXFP8 (OCP Microscaling Formats v1.0): 32-element blocks along the last dim, E8M0 scales.

Layout (compressed-tensors `mxfp4-pack-quantized`, vLLM `CompressedTensorsW4A4MxFp4.create_weights`):
    MXFP4 data   uint8          (N, K/2)   E2M1 codes, element 2i in the low nibble (as NVFP4)
    MXFP8 data   float8_e4m3fn  (N, K)
    scale        uint8          (N, K/32)  E8M0 code c means 2**(c - 127)

Quantization of one block: code = rule(amax of the block), element = cast(x * 2**(127 - code)) with round
half to even and saturation at the element max (6 for E2M1, 448 for E4M3).

The shared-exponent rule is an explicit option (`scale_rule`):
    "floor"  OCP MX v1.0: 2**(floor(log2 amax) - emax_elem); values in the top binade saturate.
    "even"   round amax up to the next power of two when its significand is >= 1.75, then as floor.
    "rceil"  2**ceil(log2(amax / elem_max)): Triton `downcast_to_mxfp` default, Blackwell `cvt.rp` scales.
CHECKPOINT_SCALE_RULE = "even". Finding (2026-11-26): vLLM's MXFP4 loader
(`compressed_tensors_w4a4_mxfp4.py`) reads the stored E8M0 codes as they are, so any rule loads; the rule
vLLM itself uses when it quantizes MXFP4 is "even": `vllm/model_executor/layers/quantization/utils/
mxfp4_utils.py::_quant_dequant_mxfp4(x, scale_calculation_mode="even")` and the reference
`tests/quantization/reference_mxfp4.py::qdq_mxfp4_torch` (add 1 << (mbits - 2) to amax's bits, keep the
exponent, subtract 2, clamp to [0, 254]). compressed-tensors' `generate_mx_scales` (utils/mxfp_utils.py)
does the same for MXFP4 and MXFP8 (the 1.75 threshold uses E2M1's mantissa width for both; offset
floor(log2(elem_max)) = 2 or 8), so llm-compressor checkpoints use "even" too.

Special values (OCP leaves the conversion of NaN/Inf implementation-defined; lowbit's choice):
- A block holding any NaN or +-Inf gets scale code 0xFF (E8M0 NaN) and all-zero element codes, so it
  dequantizes to NaN everywhere: a corrupt weight stays visible instead of being saturated to +-max.
- An all-zero block gets scale code 0 (2**-127) under every rule, and zero elements.
- Codes are clamped to [0, 254]; 0xFF is never produced from finite data.
"""

from typing import NamedTuple

import torch

from lowbit.quant.formats import minifloat as mf
from lowbit.quant.formats.backend import (
    check_backend,
    check_float_tensor,
    check_last_dim_divisible,
    check_out_dtype,
    check_packed,
)

BLOCK_SIZE = 32
SCALE_RULES = ("floor", "even", "rceil")
CHECKPOINT_SCALE_RULE = "even"
ELEMENTS = ("fp4", "fp8")
ELEMENT_EMAX = {"fp4": mf.E2M1_EMAX, "fp8": mf.E4M3_EMAX}
ELEMENT_MAX = {"fp4": mf.E2M1_MAX, "fp8": mf.E4M3_MAX}


class MXWeight(NamedTuple):
    data: torch.Tensor  # fp4: uint8 (..., K/2) packed E2M1; fp8: float8_e4m3fn (..., K)
    scale: torch.Tensor  # uint8 (..., K/32) E8M0 codes


def _check_options(element: str, scale_rule: str) -> None:
    if element not in ELEMENTS:
        raise ValueError(f"element must be one of {ELEMENTS} (MXFP4 / MXFP8), got {element!r}")
    if scale_rule not in SCALE_RULES:
        raise ValueError(f"scale_rule must be one of {SCALE_RULES}, got {scale_rule!r}")


def _check_weight(weight: torch.Tensor) -> None:
    check_float_tensor(weight, "weight")
    check_last_dim_divisible(weight, BLOCK_SIZE, "weight")


def quantize_ref(weight: torch.Tensor, element: str = "fp4", scale_rule: str = CHECKPOINT_SCALE_RULE) -> MXWeight:
    """Pure-torch MX quantization of weight (..., K), K % 32 == 0."""
    _check_options(element, scale_rule)
    _check_weight(weight)
    blocks = weight.to(torch.float32).reshape(-1, BLOCK_SIZE)  # (num_blocks, 32)
    finite = torch.isfinite(blocks)
    poisoned = ~finite.all(dim=1)  # (num_blocks,)
    blocks = torch.where(finite, blocks, torch.zeros_like(blocks))
    code = mf.e8m0_code_from_amax(blocks.abs().amax(dim=1), ELEMENT_EMAX[element], ELEMENT_MAX[element], scale_rule)
    first, second = mf.inverse_e8m0_factors(code)
    scaled = (blocks * first[:, None]) * second[:, None]
    elements = mf.quantize_e2m1(scaled) if element == "fp4" else mf.quantize_e4m3(scaled)
    elements = torch.where(poisoned[:, None], torch.zeros_like(elements), elements)
    code = torch.where(poisoned, torch.full_like(code, mf.E8M0_NAN), code).to(torch.uint8)
    scale = code.reshape(*weight.shape[:-1], weight.shape[-1] // BLOCK_SIZE)
    if element == "fp4":
        data = mf.pack_fp4(elements).reshape(*weight.shape[:-1], weight.shape[-1] // 2)
    else:
        data = elements.reshape(weight.shape).view(torch.float8_e4m3fn)
    return MXWeight(data, scale)


def _check_quantized(q: MXWeight, element: str) -> int:
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


def dequantize_ref(q: MXWeight, element: str = "fp4", out_dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Pure-torch inverse of quantize_ref; blocks with scale 0xFF come back as NaN."""
    _check_options(element, CHECKPOINT_SCALE_RULE)
    columns = _check_quantized(q, element)
    check_out_dtype(out_dtype)
    if element == "fp4":
        values = mf.e2m1_decode(mf.unpack_fp4(q.data))
    else:
        values = q.data.to(torch.float32)
    values = values.reshape(-1, BLOCK_SIZE) * mf.e8m0_decode(q.scale.reshape(-1))[:, None]
    return values.reshape(*q.data.shape[:-1], columns).to(out_dtype)


def quantize(
    weight: torch.Tensor, element: str = "fp4", scale_rule: str = CHECKPOINT_SCALE_RULE, *, backend: str = "ref"
) -> MXWeight:
    check_backend(backend, weight)
    if backend == "triton":
        from lowbit.quant.formats import mx_triton

        return mx_triton.quantize_triton(weight, element, scale_rule)
    return quantize_ref(weight, element, scale_rule)


def dequantize(
    q: MXWeight, element: str = "fp4", out_dtype: torch.dtype = torch.bfloat16, *, backend: str = "ref"
) -> torch.Tensor:
    check_backend(backend, q.data)
    if backend == "triton":
        from lowbit.quant.formats import mx_triton

        return mx_triton.dequantize_triton(q, element, out_dtype)
    return dequantize_ref(q, element, out_dtype)
